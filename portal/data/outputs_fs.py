"""A job's ``/output`` on disk: made before the job (empty, or a copy of an earlier job's kept
output for a continue), sealed after it (docs/DATA.md "On disk").

Both are built in the data store's private staging directory (0700 root) and renamed into
place, so nobody sees a half-made or half-sealed tree. Sealing moves the live output away from
the job's user first, then walks it without following anything: symlinks, FIFOs, sockets and
devices are removed (listed in ``skipped``), files with more than one link are copied to a
fresh inode (a shared inode is never chowned or chmodded), names a version could not hold are
removed; then everything becomes root's and read-only (dirs 0555, files 0444, 0555 with an
exec bit).
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import subprocess
from pathlib import Path

from ..private_files import PRIVATE_DIR
from ..teams.access import OpError
from . import trees
from .names import check_rel_path
from .store import DataStore


def _set_file(dirfd: int, name: str, owner: tuple[int, int] | None, exec_mode: int,
              plain_mode: int) -> os.stat_result | None:
    """chown (when ``owner``) and chmod the regular file ``name`` through a descriptor opened
    with O_NOFOLLOW (a name swapped for a symlink is never followed); the file's new stat, or
    None when it is not a regular file any more."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
    except PermissionError:   # not root: a write-only file of our own, changed by name
        if owner:
            os.chown(name, *owner, dir_fd=dirfd, follow_symlinks=False)
        st = os.lstat(name, dir_fd=dirfd)
        os.chmod(name, exec_mode if st.st_mode & 0o111 else plain_mode, dir_fd=dirfd)
        return os.lstat(name, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT):
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if owner:
            os.fchown(fd, *owner)
        os.fchmod(fd, exec_mode if st.st_mode & 0o111 else plain_mode)
        return os.fstat(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove whatever is at ``path`` (a tree, a file, a symlink: never followed)."""
    trees.make_writable_and_remove(path)


def _make_writable(top: Path, uid: int, gid: int, chown: bool) -> None:
    """The job user's tree: lchown to uid:gid, dirs 0700, files 0600 (0700 with an exec bit);
    anything but directories and regular files (none in a kept output) is removed."""
    for _path, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        if chown:
            os.chown(dirfd, uid, gid)
        os.chmod(dirfd, PRIVATE_DIR)
        for name in filenames + dirnames:
            st = os.lstat(name, dir_fd=dirfd)
            if stat.S_ISDIR(st.st_mode):
                continue                         # its own turn comes
            if not stat.S_ISREG(st.st_mode):
                os.unlink(name, dir_fd=dirfd)    # a symlink or FIFO has no place in a copy
                continue
            _set_file(dirfd, name, (uid, gid) if chown else None, 0o700, 0o600)


def _into_place(built: Path, dest: Path) -> None:
    """Rename the built tree to ``dest``, replacing what is there (never followed); across
    filesystems the tree is copied next to ``dest`` first, then renamed."""
    if os.path.lexists(dest):
        _remove(dest)
    try:
        os.rename(built, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    near = dest.parent / f".{dest.name}-{secrets.token_hex(6)}"
    os.mkdir(near, PRIVATE_DIR)
    try:
        r = subprocess.run(["cp", "-a", f"{built}/.", f"{near}/"], capture_output=True, text=True)
        if r.returncode != 0:
            raise OSError(errno.EIO, f"copying {built} to {near} failed: {r.stderr.strip()[:500]}")
        st = os.lstat(built)
        os.chown(near, st.st_uid, st.st_gid, follow_symlinks=False)
        os.chmod(near, stat.S_IMODE(st.st_mode))
        os.rename(near, dest)
    except BaseException:
        _remove(near)
        raise
    _remove(built)


def make_output(store: DataStore, dest: Path, uid: int, gid: int, copy_from: Path | None,
                chown: bool) -> None:
    """The job's live /output at ``dest``: an empty directory, or a copy of ``copy_from`` (a
    kept output; reflinks where the filesystem has them), owned by uid:gid (when ``chown``)
    and writable by its user only."""
    work = store.staging_dir("make")
    os.mkdir(work, PRIVATE_DIR)
    try:
        if copy_from is not None:
            src = Path(copy_from)
            st = os.lstat(src)
            if not stat.S_ISDIR(st.st_mode):
                raise OpError(f"the output to continue from is not there ({src.name})", 409)
            r = subprocess.run(["cp", "-a", "--reflink=auto", "--no-dereference", f"{src}/.",
                                f"{work}/"], capture_output=True, text=True)
            if r.returncode != 0:
                raise OSError(errno.EIO, f"copying {src} failed: {r.stderr.strip()[:500]}")
        _make_writable(work, uid, gid, chown)
        _into_place(work, Path(dest))
    except BaseException:
        _remove(work)
        raise


def _seal_pass(top: Path, chown: bool) -> tuple[int, int, list[str]]:
    """One pass over ``top`` (already out of the job user's reach by path): each directory
    becomes root's and 0700 before its entries are looked at, what is not kept is removed,
    files become root's and read-only. Returns (bytes, regular files, skipped paths)."""
    size = files = 0
    skipped: list[str] = []
    for dirpath, dirnames, filenames, dirfd in os.fwalk(top, topdown=True, follow_symlinks=False):
        # close the directory first: a process of the job still in it can no longer add to it
        if chown:
            os.chown(dirfd, 0, 0)
        os.chmod(dirfd, PRIVATE_DIR)
        rel = os.path.relpath(dirpath, top)
        rel = "" if rel == "." else rel
        keep_dirs = []
        for name in sorted(dirnames + filenames):
            relpath = f"{rel}/{name}" if rel else name
            try:
                st = os.lstat(name, dir_fd=dirfd)
            except FileNotFoundError:
                continue
            if not _keepable(relpath) or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                _remove(Path(dirpath) / name)
                skipped.append(relpath)
                continue
            if stat.S_ISDIR(st.st_mode):
                keep_dirs.append(name)
                continue
            if st.st_nlink > 1:
                _fresh_copy(dirfd, name)
            done = _set_file(dirfd, name, (0, 0) if chown else None, 0o555, 0o444)
            if done is None:
                continue
            size += done.st_size
            files += 1
        dirnames[:] = keep_dirs
    return size, files, skipped


def _seal_walk(top: Path, chown: bool) -> tuple[int, int, list[str]]:
    """Seal ``top``: a first pass closes every directory to the job's user while it cleans
    it; a second one catches what a lingering process of the job may have added before its
    directory was closed. Directories become 0555 last, deepest first."""
    _size, _files, skipped = _seal_pass(top, chown)
    size, files, late = _seal_pass(top, chown)
    for _dirpath, _d, _f, dirfd in os.fwalk(top, topdown=False, follow_symlinks=False):
        os.chmod(dirfd, 0o555)
    return size, files, sorted(set(skipped + late))


def _keepable(relpath: str) -> bool:
    """A name a kept output (and a version made from it) can hold: valid UTF-8, a plain path."""
    try:
        relpath.encode("utf-8")
        check_rel_path(relpath)
    except (UnicodeEncodeError, OpError):
        return False
    return True


def _fresh_copy(dirfd: int, name: str) -> None:
    """Replace a file that has other links (maybe outside the output) by a copy of its own."""
    tmp = f".seal-{secrets.token_hex(6)}"
    rfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dirfd)
    try:
        wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                      dir_fd=dirfd)
        try:
            while piece := os.read(rfd, trees.PIECE):
                trees.write_all(wfd, piece)
            os.fchmod(wfd, stat.S_IMODE(os.fstat(rfd).st_mode) & 0o777)
        finally:
            os.close(wfd)
    finally:
        os.close(rfd)
    os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)


def _move_out(src: Path, work: Path) -> None:
    """The live output moved into staging (a rename; a copy of its regular files and dirs
    across filesystems). Anything but a real directory at ``src`` leaves an empty ``work``."""
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode):
        os.mkdir(work, PRIVATE_DIR)
        return
    try:
        os.rename(src, work)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    else:
        if not stat.S_ISDIR(os.lstat(work).st_mode):   # swapped for a symlink meanwhile
            os.unlink(work)
            os.mkdir(work, PRIVATE_DIR)
        return
    os.mkdir(work, PRIVATE_DIR)
    for rel, dirfd, dirs, files in trees.walk(src):
        target = work / rel if rel else work
        for d in dirs:
            os.mkdir(target / d, PRIVATE_DIR)
        for name, fst in files:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dirfd)
            try:
                wfd = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    while piece := os.read(fd, trees.PIECE):
                        trees.write_all(wfd, piece)
                    os.fchmod(wfd, stat.S_IMODE(fst.st_mode) & 0o777)
                finally:
                    os.close(wfd)
            finally:
                os.close(fd)
    shutil.rmtree(src)


def seal_output(store: DataStore, src: Path, dest: Path, chown: bool) -> tuple[int, int, list[str]]:
    """Keep a finished job's live output ``src`` as the read-only tree ``dest``
    (``outputs/<team_id>/<job_id>``). A missing ``src`` (the job never started) or anything
    but a directory there is kept as an empty output. Returns (bytes, files, skipped)."""
    dest, src = Path(dest), Path(src)
    if os.path.lexists(dest):
        if not os.path.lexists(src) and stat.S_ISDIR(os.lstat(dest).st_mode):
            # sealed before, but the caller did not hear of it (a crash): the same answer
            listing = trees.list_tree(dest)
            return sum(n for _p, n in listing), len(listing), []
        raise FileExistsError(errno.EEXIST, "the output is kept already", str(dest))
    work = store.staging_dir("seal")
    _move_out(src, work)
    try:
        size, files, skipped = _seal_walk(work, chown)
        gate = dest.parent
        if not gate.is_dir():
            store.ensure_layout()
            os.makedirs(gate.parent, exist_ok=True)
            try:
                os.mkdir(gate, PRIVATE_DIR)
            except FileExistsError:
                pass
        os.rename(work, dest)
    except BaseException:
        _remove(work)
        raise
    return size, files, skipped
