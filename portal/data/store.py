"""The data domain's bytes on disk (docs/DATA.md "On disk"), under ``<data_dir>/datastore``:

* ``repos/<repo_id>/`` a repository's gate (0700 + ACL, ``acl.py``) holding ``objects/`` (each
  distinct content once, named by its sha256, 0444), ``versions/<n>/`` (read-only trees of hard
  links to objects, built aside and renamed: never half-visible) and ``incoming/<upload>/`` (the
  ``<sha>.part`` files of uploads in progress);
* ``outputs/<team_id>/<job_id>/`` kept job outputs (``outputs_fs.py``);
* ``staging/`` (0700) where outputs are sealed and copies are made.

Nothing here knows about the database: the service modules say which objects make a version.
Every read and write goes in pieces of at most 1 MiB; memory never grows with a file's size.
"""
from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

from ..private_files import PRIVATE_DIR, TRAVERSE_ONLY, make_dir
from ..teams.access import OpError
from . import parts, trees
from .names import check_rel_path, check_sha256
from .parts import ChecksumMismatch, OffsetMismatch  # noqa: F401  (raised from here)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
PIECE = trees.PIECE


class DataStore:
    def __init__(self, root: Path, chown: bool):
        self.root = Path(root)
        self.chown = bool(chown)
        # read-only directories we still add to (objects/): root writes whatever the mode
        self._ro_dir = 0o555 if os.geteuid() == 0 else 0o755

    @classmethod
    def for_services(cls, svc) -> DataStore:
        chown = svc.chown if svc.chown is not None else os.geteuid() == 0
        return cls(Path(svc.config.data_dir) / "datastore", chown)

    # ---- layout -------------------------------------------------------------------------
    @property
    def repos_root(self) -> Path:
        return self.root / "repos"

    @property
    def outputs_root(self) -> Path:
        return self.root / "outputs"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    def ensure_layout(self) -> None:
        make_dir(self.root, TRAVERSE_ONLY)
        make_dir(self.repos_root, TRAVERSE_ONLY)
        make_dir(self.outputs_root, TRAVERSE_ONLY)
        make_dir(self.staging, PRIVATE_DIR)

    def staging_dir(self, what: str) -> Path:
        """A fresh, private (0700) directory name under staging/ (not created)."""
        self.ensure_layout()
        return self.staging / f"{what}-{secrets.token_hex(8)}"

    def repo_dir(self, repo_id: int) -> Path:
        return self.repos_root / str(int(repo_id))

    def object_path(self, repo_id: int, sha256: str) -> Path:
        check_sha256(sha256)
        return self.repo_dir(repo_id) / "objects" / sha256[:2] / sha256

    def version_dir(self, repo_id: int, number: int) -> Path:
        return self.repo_dir(repo_id) / "versions" / str(int(number))

    def incoming_dir(self, repo_id: int, upload_id: str) -> Path:
        if not (upload_id.isascii() and upload_id.isalnum()) or len(upload_id) > 64:
            raise OpError(f"upload id {upload_id[:80]!r} is not one")
        return self.repo_dir(repo_id) / "incoming" / upload_id

    def part_path(self, repo_id: int, upload_id: str, sha256: str) -> Path:
        check_sha256(sha256)
        return self.incoming_dir(repo_id, upload_id) / f"{sha256}.part"

    def ensure_repo(self, repo_id: int) -> Path:
        """The repository's directories: the gate 0700 (its ACL is ``acl.set_gate``'s),
        objects/ and versions/ read-only to others, incoming/ 0700."""
        self.ensure_layout()
        gate = self.repo_dir(repo_id)
        _mkdir(gate)
        for sub, mode in (("objects", self._ro_dir), ("versions", 0o755),
                          ("incoming", PRIVATE_DIR)):
            d = gate / sub
            _mkdir(d)
            if stat.S_IMODE(os.lstat(d).st_mode) != mode:
                os.chmod(d, mode)
        return gate

    # ---- objects ------------------------------------------------------------------------
    def has_object(self, repo_id: int, sha256: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.object_path(repo_id, sha256)).st_mode)
        except FileNotFoundError:
            return False

    def object_size(self, repo_id: int, sha256: str) -> int | None:
        try:
            return os.lstat(self.object_path(repo_id, sha256)).st_size
        except FileNotFoundError:
            return None

    def _object_parent(self, repo_id: int, sha256: str) -> Path:
        parent = self.object_path(repo_id, sha256).parent
        if not parent.is_dir():
            self.ensure_repo(repo_id)
            _mkdir(parent)
            os.chmod(parent, self._ro_dir)
        return parent

    def _install_object(self, repo_id: int, sha256: str, src: Path) -> None:
        """Rename a verified file into objects/ (0444); a twin that got there first wins."""
        os.chmod(src, 0o444)
        self._object_parent(repo_id, sha256)
        dest = self.object_path(repo_id, sha256)
        if self.has_object(repo_id, sha256):
            os.unlink(src)
            return
        os.replace(src, dest)

    def put_empty_object(self, repo_id: int) -> None:
        """The empty file's object (an upload never sends zero bytes)."""
        if self.has_object(repo_id, EMPTY_SHA256):
            return
        tmp = self._object_parent(repo_id, EMPTY_SHA256) / f".tmp-{secrets.token_hex(8)}"
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._install_object(repo_id, EMPTY_SHA256, tmp)

    # ---- upload parts -------------------------------------------------------------------
    def part_offset(self, repo_id: int, upload_id: str, sha256: str) -> int:
        """Bytes of the object received so far (its size once complete, 0 when none)."""
        try:
            return os.lstat(self.part_path(repo_id, upload_id, sha256)).st_size
        except FileNotFoundError:
            return 0

    def receive_chunk(self, repo_id: int, upload_id: str, sha256: str, size: int, offset: int,
                      stream: BinaryIO, length: int) -> int:
        """Append ``length`` bytes from ``stream`` to the object's part, which must end exactly at
        ``offset`` (else OffsetMismatch with the offset to resume from); at ``size`` bytes the
        sha256 is checked and the part becomes the object (ChecksumMismatch: the part is
        removed). Returns the part's new size (``size`` once the object is complete)."""
        if self.has_object(repo_id, sha256):
            return size
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
            raise OpError("offset and length must be whole numbers of bytes")
        if offset + length > size:
            raise OpError(f"object {sha256[:12]}… is {size} bytes: {length} bytes at offset "
                          f"{offset} go past its end")
        inc = self.incoming_dir(repo_id, upload_id)
        if not inc.is_dir():
            self.ensure_repo(repo_id)
            os.makedirs(inc, PRIVATE_DIR, exist_ok=True)
        part = self.part_path(repo_id, upload_id, sha256)
        try:
            return parts.append(part, sha256, size, offset, stream, length,
                                lambda p: self._install_object(repo_id, sha256, p))
        except OffsetMismatch:
            if self.has_object(repo_id, sha256):   # completed by a concurrent request
                return size
            raise

    def remove_incoming(self, repo_id: int, upload_id: str) -> None:
        parts.forget(f"{self.incoming_dir(repo_id, upload_id)}{os.sep}")
        trees.make_writable_and_remove(self.incoming_dir(repo_id, upload_id))

    # ---- versions -----------------------------------------------------------------------
    def build_version(self, repo_id: int, number: int, files: list[tuple[str, str]]) -> Path:
        """versions/<number>: a read-only tree of hard links to the objects, built in
        versions/.tmp-<number> (a leftover one is removed first) and renamed into place."""
        self.ensure_repo(repo_id)
        final = self.version_dir(repo_id, number)
        if os.path.lexists(final):
            raise FileExistsError(f"version {number} of repository {repo_id} exists on disk")
        tmp = final.parent / f".tmp-{int(number)}"
        trees.make_writable_and_remove(tmp)
        os.mkdir(tmp, PRIVATE_DIR)
        dirs = {tmp}
        try:
            for path, sha in files:
                check_rel_path(path)
                dest = tmp / path
                parent = dest.parent
                if parent not in dirs:
                    os.makedirs(parent, PRIVATE_DIR, exist_ok=True)
                    p = parent
                    while p not in dirs:
                        dirs.add(p)
                        p = p.parent
                self._link_object(repo_id, sha, dest)
            for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
                os.chmod(d, 0o555)
            os.rename(tmp, final)
        except BaseException:
            trees.make_writable_and_remove(tmp)
            raise
        return final

    def _link_object(self, repo_id: int, sha: str, dest: Path) -> None:
        src = self.object_path(repo_id, sha)
        try:
            os.link(src, dest, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.EMLINK:     # too many links to one inode: a copy of it
                raise
            trees.copy_file(src, dest, 0o444)

    def remove_version(self, repo_id: int, number: int) -> None:
        """Takes versions/<number> away at once (a rename), then deletes its tree."""
        final = self.version_dir(repo_id, number)
        if not os.path.lexists(final):
            return
        gone = final.parent / f".rm-{int(number)}-{secrets.token_hex(4)}"
        os.rename(final, gone)
        trees.make_writable_and_remove(gone)

    def remove_repo(self, repo_id: int) -> None:
        gate = self.repo_dir(repo_id)
        if not os.path.lexists(gate):
            return
        gone = self.repos_root / f".rm-{int(repo_id)}-{secrets.token_hex(4)}"
        os.rename(gate, gone)
        trees.make_writable_and_remove(gone)

    def object_shas(self, repo_id: int) -> list[str]:
        objects = self.repo_dir(repo_id) / "objects"
        return sorted(name for fan in _list(objects) for name in _list(objects / fan)
                      if len(name) == 64 and name[:2] == fan)

    def gc_objects(self, repo_id: int, keep: set[str]) -> int:
        """Removes the objects not in ``keep``; returns the bytes freed (objects no version
        tree links any more)."""
        freed = 0
        for sha in self.object_shas(repo_id):
            if sha in keep:
                continue
            path = self.object_path(repo_id, sha)
            try:
                st = os.lstat(path)
                os.unlink(path)
            except FileNotFoundError:
                continue
            if st.st_nlink <= 1:
                freed += st.st_size
        return freed

    # ---- trees from outside (a kept output → a version) -----------------------------------
    def import_tree(self, repo_id: int, src: Path) -> list[tuple[str, str, int]]:
        """[(relative path, sha256, size)] of every regular file of a sealed tree, each hashed
        and hard-linked into objects/ (copied when on another filesystem). Symlinks and other
        non-regular files are skipped, nothing is followed."""
        self.ensure_repo(repo_id)
        out: list[tuple[str, str, int]] = []
        for rel, dirfd, _dirs, files in trees.walk(Path(src)):
            for name, _st in files:
                relpath = check_rel_path(f"{rel}/{name}" if rel else name)
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dirfd)
                except FileNotFoundError:
                    continue
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        continue
                    sha, size = trees.hash_fd(fd)
                    if not self.has_object(repo_id, sha):
                        self._adopt(repo_id, sha, name, dirfd, fd)
                finally:
                    os.close(fd)
                out.append((relpath, sha, size))
        out.sort()
        return out

    def _adopt(self, repo_id: int, sha: str, name: str, dirfd: int, fd: int) -> None:
        parent = self._object_parent(repo_id, sha)
        tmp = parent / f".tmp-{secrets.token_hex(8)}"
        try:
            os.link(name, tmp, src_dir_fd=dirfd, follow_symlinks=False)
            if not os.path.samestat(os.lstat(tmp), os.fstat(fd)):
                os.unlink(tmp)   # swapped since it was hashed: copy what was hashed instead
                raise OSError(errno.EXDEV, "changed")
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
                raise
            os.lseek(fd, 0, os.SEEK_SET)
            wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                h = hashlib.sha256()
                while piece := os.read(fd, PIECE):
                    h.update(piece)
                    trees.write_all(wfd, piece)
            finally:
                os.close(wfd)
            if h.hexdigest() != sha:
                os.unlink(tmp)
                raise OpError(f"a file changed while it was being copied ({name!r})", 409)
            self._install_object(repo_id, sha, tmp)
            return
        if self.has_object(repo_id, sha):
            os.unlink(tmp)
        else:
            os.replace(tmp, self.object_path(repo_id, sha))

    # ---- reading trees --------------------------------------------------------------------
    list_tree = staticmethod(trees.list_tree)
    tar_stream = staticmethod(trees.tar_stream)
    safe_open = staticmethod(trees.safe_open)
    safe_file = staticmethod(trees.safe_file)

    def version_tree(self, repo_id: int, number: int) -> list[tuple[str, int]]:
        return trees.list_tree(self.version_dir(repo_id, number))

    def version_tar(self, repo_id: int, number: int, prefix: str) -> Iterator[bytes]:
        return trees.tar_stream(self.version_dir(repo_id, number), prefix)


def _mkdir(d: Path) -> None:
    """A 0700 directory (an existing one is kept; a symlink there is refused)."""
    try:
        os.mkdir(d, PRIVATE_DIR)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(d).st_mode):
            raise NotADirectoryError(f"{d} is not a directory") from None


def _list(d: Path) -> list[str]:
    try:
        return os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return []
