"""Read-only trees on disk (a version's files, a kept output): walked, listed, opened and
archived WITHOUT ever following a symbolic link, in bounded memory.

Every walk goes through directory file descriptors (``os.fwalk`` and ``dir_fd`` opens with
``O_NOFOLLOW``): a symlink planted anywhere in a tree (or a tree swapped for a symlink) is never
followed. Only regular files and directories are listed, opened or archived.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Iterator

from ..teams.access import OpError
from .names import check_rel_path

PIECE = 1 << 20          # every read and write is at most 1 MiB
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | os.O_NONBLOCK


def hash_fd(fd: int) -> tuple[str, int]:
    """(sha256 hex, bytes) of an open file, read from its current position in 1 MiB pieces."""
    h, n = hashlib.sha256(), 0
    while True:
        piece = os.read(fd, PIECE)
        if not piece:
            return h.hexdigest(), n
        h.update(piece)
        n += len(piece)


def hash_file(path: Path) -> tuple[str, int]:
    fd = os.open(path, _FILE_FLAGS)
    try:
        return hash_fd(fd)
    finally:
        os.close(fd)


def _open_top(top: Path) -> int:
    """A descriptor of the tree's top directory; a symlink there is refused (ELOOP/ENOTDIR)."""
    return os.open(top, _DIR_FLAGS)


def walk(top: Path) -> Iterator[tuple[str, int, list[str], list[tuple[str, os.stat_result]]]]:
    """Top-down (relative dir ('' for the top), its fd, sorted sub-directory names (prune by
    editing the list), sorted [(file name, lstat)] of its regular files). Symlinks, FIFOs,
    sockets and devices are left out; nothing is followed."""
    for dirpath, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        rel = os.path.relpath(dirpath, top)
        rel = "" if rel == "." else rel.replace(os.sep, "/")
        dirnames.sort()
        files = []
        for name in sorted(filenames):
            try:
                st = os.lstat(name, dir_fd=dirfd)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                files.append((name, st))
        # os.fwalk lists symlinks to directories under dirnames: they are not descended into
        # (follow_symlinks=False), drop them so callers never see them as directories
        real = []
        for name in dirnames:
            try:
                if stat.S_ISDIR(os.lstat(name, dir_fd=dirfd).st_mode):
                    real.append(name)
            except FileNotFoundError:
                pass
        dirnames[:] = real
        yield rel, dirfd, dirnames, files


def list_tree(top: Path) -> list[tuple[str, int]]:
    """[(relative path, size)] of the tree's regular files, sorted by path. A missing tree is
    empty."""
    try:
        os.close(_open_top(top))
    except FileNotFoundError:
        return []
    out = []
    for rel, _fd, _dirs, files in walk(top):
        for name, st in files:
            out.append((f"{rel}/{name}" if rel else name, st.st_size))
    out.sort()
    return out


def safe_open(top: Path, relpath: str) -> tuple[int, int]:
    """(fd, size) of the regular file ``relpath`` inside ``top``, opened component by component
    with ``O_NOFOLLOW`` from ``top``'s descriptor: no symlink on the way is followed.
    FileNotFoundError when it is missing, not a regular file, behind a symlink, or the path is
    not a plain relative path."""
    try:
        check_rel_path(relpath)
    except OpError as exc:
        raise FileNotFoundError(errno.ENOENT, str(exc), str(relpath)[:200]) from None
    parts = relpath.split("/")
    fds: list[int] = []
    try:
        fds.append(_open_top(top))
        for part in parts[:-1]:
            fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fds[-1])
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR):
            raise FileNotFoundError(errno.ENOENT, "no such file", relpath) from None
        raise
    finally:
        for d in fds:
            os.close(d)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", relpath)
    os.set_blocking(fd, True)
    return fd, st.st_size


def safe_file(top: Path, relpath: str) -> tuple[Path, int]:
    """(path, size) of a regular file inside ``top`` after checking, without following any
    symlink, that it is one (for front doors that stream a path; the trees are read-only and
    root's, so the path stays what was checked). FileNotFoundError otherwise."""
    fd, size = safe_open(top, relpath)
    os.close(fd)
    return Path(top) / relpath, size


def _tar_header(name: str, st: os.stat_result, isdir: bool) -> bytes:
    info = tarfile.TarInfo(name + ("/" if isdir else ""))
    info.type = tarfile.DIRTYPE if isdir else tarfile.REGTYPE
    info.size = 0 if isdir else st.st_size
    info.mode = 0o755 if isdir else (0o755 if st.st_mode & 0o111 else 0o644)
    info.mtime = int(st.st_mtime)
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def tar_stream(top: Path, prefix: str) -> Iterator[bytes]:
    """An uncompressed tar of the tree's directories and regular files under ``prefix/``,
    yielded in pieces of at most 1 MiB (plus headers): memory does not grow with the tree. A
    file that shrank since it was listed is padded with zeros (trees are read-only: it does
    not happen), one that grew is cut at its listed size: the archive is always well formed."""
    prefix = prefix.strip("/")
    for rel, dirfd, _dirs, files in walk(top):
        dname = f"{prefix}/{rel}" if rel else prefix
        yield _tar_header(dname, os.fstat(dirfd), True)
        for name, st in files:
            try:
                fd = os.open(name, _FILE_FLAGS, dir_fd=dirfd)
            except FileNotFoundError:
                continue
            try:
                fst = os.fstat(fd)
                if not stat.S_ISREG(fst.st_mode):
                    continue
                os.set_blocking(fd, True)
                yield _tar_header(f"{dname}/{name}", fst, False)
                left = fst.st_size
                while left > 0:
                    piece = os.read(fd, min(PIECE, left))
                    if not piece:
                        piece = bytes(min(PIECE, left))
                    left -= len(piece)
                    yield piece
                pad = -fst.st_size % tarfile.BLOCKSIZE
                if pad:
                    yield bytes(pad)
            finally:
                os.close(fd)
    yield bytes(2 * tarfile.BLOCKSIZE)


def make_writable_and_remove(path: Path) -> None:
    """Remove a tree whose directories may be 0555 (read-only trees), never following a
    symlink. A missing path is fine; a symlink or file at ``path`` is unlinked."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    if os.geteuid() != 0:   # root ignores the modes; anybody else opens the directories first
        for dirpath, _dirs, _files, dirfd in os.fwalk(path, follow_symlinks=False):
            os.chmod(dirfd, 0o700)
    shutil.rmtree(path)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def copy_file(src: Path, dest: Path, mode: int) -> None:
    """A fresh copy of the regular file ``src`` (not followed if a symlink) at the new path
    ``dest`` with ``mode``."""
    rfd = os.open(src, _FILE_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(rfd).st_mode):
            raise OSError(errno.EINVAL, f"{src} is not a regular file")
        os.set_blocking(rfd, True)
        wfd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            while piece := os.read(rfd, PIECE):
                write_all(wfd, piece)
            os.fchmod(wfd, mode)
        finally:
            os.close(wfd)
    finally:
        os.close(rfd)
