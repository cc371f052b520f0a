"""Issue 9 item 2: what is Slipway's alone on disk is created private (0600 files, 0700 dirs),
the way to a job's own directory is traverse-only (0711), and an older install's looser modes are
tightened on start. Every test runs under the usual umask 022, so modes come from Slipway, not
from a lucky umask."""
from __future__ import annotations

import io
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from git_gateway import repos
from git_gateway.lfs import LfsStore
from portal import integrations, private_files
from tests.support.fakes import FakeBackend, commit_to_bare, hook_payload, make_services, seed


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture(autouse=True)
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _tree_modes(root: Path) -> dict[str, int]:
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(d) / n
            out[str(p.relative_to(root))] = mode(p)
    return out


def test_fresh_data_dir_is_private(tmp_path):
    svc = make_services(tmp_path, hook_secret="", secret_key="")
    data = svc.config.data_dir
    seed(svc)  # writes: SQLite makes its -wal and -shm files
    assert (data / "slipway.db-wal").exists() and (data / "slipway.db-shm").exists()
    assert mode(data) == 0o711 and mode(svc.config.jobs_dir) == 0o711
    assert mode(svc.config.repos_root) == 0o700 and mode(svc.config.lfs_root) == 0o700
    for name in ("slipway.db", "slipway.db-wal", "slipway.db-shm", "hook_secret", "secret_key"):
        assert mode(data / name) == 0o600, name
    svc.db.dispose()


def test_lock_files_are_private(tmp_path, monkeypatch):
    from portal.jobs.reconciler import leader
    from portal.teams import slurm_accounts
    import slurm_bridge.sync

    svc = make_services(tmp_path)
    lease = leader.make_lease(svc)   # SQLite: the reconciler's lease is an flock on this file
    assert lease.try_acquire()
    lease.release()
    monkeypatch.setattr(slurm_bridge.sync, "sync", lambda *a, **k: [])
    slurm_accounts.sync_accounts(svc)
    assert mode(svc.config.data_dir / "reconciler.lock") == 0o600
    assert mode(svc.config.data_dir / "slurm-accounts.lock") == 0o600
    svc.db.dispose()


def test_upgrade_from_loose_modes_ends_private(tmp_path):
    data = tmp_path / "var"
    (data / "jobs" / "7").mkdir(parents=True)
    (data / "repos").mkdir()
    (data / "lfs").mkdir()
    (data / "node").mkdir()
    db = data / "slipway.db"
    con = sqlite3.connect(db)  # what an older Slipway left: a WAL database, all 0644 in 0755
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    for name in ("hook_secret", "secret_key"):
        (data / name).write_text("old-secret\n")
    for name in ("reconciler.lock", "slurm-accounts.lock", "slipway.db-journal"):
        (data / name).write_text("")
    for p in (data, data / "jobs", data / "jobs" / "7", data / "repos", data / "lfs", data / "node"):
        p.chmod(0o755)
    for p in data.iterdir():
        if p.is_file():
            p.chmod(0o644)
    assert mode(data / "slipway.db-wal") == 0o644
    con.close()

    svc = make_services(tmp_path, hook_secret="", secret_key="")
    assert svc.config.hook_secret == "old-secret"  # kept, only closed
    assert mode(data) == 0o711 and mode(data / "jobs") == 0o711 and mode(data / "node") == 0o711
    assert mode(data / "jobs" / "7") == 0o700
    assert mode(data / "repos") == 0o700 and mode(data / "lfs") == 0o700
    for p in data.iterdir():
        if p.is_file():
            assert mode(p) == 0o600, p.name
    svc.db.dispose()


def test_sqlite_file_is_created_0600_before_sqlite_opens_it(tmp_path):
    from portal.db import Database

    path = tmp_path / "elsewhere" / "my.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert all(mode(p) == 0o600 for p in path.parent.iterdir())
    db.dispose()


def test_repositories_and_lfs_objects_are_the_servers_alone(tmp_path):
    root = tmp_path / "repos"
    path = repos.create_repo(root, "nlp", "proj")
    assert mode(root) == 0o700 and mode(root / "nlp") == 0o700 and mode(path) == 0o700
    # git ran under umask 077 (the hooks are executable; nobody else can reach them anyway)
    loose = {k: m for k, m in _tree_modes(path).items()
             if m & 0o077 and k not in ("hooks/pre-receive", "hooks/post-receive")}
    assert not loose, loose

    store = LfsStore(tmp_path / "lfs")
    data = b"x" * 1000
    import hashlib

    oid = hashlib.sha256(data).hexdigest()
    store.put_stream("nlp", "proj", oid, io.BytesIO(data), len(data))
    obj = store.object_path("nlp", "proj", oid)
    assert mode(obj) == 0o400
    for p in (obj.parent, obj.parent.parent, store.project_dir("nlp", "proj"),
              store.project_dir("nlp", "proj") / "tmp", tmp_path / "lfs" / "nlp"):
        assert mode(p) == 0o700, p


def test_job_dir_is_created_0700_and_node_dir_is_traverse_only(tmp_path):
    from portal.jobs import push

    svc = make_services(tmp_path)
    seed(svc)
    bare = svc.config.repos_root / "nlp" / "proj.git"
    sha = commit_to_bare(bare, tmp_path / "work", {"slipway-entrypoint.sh": "echo hi\n"})
    payload = [("refs/heads/exp-1", "0" * 40, sha)]
    assert push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice", payload)).ok
    assert push.handle_post_receive(svc, hook_payload("post-receive", "nlp/proj", "alice", payload)).ok
    [job_dir] = list(svc.config.jobs_dir.iterdir())
    assert mode(job_dir) == 0o700 and mode(job_dir / "spec.json") == 0o600

    dest = integrations.node_runtime(svc.config)
    assert mode(svc.config.data_dir / "node") == 0o711
    assert mode(dest) == 0o755 and mode(dest / "git_gateway") == 0o755
    assert mode(dest / "git_gateway" / "node") == 0o755
    files = list((dest / "git_gateway").rglob("*.py"))
    assert files and all(mode(p) == 0o644 for p in files)
    svc.db.dispose()


def test_server_and_cli_run_under_a_private_umask(tmp_path):
    from click.testing import CliRunner

    from portal.app import create_app
    from portal.cli import Ctx, main

    svc = make_services(tmp_path, backend=FakeBackend())
    os.umask(0o022)
    create_app(svc)
    assert os.umask(0o022) == 0o077
    CliRunner().invoke(main, ["user", "list"], obj=Ctx(services=svc), catch_exceptions=False)
    assert os.umask(0o022) == 0o077
    svc.db.dispose()


def test_tighten_leaves_what_it_may_not_change_and_skips_missing(tmp_path):
    assert private_files.tighten(tmp_path / "missing", 0o700) is False
    f = tmp_path / "f"
    f.write_text("x")
    f.chmod(0o640)
    assert private_files.tighten_file(f) and mode(f) == 0o600
    f.chmod(0o700)  # an executable private file keeps its x bit
    assert private_files.tighten_file(f) is False and mode(f) == 0o700


def test_closed_ancestor_finds_what_job_users_cannot_traverse():
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp is traversable; pytest's tmp root is not
    try:
        d = top / "a" / "b" / "jobs"
        d.mkdir(parents=True)
        for p in (top, top / "a", top / "a" / "b", d):
            p.chmod(0o711)
        assert private_files.closed_ancestor(d) is None
        (top / "a").chmod(0o700)  # e.g. a checkout under /root
        assert private_files.closed_ancestor(d) == top / "a"
    finally:
        shutil.rmtree(top)
