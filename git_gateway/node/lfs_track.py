"""Large files of a job's results: new/changed files over the LFS threshold get a
``.gitattributes`` line for their exact path so git-lfs stores them (standard library only)."""
from __future__ import annotations

import logging
import os
import re
import stat

from .gitops import run_git

log = logging.getLogger(__name__)

DEFAULT_LFS_THRESHOLD = 1 << 20
_GLOB_SPECIALS = re.compile(r"([\\*?\[\]])")


def _attr_pattern(path: str) -> str:
    """A .gitattributes pattern matching exactly ``path`` (relative to the repository root).

    Glob characters are backslash-escaped and the pattern is anchored with a leading '/'; a
    pattern with whitespace, quotes, control or non-ASCII characters is written C-quoted
    (git >= 2.11 unquotes attribute patterns), non-ASCII bytes as octal escapes.
    """
    pat = "/" + _GLOB_SPECIALS.sub(r"\\\1", path)
    raw = pat.encode("utf-8", "surrogateescape")
    if not any(b <= 32 or b >= 127 or b == 34 for b in raw):
        return pat
    out = ['"']
    for b in raw:
        if b == 92:
            out.append("\\\\")
        elif b == 34:
            out.append('\\"')
        elif b < 32 or b >= 127:
            out.append("\\%03o" % b)
        else:
            out.append(chr(b))
    out.append('"')
    return "".join(out)


def _lfs_available(cwd: str, env: dict[str, str]) -> bool:
    return run_git(["lfs", "version"], cwd, env, check=False).returncode == 0


def _changed_files(cwd: str, env: dict[str, str]) -> list[str]:
    r = run_git(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
                 "--ignore-submodules=all"], cwd, env)
    paths = []
    for rec in r.stdout.split(b"\0"):
        if len(rec) < 4:
            continue
        xy, p = rec[:2].decode(), rec[3:]
        if "D" in xy:
            continue
        paths.append(os.fsdecode(p))
    return paths


def _lfs_candidates(cwd: str, env: dict[str, str], threshold: int) -> list[str]:
    big = []
    for p in _changed_files(cwd, env):
        try:
            st = os.lstat(os.path.join(cwd, p))
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size > threshold:
            big.append(p)
    if not big:
        return []
    tracked = _lfs_tracked(cwd, env, big)
    return [p for p in big if p not in tracked]


def _lfs_tracked(cwd: str, env: dict[str, str], paths: list[str]) -> set[str]:
    data = b"".join(os.fsencode(p) + b"\0" for p in paths)
    r = run_git(["check-attr", "-z", "--stdin", "filter"], cwd, env, input=data)
    fields = r.stdout.split(b"\0")
    out = set()
    for i in range(0, len(fields) - 2, 3):
        if fields[i + 2] == b"lfs":
            out.add(os.fsdecode(fields[i]))
    return out


def track_large_files(cwd: str, env: dict[str, str], threshold: int) -> list[str]:
    """Add exact-path LFS lines to .gitattributes for new/changed files over ``threshold``."""
    big = _lfs_candidates(cwd, env, threshold)
    if not big:
        return []
    attrs = os.path.join(cwd, ".gitattributes")
    existing = b""
    if os.path.lexists(attrs):
        if not os.path.isfile(attrs) or os.path.islink(attrs):
            log.warning(".gitattributes is not a regular file; large files stay in plain git")
            return []
        with open(attrs, "rb") as f:
            existing = f.read()
    lines = [f"{_attr_pattern(p)} filter=lfs diff=lfs merge=lfs -text\n".encode("utf-8",
                                                                             "surrogateescape")
             for p in big]
    with open(attrs, "ab") as f:
        if existing and not existing.endswith(b"\n"):
            f.write(b"\n")
        f.write(b"# slipway: job results over the LFS threshold\n")
        f.writelines(lines)
    tracked = _lfs_tracked(cwd, env, big)
    missed = [p for p in big if p not in tracked]
    if missed:
        log.warning("could not express LFS patterns for %d path(s); they stay in plain git: %r",
                    len(missed), missed[:5])
    return [p for p in big if p in tracked]
