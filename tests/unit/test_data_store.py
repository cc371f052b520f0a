"""The data store on disk (portal/data/store.py, trees.py, parts.py, acl.py): content-addressed
objects, resumable parts, read-only version trees of hard links, never-followed symlinks,
streamed archives, and real POSIX ACL gates (ext4, as root: sw-alice in, sw-bob out)."""
from __future__ import annotations

import errno
import hashlib
import io
import os
import pwd
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from portal.data import acl, parts, trees
from portal.data.store import EMPTY_SHA256, ChecksumMismatch, DataStore, OffsetMismatch
from portal.teams.access import OpError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


class Pieces(io.RawIOBase):
    """A request body: ``data``, at most ``limit`` bytes of it, remembering the largest read."""

    def __init__(self, data: bytes, limit: int | None = None):
        self.buf = io.BytesIO(data if limit is None else data[:limit])
        self.largest = 0

    def read(self, n=-1):
        self.largest = max(self.largest, n)
        return self.buf.read(n)


@pytest.fixture
def store(tmp_path):
    st = DataStore(tmp_path / "datastore", chown=False)
    st.ensure_repo(1)
    return st


def put(store: DataStore, data: bytes, repo=1, upload="a" * 32) -> str:
    h = sha(data)
    assert store.receive_chunk(repo, upload, h, len(data), 0, io.BytesIO(data), len(data)) == len(data)
    return h


def test_layout_and_modes(store):
    root = store.root
    assert mode(root) == 0o711 and mode(root / "repos") == 0o711
    assert mode(root / "outputs") == 0o711 and mode(root / "staging") == 0o700
    gate = store.repo_dir(1)
    assert mode(gate) == 0o700 and mode(gate / "incoming") == 0o700
    assert (gate / "objects").is_dir() and (gate / "versions").is_dir()


def test_for_services_uses_data_dir_and_chown(tmp_path):
    class Cfg:
        data_dir = tmp_path / "var"

    class Svc:
        config, chown = Cfg(), None

    st = DataStore.for_services(Svc())
    assert st.root == tmp_path / "var" / "datastore"
    assert st.chown == (os.geteuid() == 0)
    Svc.chown = False
    assert DataStore.for_services(Svc()).chown is False


def test_chunks_in_order_make_a_0444_object_in_bounded_pieces(store):
    data = os.urandom(3 * trees.PIECE + 12345)
    h, up = sha(data), "b" * 32
    off = 0
    for cut in (1000, 2 * trees.PIECE, len(data)):
        body = Pieces(data[off:cut])
        off = store.receive_chunk(1, up, h, len(data), off, body, cut - off)
        assert off == cut and body.largest <= trees.PIECE
    obj = store.object_path(1, h)
    assert obj.read_bytes() == data and mode(obj) == 0o444
    assert not store.part_path(1, up, h).exists()
    assert store.has_object(1, h) and store.object_size(1, h) == len(data)


def test_resume_after_a_partial_chunk(store):
    data = os.urandom(50_000)
    h, up = sha(data), "c" * 32
    with pytest.raises(OffsetMismatch) as e:   # the connection broke after 20000 bytes
        store.receive_chunk(1, up, h, len(data), 0, Pieces(data, limit=20_000), len(data))
    assert e.value.offset == 20_000 and e.value.status == 409
    assert store.part_offset(1, up, h) == 20_000
    assert store.receive_chunk(1, up, h, len(data), 20_000, io.BytesIO(data[20_000:]),
                               30_000) == 50_000
    assert store.object_path(1, h).read_bytes() == data


def test_resume_in_another_process_rehashes_the_part(store):
    data = os.urandom(70_000)
    h, up = sha(data), "d" * 32
    store.receive_chunk(1, up, h, len(data), 0, io.BytesIO(data[:30_000]), 30_000)
    parts._hashers.clear()   # a restarted server: no running hash
    assert store.receive_chunk(1, up, h, len(data), 30_000, io.BytesIO(data[30_000:]),
                               40_000) == len(data)
    assert store.object_path(1, h).read_bytes() == data


def test_wrong_offset_tells_where_to_resume(store):
    data = b"x" * 1000
    h, up = sha(data), "e" * 32
    store.receive_chunk(1, up, h, 1000, 0, io.BytesIO(data[:400]), 400)
    for bad in (0, 300, 500):
        with pytest.raises(OffsetMismatch) as e:
            store.receive_chunk(1, up, h, 1000, bad, io.BytesIO(data[bad:]), 100)
        assert e.value.offset == 400 and "offset 400" in str(e.value)
    assert store.part_offset(1, up, h) == 400
    with pytest.raises(OpError, match="past its end"):
        store.receive_chunk(1, up, h, 1000, 400, io.BytesIO(data), 601)
    assert store.part_offset(1, up, h) == 400


def test_sha_mismatch_leaves_no_object_and_no_part(store):
    data = b"the announced bytes"
    h, up = sha(data), "f" * 32
    wrong = b"other bytes, same sz"[:len(data)]
    with pytest.raises(ChecksumMismatch) as e:
        store.receive_chunk(1, up, h, len(data), 0, io.BytesIO(wrong), len(wrong))
    assert e.value.status == 400
    assert not store.has_object(1, h)
    assert not store.part_path(1, up, h).exists() and store.part_offset(1, up, h) == 0
    # and the right bytes afterwards are accepted from offset 0
    assert put(store, data, upload=up) == h


def test_empty_object(store):
    store.put_empty_object(1)
    assert store.has_object(1, EMPTY_SHA256)
    assert store.object_path(1, EMPTY_SHA256).read_bytes() == b""


def test_build_version_is_hard_links_read_only_and_dedupes(store):
    a, b = put(store, b"alpha\n"), put(store, b"beta\n")
    v1 = store.build_version(1, 1, [("a.txt", a), ("sub/dir/b.txt", b), ("sub/copy.txt", a)])
    assert v1 == store.version_dir(1, 1)
    assert (v1 / "sub/dir/b.txt").read_bytes() == b"beta\n"
    obj_a = os.lstat(store.object_path(1, a))
    assert os.lstat(v1 / "a.txt").st_ino == obj_a.st_ino == os.lstat(v1 / "sub/copy.txt").st_ino
    assert obj_a.st_nlink == 3
    for d in (v1, v1 / "sub", v1 / "sub/dir"):
        assert mode(d) == 0o555
    assert mode(v1 / "a.txt") == 0o444
    store.build_version(1, 2, [("again.txt", a)])
    assert os.lstat(store.object_path(1, a)).st_nlink == 4   # one object for both versions
    assert store.version_tree(1, 1) == [("a.txt", 6), ("sub/copy.txt", 6), ("sub/dir/b.txt", 5)]
    with pytest.raises(FileExistsError):
        store.build_version(1, 2, [("x", a)])


def test_a_failed_build_is_never_half_visible(store):
    a = put(store, b"alpha\n")
    missing = sha(b"never uploaded")
    with pytest.raises(FileNotFoundError):
        store.build_version(1, 3, [("a.txt", a), ("z.txt", missing)])
    vdir = store.repo_dir(1) / "versions"
    assert os.listdir(vdir) == []
    # a leftover tmp from a crash is removed before building
    tmp = vdir / ".tmp-4"
    (tmp / "junk").mkdir(parents=True)
    os.chmod(tmp, 0o555)
    store.build_version(1, 4, [("a.txt", a)])
    assert sorted(os.listdir(vdir)) == ["4"]


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a", ""])
def test_version_paths_must_stay_inside(store, bad):
    a = put(store, b"alpha\n")
    with pytest.raises(OpError):
        store.build_version(1, 5, [(bad, a)])
    assert not store.version_dir(1, 5).exists()
    assert not (store.repo_dir(1) / "escape").exists()


def test_remove_version_gc_and_remove_repo(store):
    a, b = put(store, b"alpha\n"), put(store, b"beta-beta\n")
    store.build_version(1, 1, [("a", a), ("b", b)])
    store.build_version(1, 2, [("a", a)])
    store.remove_version(1, 1)
    assert not store.version_dir(1, 1).exists()
    assert store.gc_objects(1, {a}) == len(b"beta-beta\n")
    assert store.object_shas(1) == [a]
    assert (store.version_dir(1, 2) / "a").read_bytes() == b"alpha\n"
    store.remove_repo(1)
    assert not store.repo_dir(1).exists()
    assert os.listdir(store.repos_root) == []


def _tree(top: Path) -> None:
    (top / "d" / "e").mkdir(parents=True)
    (top / "top.txt").write_bytes(b"top\n")
    (top / "d" / "e" / "deep.bin").write_bytes(bytes(range(256)) * 5000)
    (top / "d" / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(top / "d" / "run.sh", 0o755)
    (top / ("long-" * 30 + ".txt")).write_bytes(b"a long name\n")


def test_import_tree_hashes_links_and_never_follows(store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not yours\n")
    src = tmp_path / "out"
    src.mkdir()
    _tree(src)
    os.symlink(secret, src / "link.txt")
    os.symlink(tmp_path, src / "linkdir")
    os.mkfifo(src / "pipe")
    files = store.import_tree(1, src)
    paths = [p for p, _s, _n in files]
    assert "link.txt" not in paths and "pipe" not in paths
    assert not any(p.startswith("linkdir") for p in paths)
    assert ("top.txt", sha(b"top\n"), 4) in files
    deep = os.lstat(src / "d/e/deep.bin")
    obj = os.lstat(store.object_path(1, sha((src / "d/e/deep.bin").read_bytes())))
    assert obj.st_ino == deep.st_ino   # hard-linked, not copied
    assert sha(b"not yours\n") not in store.object_shas(1)


def test_import_tree_copies_across_filesystems(store, tmp_path, monkeypatch):
    src = tmp_path / "out"
    src.mkdir()
    (src / "f").write_bytes(b"payload\n")
    real_link = os.link

    def no_link(a, b, *args, **kw):
        if "objects" in str(b):
            raise OSError(errno.EXDEV, "cross-device")
        return real_link(a, b, *args, **kw)

    monkeypatch.setattr(os, "link", no_link)
    [(path, h, n)] = store.import_tree(1, src)
    assert (path, n) == ("f", 8)
    obj = store.object_path(1, h)
    assert obj.read_bytes() == b"payload\n" and mode(obj) == 0o444
    assert os.lstat(obj).st_ino != os.lstat(src / "f").st_ino


def test_list_tree_and_tar_archive_are_byte_identical(store, tmp_path):
    src = tmp_path / "tree"
    src.mkdir()
    _tree(src)
    os.symlink("/etc/passwd", src / "d" / "passwd")
    listing = trees.list_tree(src)
    assert [p for p, _n in listing] == sorted(p for p, _n in listing)
    assert "d/passwd" not in dict(listing)
    chunks = list(trees.tar_stream(src, "team-name-3"))
    assert max(len(c) for c in chunks) <= trees.PIECE + 4096
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tf:
        names = tf.getnames()
        assert "team-name-3/d/passwd" not in names
        for rel, size in listing:
            member = tf.getmember(f"team-name-3/{rel}")
            assert member.size == size and member.isfile()
            assert tf.extractfile(member).read() == (src / rel).read_bytes()
        assert tf.getmember("team-name-3/d/run.sh").mode & 0o111
        assert tf.getmember("team-name-3/d/e").isdir()
    assert trees.list_tree(tmp_path / "missing") == []


def test_safe_open_never_follows_a_symlink(tmp_path):
    top = tmp_path / "v"
    (top / "d").mkdir(parents=True)
    (top / "d" / "f").write_bytes(b"inside")
    (tmp_path / "outside").write_bytes(b"outside")
    os.symlink(tmp_path / "outside", top / "d" / "leak")
    os.symlink(tmp_path, top / "up")
    fd, size = trees.safe_open(top, "d/f")
    try:
        assert size == 6 and os.read(fd, 100) == b"inside"
    finally:
        os.close(fd)
    assert trees.safe_file(top, "d/f") == (top / "d" / "f", 6)
    for bad in ("d/leak", "up/outside", "../outside", "/etc/passwd", "d", "d/missing", "d/./f"):
        with pytest.raises(FileNotFoundError):
            trees.safe_open(top, bad)
    # the tree's top swapped for a symlink is refused too
    os.symlink(top, tmp_path / "swapped")
    with pytest.raises((FileNotFoundError, OSError)):
        trees.safe_open(tmp_path / "swapped", "d/f")


# ---- POSIX ACL gates --------------------------------------------------------------------

def _user(name: str):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


needs_root_and_users = pytest.mark.skipif(
    os.geteuid() != 0 or _user("sw-alice") is None or _user("sw-bob") is None,
    reason="needs root and the Unix test users sw-alice, sw-bob")


def _can_read(user: str, path: Path) -> bool:
    r = subprocess.run(["cat", str(path)], user=user, capture_output=True)
    return r.returncode == 0


@pytest.fixture
def open_dir():
    """A directory others may traverse (pytest's tmp dirs are 0700 root)."""
    d = Path(tempfile.mkdtemp(prefix="slipway-acl-", dir="/tmp"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d)


def test_acl_encoding_round_trips():
    entries = acl.gate_entries({1002, 1001})
    assert [e[0] for e in entries] == [acl.USER_OBJ, acl.USER, acl.USER, acl.GROUP_OBJ,
                                       acl.MASK, acl.OTHER]
    assert [e[2] for e in entries[1:3]] == [1001, 1002]
    assert acl.decode(acl.encode(entries)) == entries


@needs_root_and_users
def test_gate_lets_alice_in_and_keeps_bob_out(open_dir):
    gate = open_dir / "gate"
    gate.mkdir(mode=0o700)
    (gate / "sub").mkdir(mode=0o755)
    f = gate / "sub" / "data.txt"
    f.write_text("secret numbers\n")
    os.chmod(f, 0o444)
    alice, bob = _user("sw-alice").pw_uid, _user("sw-bob").pw_uid
    try:
        assert acl.set_gate(gate, {alice}) is True
    except acl.AclUnsupported:
        pytest.skip("this filesystem has no POSIX ACLs")
    assert acl.set_gate(gate, {alice}) is False          # nothing to change
    assert _can_read("sw-alice", f) and not _can_read("sw-bob", f)
    assert mode(gate) == 0o750                            # group bits = the ACL mask
    assert acl.set_gate(gate, {alice, bob}) is True
    assert _can_read("sw-bob", f)
    assert acl.set_gate(gate, set()) is True              # nobody: closed, no ACL
    assert mode(gate) == 0o700 and acl.read_acl(gate) is None
    assert not _can_read("sw-alice", f)
    assert acl.set_gate(gate, None, public=True) is True
    assert mode(gate) == 0o755 and _can_read("sw-bob", f)
    assert acl.set_gate(gate, {alice}) is True
    assert not _can_read("sw-bob", f) and _can_read("sw-alice", f)


def test_gate_without_acl_support_fails_closed(tmp_path, monkeypatch):
    gate = tmp_path / "gate"
    gate.mkdir(mode=0o755)

    def unsupported(*a, **kw):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", unsupported)
    with pytest.raises(acl.AclUnsupported, match="stays closed"):
        acl.set_gate(gate, {4242})
    assert mode(gate) == 0o700


def test_gate_refuses_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "gate")
    with pytest.raises(NotADirectoryError):
        acl.set_gate(tmp_path / "gate", {4242})


def test_two_requests_at_the_same_offset_never_interleave(store):
    import threading
    data = os.urandom(2 * trees.PIECE)
    h, up = sha(data), "9" * 32
    results, barrier = [], threading.Barrier(2)

    def send():
        barrier.wait()
        try:
            results.append(store.receive_chunk(1, up, h, len(data), 0, io.BytesIO(data), len(data)))
        except OffsetMismatch as exc:
            results.append(("resume", exc.offset))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(data) in results   # one completed the object; the other was told where it stood
    assert store.object_path(1, h).read_bytes() == data
