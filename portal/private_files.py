"""What Slipway keeps private on disk, and how it is created that way.

The data directory is shared with the compute nodes, where every job runs as its team member's
Unix account. Only two things there are for job users:

* ``<data_dir>/node/<hash>/``: the node-side job program (read-only code, 0755/0644);
* ``<jobs_dir>/<id>/``: a job's OWN directory (owned by its Unix user, 0700; its spec 0600; its
  log written by Slurm as that user).

The directories on the way to those (``data_dir``, ``jobs_dir``, ``data_dir/node``) are 0711:
traversable, not listable. Everything else is Slipway's alone: the database and its
``-wal``/``-shm``/``-journal`` files, ``hook_secret``, ``secret_key``, the lock files, the bare
repositories (0700 root: served over HTTP by the server process) and the LFS objects.

Private things are *created* private: directories with ``mkdir(mode=0o700)``, files with
``os.open(..., 0o600)`` (both independent of the process umask, which can only remove bits), and
the server, CLI and reconciler run under umask 077 (``PRIVATE_UMASK``) so that what SQLite and
git create is private too. ``secure_layout`` also tightens what an older Slipway left looser
(0644 database, 0755 data directory): an upgrade ends private.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("slipway")

PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
TRAVERSE_ONLY = 0o711

#: Files directly in the data directory that belong to Slipway alone.
DATA_DIR_FILES = ("hook_secret", "secret_key", "reconciler.lock", "slurm-accounts.lock",
                  "served_base_url")
SQLITE_SIDECARS = ("", "-wal", "-shm", "-journal")


def set_process_umask() -> int:
    """Make everything this process (and its children: git, sqlite) creates private by default;
    returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def opener(path, flags: int) -> int:
    """``open(path, mode, opener=opener)``: a file it creates is 0600 whatever the umask."""
    return os.open(path, flags, PRIVATE_FILE)


def create_private_file(path: Path, data: bytes = b"", *, exclusive: bool = True) -> None:
    """Create ``path`` as 0600 and write ``data`` (``FileExistsError`` when it exists and
    ``exclusive``)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else 0)
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def make_dir(path: Path, mode: int = PRIVATE_DIR) -> None:
    """Create ``path`` (and missing parents) so that it ends with exactly ``mode``.

    The directory is created 0700 (never looser than its final mode, whatever the umask) and
    then opened up to ``mode`` when that is a traverse-only 0711. An existing directory with
    bits beyond ``mode`` is tightened to it (an older Slipway's 0755); one owned by somebody
    else is left as it is (a shared mount), with a warning when it is looser.
    """
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, PRIVATE_DIR)
        except FileExistsError:
            pass
    tighten(path, mode)


def tighten(path: Path, mode: int) -> bool:
    """Set ``path``'s permission bits to ``mode`` when they differ; True when changed.
    Missing paths are skipped; a path this process may not chmod is logged, not fatal."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == mode:
        return False
    try:
        os.chmod(path, mode)
    except PermissionError:
        if stat.S_IMODE(st.st_mode) & ~mode:
            log.warning("%s is mode %o and not ours to change: job users may read it", path,
                        stat.S_IMODE(st.st_mode))
        return False
    return True


def tighten_file(path: Path) -> bool:
    """A private file left group/other-readable by an older Slipway becomes 0600."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or not stat.S_IMODE(st.st_mode) & 0o077:
        return False
    return tighten(path, stat.S_IMODE(st.st_mode) & PRIVATE_DIR)


def sqlite_path(database_url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (None for memory or another database)."""
    if not database_url.startswith("sqlite"):
        return None
    path = database_url.split("///", 1)[1] if "///" in database_url else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def secure_sqlite(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (its -wal, -shm and -journal files take
    the database file's mode), and tighten an older, looser one and its sidecar files."""
    if not Path(path).parent.is_dir():
        make_dir(Path(path).parent)
    try:
        create_private_file(path)
    except FileExistsError:
        pass
    for suffix in SQLITE_SIDECARS:
        tighten_file(Path(f"{path}{suffix}"))


def secure_layout(data_dir: Path, jobs_dir: Path, repos_root: Path, lfs_root: Path) -> None:
    """Create the data directory's layout with its modes; tighten an older, looser one."""
    make_dir(data_dir, TRAVERSE_ONLY)
    make_dir(jobs_dir, TRAVERSE_ONLY)
    make_dir(repos_root, PRIVATE_DIR)
    make_dir(lfs_root, PRIVATE_DIR)
    node = Path(data_dir) / "node"
    if node.is_dir():
        tighten(node, TRAVERSE_ONLY)
    for name in DATA_DIR_FILES:
        tighten_file(Path(data_dir) / name)
    # Each job's own directory is 0700 (owned by its Unix user); one left looser is closed.
    try:
        entries = list(os.scandir(jobs_dir))
    except OSError:
        entries = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            if stat.S_IMODE(st.st_mode) & 0o077:
                tighten(Path(entry.path), PRIVATE_DIR)


def closed_ancestor(path: Path) -> Path | None:
    """The first directory on the way to ``path`` (itself included) that other users may not
    traverse (no o+x), or None: job users must reach their job dirs under the jobs dir (a data
    dir under /root, say, would make every job fail)."""
    path = Path(path).absolute()
    for d in [*reversed(path.parents), path]:
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return d
        except OSError:
            return d
    return None
