"""Read one path of a commit straight from loose objects, without starting ``git``.

Why: the pre-receive check "is ``slipway-entrypoint.sh`` a regular file at the pushed commit"
ran ``git ls-tree`` (~2.5 ms from the server: a process start) on every push. A push's new
objects arrive loose in its quarantine (``receive.unpackLimit`` at git's default, see
``http.BACKEND_CONFIG``), so the commit and its root tree are two small zlib files: reading them
here costs ~0.1 ms. Whatever is not a loose object here (a tree packed by an earlier push's
``gc``, a branch pointing at a tag, an object too large to inflate in one read) answers
``UNKNOWN`` and the caller asks ``git`` as before: this is a shortcut, never a second opinion.

Each object is checked against its id (the hash of its header and content) before it is
believed, and inflated with a bound, so a corrupt or hostile file cannot answer for another.
"""
from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Iterable

#: the answer "not found here: ask git"
UNKNOWN = object()
#: the most a commit or root tree read here may inflate to (larger: git reads it)
MAX_OBJECT_BYTES = 4 << 20
_HEX = frozenset("0123456789abcdef")


def _read(dirs: Iterable[Path], oid: str) -> tuple[bytes, bytes] | None:
    """(type, content) of loose object ``oid`` from the first of ``dirs`` holding it, checked
    against its id; None when it is not loose in any of them (or is not readable whole)."""
    algo = hashlib.sha1 if len(oid) == 40 else hashlib.sha256
    for d in dirs:
        try:
            with open(d / oid[:2] / oid[2:], "rb") as f:
                raw = f.read(MAX_OBJECT_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None
        try:
            z = zlib.decompressobj()
            data = z.decompress(raw, MAX_OBJECT_BYTES + 64)
        except zlib.error:
            return None
        if z.unconsumed_tail or not z.eof:
            return None          # larger than we read here: git's job
        head, sep, body = data.partition(b"\0")
        kind, _, size = head.partition(b" ")
        if not sep or not size.isdigit() or int(size) != len(body):
            return None
        if algo(data).hexdigest() != oid:
            return None
        return kind, body
    return None


def _tree_of(commit: bytes) -> str | None:
    first = commit.split(b"\n", 1)[0]
    if not first.startswith(b"tree "):
        return None
    tree = first[5:].decode("ascii", "replace")
    return tree if len(tree) in (40, 64) and set(tree) <= _HEX else None


def root_entry(objects_dirs: Iterable[str | os.PathLike], commit_id: str, name: str):
    """``(mode, type, object id)`` of the root-tree entry ``name`` at commit ``commit_id``
    (mode as ``git ls-tree`` prints it: ``100755``, ``040000``...), None when the commit has
    no such entry, or ``UNKNOWN`` when the objects are not all loose in ``objects_dirs``."""
    if len(commit_id) not in (40, 64) or not set(commit_id) <= _HEX or "/" in name or not name:
        return UNKNOWN
    dirs = [Path(d) for d in objects_dirs]
    commit = _read(dirs, commit_id)
    if commit is None or commit[0] != b"commit":
        return UNKNOWN
    tree_id = _tree_of(commit[1])
    if tree_id is None or len(tree_id) != len(commit_id):
        return UNKNOWN
    tree = _read(dirs, tree_id)
    if tree is None or tree[0] != b"tree":
        return UNKNOWN
    width, want, body, i = len(commit_id) // 2, name.encode("utf-8", "surrogateescape"), tree[1], 0
    while i < len(body):
        sp = body.find(b" ", i)
        nul = body.find(b"\0", sp + 1) if sp >= 0 else -1
        if sp < 0 or nul < 0 or nul + 1 + width > len(body):
            return UNKNOWN       # not a tree git would have accepted: let git say
        mode, entry = body[i:sp], body[sp + 1:nul]
        if entry == want:
            m = mode.decode("ascii", "replace").rjust(6, "0")
            kind = {"040000": "tree", "160000": "commit"}.get(m, "blob")
            return m, kind, body[nul + 1:nul + 1 + width].hex()
        i = nul + 1 + width
    return None
