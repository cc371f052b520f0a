"""A version's list of files (an upload's manifest, a job output's tree): checked whole before
anything is created, so bad input leaves nothing behind. Each entry is named in the error."""
from __future__ import annotations

import hashlib
import json

from ..teams.access import OpError
from .names import check_rel_path, check_sha256

MAX_UPLOAD_FILES = 100_000
MAX_FILE_SIZE = 2**42
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _entry_error(i: int, entry, why: str) -> OpError:
    path = entry.get("path") if isinstance(entry, dict) else None
    what = f"file {i + 1}" + (f" ({str(path)[:120]!r})" if isinstance(path, str) else "")
    return OpError(f"{what}: {why}")


def check_tree(paths: list[str]) -> None:
    """No duplicate path, and no path that is both a file and a directory of another."""
    files = set()
    for p in paths:
        if p in files:
            raise OpError(f"file {p[:200]!r} is listed twice")
        files.add(p)
    for p in paths:
        parts = p.split("/")
        for k in range(1, len(parts)):
            prefix = "/".join(parts[:k])
            if prefix in files:
                raise OpError(f"{prefix[:200]!r} is a file and also the directory of {p[:200]!r}")


def check_manifest(files, *, max_files: int = MAX_UPLOAD_FILES) -> list[dict]:
    """The manifest [{path, size, sha256}] checked and sorted by path. Refused (400) when
    there are 0 or more than ``max_files`` entries, or any entry is wrong."""
    if not isinstance(files, list):
        raise OpError("files must be a list of {path, size, sha256}")
    if not files:
        raise OpError("an upload needs at least one file")
    if len(files) > max_files:
        raise OpError(f"an upload holds at most {max_files} files, not {len(files)}; split it "
                      "into several versions or pack small files into archives")
    out, sizes = [], {}
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            raise _entry_error(i, entry, "must be an object {path, size, sha256}")
        extra = set(entry) - {"path", "size", "sha256"}
        if extra:
            raise _entry_error(i, entry, f"unknown field(s) {', '.join(sorted(map(str, extra)))}")
        try:
            path = check_rel_path(entry.get("path"))
            sha = check_sha256(entry.get("sha256"))
        except OpError as exc:
            raise _entry_error(i, entry, str(exc)) from None
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
            raise _entry_error(i, entry, f"size must be a whole number of bytes from 0 to "
                                         f"{MAX_FILE_SIZE}, not {str(size)[:40]!r}")
        if (size == 0) != (sha == EMPTY_SHA256):
            raise _entry_error(i, entry, "size and sha256 disagree (an empty file has sha256 "
                                         f"{EMPTY_SHA256[:12]}… and only an empty file has it)")
        if sizes.setdefault(sha, size) != size:
            raise _entry_error(i, entry, f"sha256 {sha[:12]}… is listed with two sizes "
                                         f"({sizes[sha]} and {size})")
        out.append({"path": path, "size": size, "sha256": sha})
    out.sort(key=lambda e: e["path"])
    check_tree([e["path"] for e in out])
    return out


def dumps(manifest: list[dict]) -> str:
    """The canonical text of a checked manifest (equal manifests, equal text)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))


def objects(manifest: list[dict]) -> dict[str, int]:
    """sha256 -> size of each distinct content (identical files count once)."""
    return {e["sha256"]: e["size"] for e in manifest}
