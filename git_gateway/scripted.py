"""A one-file commit written straight into a bare repository (``slipway submit``).

A script handed to Slipway outside git (the sbatch-style ``slipway submit``) becomes
``slipway-entrypoint.sh`` (mode 100755) in a fresh commit (no parent) on a new numbered branch
``<prefix><N>`` — with git's plumbing only (``hash-object -w --stdin``, ``mktree``,
``commit-tree``, ``update-ref`` against the all-zero old value), so no work tree and no hook is
involved and two concurrent creators of the same branch cannot both win: the loser takes the
next number.

Plain values in (the bare repository's path, the script's bytes, who and when), the branch and
the commit's sha out. Nothing here knows Slipway's database.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .repos import ENTRYPOINT, PRIVATE_UMASK

#: how often ``create_numbered_branch`` takes the next number when another creator won
MAX_TRIES = 20
_BAD_IDENT = re.compile(r"[<>\n\r\x00]")


class ScriptedCommitError(RuntimeError):
    """git refused to write the commit or the branch (message: git's own words)."""


@dataclass(frozen=True)
class Person:
    """An author or committer: git refuses ``<``, ``>`` and newlines in either part."""

    name: str
    email: str

    def env(self, role: str, when: datetime) -> dict[str, str]:
        name = _BAD_IDENT.sub("", self.name).strip() or "unknown"
        email = _BAD_IDENT.sub("", self.email).strip() or "unknown@invalid"
        return {f"GIT_{role}_NAME": name, f"GIT_{role}_EMAIL": email,
                f"GIT_{role}_DATE": _git_date(when)}


def _git_date(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return f"@{int(when.timestamp())} +0000"


def _git(git_dir: Path, args: list[str], *, stdin: bytes | None = None,
         env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    full_env.update(env or {})
    r = subprocess.run(["git", "--git-dir", str(git_dir), *args], input=stdin, env=full_env,
                       capture_output=True, umask=PRIVATE_UMASK)
    if check and r.returncode != 0:
        raise ScriptedCommitError(f"git {args[0]} failed: "
                                  f"{r.stderr.decode(errors='replace').strip()[:500]}")
    return r


def _out(r: subprocess.CompletedProcess) -> str:
    return r.stdout.decode().strip()


def write_commit(git_dir: str | os.PathLike, script: bytes, *, author: Person,
                 committer: Person, message: str, when: datetime,
                 file_name: str = ENTRYPOINT) -> str:
    """Write ``script`` as ``file_name`` (mode 100755) in a parentless commit; return its sha.
    The objects are written; no ref points at them yet (``create_branch`` does that)."""
    path = Path(git_dir)
    if not (path / "HEAD").is_file():
        raise ScriptedCommitError(f"there is no repository at {path}")
    if "/" in file_name or "\t" in file_name or "\n" in file_name or not file_name:
        raise ValueError(f"not a plain file name: {file_name!r}")
    blob = _out(_git(path, ["hash-object", "-w", "--stdin"], stdin=script))
    tree = _out(_git(path, ["mktree"], stdin=f"100755 blob {blob}\t{file_name}\n".encode()))
    text = message if message.endswith("\n") else message + "\n"
    env = {**author.env("AUTHOR", when), **committer.env("COMMITTER", when)}
    return _out(_git(path, ["commit-tree", tree], stdin=text.encode(), env=env))


def branch_numbers(git_dir: str | os.PathLike, prefix: str) -> list[int]:
    """The numbers N of the existing branches ``<prefix>N``, ascending."""
    r = _git(Path(git_dir), ["for-each-ref", "--format=%(refname)", f"refs/heads/{prefix}"])
    numbers = []
    for ref in r.stdout.decode().split():
        tail = ref[len(f"refs/heads/{prefix}"):]
        if tail.isdigit() and len(tail) <= 12:
            numbers.append(int(tail))
    return sorted(numbers)


def create_branch(git_dir: str | os.PathLike, branch: str, sha: str) -> bool:
    """Point the NEW branch ``branch`` at ``sha``; False when the branch exists already (another
    creator won: git's ``update-ref`` checks the all-zero old value under the ref's lock)."""
    path = Path(git_dir)
    ref = f"refs/heads/{branch}"
    if _git(path, ["check-ref-format", ref], check=False).returncode != 0:
        raise ValueError(f"not a valid branch name: {branch!r}")
    r = _git(path, ["update-ref", "-m", "slipway submit", ref, sha, "0" * len(sha)], check=False)
    if r.returncode == 0:
        return True
    if _git(path, ["rev-parse", "--verify", "--quiet", ref], check=False).returncode == 0:
        return False
    raise ScriptedCommitError(f"git update-ref {ref} failed: "
                              f"{r.stderr.decode(errors='replace').strip()[:500]}")


def create_numbered_branch(git_dir: str | os.PathLike, prefix: str, sha: str, *,
                           floor: int = 0) -> tuple[str, int]:
    """Point a new branch ``<prefix>N`` at ``sha``, N the next free number above both the
    existing branches and ``floor`` (numbers used before, e.g. by jobs whose branch is gone);
    returns (branch, N). A concurrent creator taking N makes this try N+1."""
    n = max([floor, *branch_numbers(git_dir, prefix)]) + 1
    for _ in range(MAX_TRIES):
        branch = f"{prefix}{n}"
        if create_branch(git_dir, branch, sha):
            return branch, n
        n = max([n, *branch_numbers(git_dir, prefix)]) + 1
    raise ScriptedCommitError(f"could not create a new {prefix}N branch after {MAX_TRIES} tries")


def delete_branch(git_dir: str | os.PathLike, branch: str, sha: str) -> bool:
    """Delete ``branch`` only while it still points at ``sha`` (undo of ``create_branch``);
    True when deleted."""
    r = _git(Path(git_dir), ["update-ref", "-d", f"refs/heads/{branch}", sha], check=False)
    return r.returncode == 0
