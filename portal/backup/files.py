"""File helpers of backup and restore: private directories and files (0700/0600, independent
of the umask), a chunked copy that hashes what it writes, and a whole-file sha256."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ..private_files import PRIVATE_DIR, PRIVATE_FILE

PIECE = 1 << 20


def private_dir(path: Path) -> Path:
    """``path`` and its missing parents, each made 0700."""
    path = Path(path)
    if not path.is_dir():
        private_dir(path.parent)
        try:
            os.mkdir(path, PRIVATE_DIR)
        except FileExistsError:
            pass
    return path


def copy_file(src: Path, dest: Path, *, mode: int = PRIVATE_FILE, limit: int | None = None) -> tuple[str, int]:
    """Copy ``src`` to the new file ``dest`` (created ``mode``, never overwriting) in pieces,
    at most ``limit`` bytes (a growing log is copied up to its size when the copy began);
    returns (sha256, size) of what was written."""
    private_dir(Path(dest).parent)
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fout:
            while limit is None or size < limit:
                piece = fin.read(PIECE if limit is None else min(PIECE, limit - size))
                if not piece:
                    break
                h.update(piece)
                fout.write(piece)
                size += len(piece)
            fout.flush()
            os.fsync(fout.fileno())
    os.chmod(dest, mode)
    return h.hexdigest(), size


def sha256_of(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            h.update(piece)
            size += len(piece)
    return h.hexdigest(), size


def remove_tree(path: Path) -> None:
    """Remove ``path`` whatever it holds (read-only git objects and LFS files included)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return

    def _writable(func, p, _exc):
        os.chmod(os.path.dirname(p), PRIVATE_DIR)
        try:
            os.chmod(p, PRIVATE_DIR if os.path.isdir(p) else PRIVATE_FILE)
        except FileNotFoundError:
            return
        func(p)

    shutil.rmtree(path, onerror=_writable)


def is_empty_dir(path: Path) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except NotADirectoryError:
        return False
