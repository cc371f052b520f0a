"""A job's /output on disk (portal/data/outputs_fs.py): made empty or as a copy, owned by the
job's user and writable; sealed read-only and root's, with nothing followed and no shared inode
touched; the store's staging dir left clean."""
from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from portal.data import trees
from portal.data.outputs_fs import make_output, seal_output
from portal.data.store import DataStore


def mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def store(tmp_path):
    return DataStore(tmp_path / "datastore", chown=False)


@pytest.fixture
def jobdir(tmp_path):
    d = tmp_path / "jobs" / "7"
    d.mkdir(parents=True)
    return d


def staging_empty(store: DataStore) -> bool:
    return os.listdir(store.staging) == []


def me():
    return os.getuid(), os.getgid()


def test_make_output_empty(store, jobdir):
    out = jobdir / "output"
    make_output(store, out, *me(), None, False)
    assert out.is_dir() and not out.is_symlink() and os.listdir(out) == []
    assert mode(out) == 0o700
    assert staging_empty(store)


def test_make_output_replaces_an_empty_dir_and_a_symlink_without_following(store, jobdir, tmp_path):
    out = jobdir / "output"
    out.mkdir()
    make_output(store, out, *me(), None, False)
    assert out.is_dir()
    os.rmdir(out)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    os.symlink(victim, out)
    make_output(store, out, *me(), None, False)
    assert out.is_dir() and not out.is_symlink()
    assert (victim / "keep.txt").read_text() == "mine"


def _live(out: Path) -> None:
    (out / "ckpt").mkdir(parents=True)
    (out / "ckpt" / "model.bin").write_bytes(b"\x00weights" * 1000)
    (out / "train.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(out / "train.sh", 0o775)
    (out / "log.txt").write_text("epoch 1\n")


def test_seal_output_removes_specials_copies_shared_inodes_and_freezes(store, jobdir, tmp_path):
    out = jobdir / "output"
    out.mkdir()
    _live(out)
    secret = tmp_path / "secret"
    secret.write_text("root's secret")
    os.symlink(secret, out / "leak")
    os.symlink(tmp_path, out / "ckpt" / "up")
    os.mkfifo(out / "fifo")
    shared = tmp_path / "shared.txt"      # a file the job hard-linked from elsewhere
    shared.write_text("elsewhere")
    os.chmod(shared, 0o640)
    os.link(shared, out / "hard.txt")
    (out / "bad\\name").write_text("x")   # a name a version could not hold
    dest = store.outputs_root / "3" / "7"

    size, files, skipped = seal_output(store, out, dest, False)

    assert not os.path.lexists(out)
    assert sorted(skipped) == ["bad\\name", "ckpt/up", "fifo", "leak"]
    assert trees.list_tree(dest) == [("ckpt/model.bin", 8000), ("hard.txt", 9),
                                     ("log.txt", 8), ("train.sh", 18)]
    assert (size, files) == (8000 + 9 + 8 + 18, 4)
    for d in (dest, dest / "ckpt"):
        assert mode(d) == 0o555
    assert mode(dest / "log.txt") == 0o444 and mode(dest / "train.sh") == 0o555
    # the shared inode was copied, not changed
    assert os.lstat(dest / "hard.txt").st_ino != os.lstat(shared).st_ino
    assert mode(shared) == 0o640 and os.lstat(shared).st_nlink == 1
    assert secret.read_text() == "root's secret" and mode(secret) != 0o444
    assert mode(dest.parent) == 0o700        # the team's outputs gate, created closed
    assert staging_empty(store)


def test_seal_missing_or_non_directory_output_is_an_empty_kept_output(store, jobdir, tmp_path):
    dest = store.outputs_root / "3" / "8"
    assert seal_output(store, jobdir / "output", dest, False) == (0, 0, [])
    assert dest.is_dir() and os.listdir(dest) == [] and mode(dest) == 0o555
    os.symlink(tmp_path, jobdir / "output")     # /output replaced by a symlink
    dest2 = store.outputs_root / "3" / "9"
    assert seal_output(store, jobdir / "output", dest2, False)[:2] == (0, 0)
    assert os.listdir(dest2) == []


def test_seal_again_after_a_crash_answers_the_same(store, jobdir):
    out = jobdir / "output"
    out.mkdir()
    (out / "a").write_text("12345")
    dest = store.outputs_root / "3" / "7"
    first = seal_output(store, out, dest, False)
    assert seal_output(store, out, dest, False) == first == (5, 1, [])
    out.mkdir()
    with pytest.raises(FileExistsError):
        seal_output(store, out, dest, False)


def test_continue_copies_a_kept_output_and_never_changes_it(store, jobdir, tmp_path):
    out = jobdir / "output"
    out.mkdir()
    _live(out)
    kept = store.outputs_root / "3" / "7"
    seal_output(store, out, kept, False)
    before = {p: (kept / p).read_bytes() for p, _n in trees.list_tree(kept)}
    new = tmp_path / "jobs" / "8" / "output"
    new.parent.mkdir()
    make_output(store, new, *me(), kept, False)
    assert {p: (new / p).read_bytes() for p, _n in trees.list_tree(new)} == before
    assert mode(new) == 0o700 and mode(new / "ckpt") == 0o700
    assert mode(new / "log.txt") == 0o600 and mode(new / "train.sh") == 0o700
    (new / "log.txt").write_text("epoch 2\n")          # the copy is writable
    assert (kept / "log.txt").read_bytes() == before["log.txt"]
    assert os.lstat(new / "log.txt").st_ino != os.lstat(kept / "log.txt").st_ino
    assert mode(kept / "log.txt") == 0o444
    assert staging_empty(store)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_as_root_the_live_output_is_the_users_and_the_kept_one_roots(store, jobdir):
    try:
        pw = pwd.getpwnam("sw-alice")
    except KeyError:
        pytest.skip("no Unix user sw-alice")
    out = jobdir / "output"
    make_output(store, out, pw.pw_uid, pw.pw_gid, None, True)
    st = os.lstat(out)
    assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)
    (out / "f").write_text("data")
    os.chown(out / "f", pw.pw_uid, pw.pw_gid)
    dest = store.outputs_root / "3" / "7"
    seal_output(store, out, dest, True)
    for p in (dest, dest / "f"):
        st = os.lstat(p)
        assert (st.st_uid, st.st_gid) == (0, 0)
    # a continue hands the copy back to the user
    new = jobdir.parent / "9" / "output"
    new.parent.mkdir()
    make_output(store, new, pw.pw_uid, pw.pw_gid, dest, True)
    assert os.lstat(new / "f").st_uid == pw.pw_uid and mode(new / "f") == 0o600
