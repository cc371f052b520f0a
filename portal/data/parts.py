"""An upload's ``<sha>.part`` files: chunks appended at exactly the offset where the part ends
(under an exclusive ``flock``: two requests never interleave), the sha256 checked once the part
has its announced size.

Chunks that arrive in order in one process are hashed as they are written (a running sha256 per
part, kept here), so completing a large object never reads it again; otherwise (a restarted
server, another worker process) the finished part is read once more to hash it. Either way
memory does not grow with the object's size: bytes move in pieces of at most 1 MiB.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO, Callable

from ..teams.access import OpError
from .trees import PIECE, hash_fd, write_all

_MAX_HASHERS = 256


class OffsetMismatch(OpError):
    """A chunk that does not start where the part ends: the client resumes at ``offset``."""

    status = 409

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


class ChecksumMismatch(OpError):
    """A completed object whose bytes do not have the announced sha256 (the part is gone)."""

    status = 400


# "<part path>\0<dev>:<ino>" -> (running sha256, bytes hashed). The inode is in the key: a part
# removed and begun again never meets its predecessor's running hash.
_hashers: OrderedDict[str, tuple] = OrderedDict()
_lock = threading.Lock()


def _take(key: str, offset: int):
    with _lock:
        entry = _hashers.pop(key, None)
    if entry is not None and entry[1] == offset:
        return entry[0]
    return hashlib.sha256() if offset == 0 else None


def _keep(key: str, hasher, offset: int) -> None:
    with _lock:
        _hashers[key] = (hasher, offset)
        while len(_hashers) > _MAX_HASHERS:
            _hashers.popitem(last=False)


def forget(prefix: Path | str) -> None:
    """Drop the running hashes of the parts under ``prefix`` (an upload's incoming dir, or one
    part)."""
    prefix = str(prefix)
    with _lock:
        for key in [k for k in _hashers if k.startswith(prefix)]:
            del _hashers[key]


def append(part: Path, sha256: str, size: int, offset: int, stream: BinaryIO, length: int,
           on_complete: Callable[[Path], None]) -> int:
    """Append ``length`` bytes of ``stream`` to ``part``, which must hold exactly ``offset``
    bytes (else OffsetMismatch telling where to resume). When the part reaches ``size`` its
    sha256 is checked: a match calls ``on_complete(part)`` (still under the lock: it moves the
    part away), a mismatch removes the part (ChecksumMismatch). Returns the part's new size. A
    body shorter than ``length`` keeps what arrived and raises OffsetMismatch."""
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_APPEND
                 | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        st = os.fstat(fd)
        if st.st_nlink == 0 or not _same(part, st):
            # completed (moved away) or removed while this request waited for the lock
            raise OffsetMismatch(f"object {sha256[:12]}… changed meanwhile: ask for the upload's "
                                 "status and resume from there", 0)
        key = f"{part}\0{st.st_dev}:{st.st_ino}"
        have = st.st_size
        if have != offset:
            raise OffsetMismatch(f"object {sha256[:12]}… has {have} bytes here: send the bytes "
                                 f"from offset {have}, not {offset}", have)
        hasher = _take(key, have)
        written = have
        try:
            left = length
            while left > 0:
                piece = stream.read(min(PIECE, left))
                if not piece:
                    break
                write_all(fd, piece)
                if hasher is not None:
                    hasher.update(piece)
                written += len(piece)
                left -= len(piece)
        except BaseException:
            forget(key)
            raise
        if written < size:
            if hasher is not None:
                _keep(key, hasher, written)
            if written < offset + length:
                raise OffsetMismatch(f"the body ended after {written - offset} of {length} bytes: "
                                     f"resume object {sha256[:12]}… at offset {written}", written)
            return written
        if hasher is None:
            rfd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                digest, _n = hash_fd(rfd)
            finally:
                os.close(rfd)
        else:
            digest = hasher.hexdigest()
        if digest != sha256:
            os.unlink(part)
            raise ChecksumMismatch(f"object {sha256[:12]}… arrived with sha256 {digest[:12]}…: "
                                   "its bytes were removed, send it again from offset 0")
        on_complete(part)
        return size
    finally:
        os.close(fd)


def _same(path: Path, st: os.stat_result) -> bool:
    try:
        return os.path.samestat(os.lstat(path), st)
    except FileNotFoundError:
        return False
