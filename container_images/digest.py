"""Content digests of container images, for the trailers of result commits.

    image_digest(path) -> "sha256:<64 hex>"

* A file (an Apptainer SIF, a squashfs): the sha256 of its bytes (what ``sha256sum`` prints).
* A directory image (ch-run): the sha256 of a manifest listing every entry under it, sorted by
  path: ``<type> <mode> <path>`` plus, per type, the sha256 of a file's bytes, a symlink's target
  or a device's major:minor. Owners and times are left out (a copy of the same tree has the same
  digest); modes, names and contents are in.

Hashing a 150 MB image takes a second or two, so results are cached in memory by the path and
its ``stat`` (inode, size, mtime): a push does not hash the image again. ``container_images/build``
builds a directory image beside the old one and renames it into place (a new inode), and a new
SIF is a new file, so a rebuilt image is hashed again. A file changed *inside* a directory image
in place (root only) is not noticed until the process restarts.

Standard library only (``container_images/build`` runs under the system Python).
"""
from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

__all__ = ["file_digest", "tree_digest", "image_digest", "clear_cache"]

_CHUNK = 1 << 20
_cache: dict[tuple, str] = {}
_lock = threading.Lock()


def _sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    return "sha256:" + _sha256_file(path)


def _entry_line(root: str, rel: str) -> bytes:
    full = os.path.join(root, rel) if rel else root
    st = os.lstat(full)
    mode = stat.S_IMODE(st.st_mode)
    name = os.fsencode(rel or ".")
    if stat.S_ISDIR(st.st_mode):
        kind, extra = b"d", b""
    elif stat.S_ISREG(st.st_mode):
        kind, extra = b"f", _sha256_file(full).encode()
    elif stat.S_ISLNK(st.st_mode):
        kind, extra = b"l", os.fsencode(os.readlink(full))
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = b"c" if stat.S_ISCHR(st.st_mode) else b"b"
        extra = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}".encode()
    elif stat.S_ISFIFO(st.st_mode):
        kind, extra = b"p", b""
    else:
        kind, extra = b"s", b""
    # NUL-separated: a path may hold spaces or newlines, never NUL
    return b"\0".join((kind, b"%o" % mode, name, extra)) + b"\n"


def tree_digest(root: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` over a directory tree's sorted paths, types, modes and contents.
    Symbolic links are recorded, never followed."""
    root = os.fspath(root)
    rels = [""]
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = os.path.relpath(dirpath, root)
        for name in (*dirnames, *filenames):
            rels.append(name if base == "." else os.path.join(base, name))
    h = hashlib.sha256()
    for rel in sorted(rels, key=os.fsencode):
        h.update(_entry_line(root, rel))
    return "sha256:" + h.hexdigest()


def _key(path: str) -> tuple:
    st = os.stat(path)
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, stat.S_IFMT(st.st_mode))


def image_digest(path: str | os.PathLike[str]) -> str:
    """The digest of the image at ``path`` (a file or a directory image), cached by its stat.
    Raises OSError when it cannot be read."""
    real = os.path.realpath(os.fspath(path))
    key = _key(real)
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    digest = tree_digest(real) if Path(real).is_dir() else file_digest(real)
    with _lock:
        for old in [k for k in _cache if k[0] == real]:
            del _cache[old]
        _cache[key] = digest
    return digest


def clear_cache() -> None:
    with _lock:
        _cache.clear()
