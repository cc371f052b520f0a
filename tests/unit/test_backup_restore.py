"""Backup and restore on SQLite (issue 16 item 6; docs/FAULTS.md §6): a populated Slipway (real
pushes, a git-lfs object, a data version, logs, generated secrets) is backed up through
``slipway backup``, restored through ``slipway restore`` onto an empty data directory, and a
fresh bootstrap on it finds every job, ledger entry, balance, ref, LFS object, data manifest,
log and secret. Then the refusals: a backup dir that is not empty or inside the data dir, a
missing backup, a non-empty target, a database with tables, a damaged file, a newer schema;
an older schema is migrated; a failure half-way leaves nothing behind."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from portal.backup import BackupError, backup, restore
from portal.backup import checks, repositories
from portal.cli import main
from portal.db import upgrade
from tests.support import backup_world
from tests.support.fakes import make_config, make_services

NO_CLIENT_ENV = {"SLIPWAY_URL": None, "SLIPWAY_TOKEN": None, "SLIPWAY_USER": None,
                 "SLIPWAY_CONFIG": None, "SLIPWAY_DATABASE_URL": None}


def cli(*args: str, data_dir: Path, ok: bool = True, **env) -> str:
    saved = os.umask(0o022)   # slipway's main sets the private umask 077: keep ours (module
    os.umask(saved)           # fixtures call this outside the per-test umask guard)
    try:
        r = CliRunner().invoke(main, list(args), env={**NO_CLIENT_ENV,
                                                      "SLIPWAY_DATA_DIR": str(data_dir), **env})
    finally:
        os.umask(saved)
    assert (r.exit_code == 0) == ok, r.output
    return r.output


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A world and its backup made through the CLI (module scope: made once)."""
    tmp = tmp_path_factory.mktemp("backup")
    svc, ids = backup_world.build(tmp / "old")
    before = backup_world.state(svc)
    out = cli("backup", str(tmp / "bk"), data_dir=svc.config.data_dir)
    yield tmp, svc, ids, before, out
    svc.db.dispose()


def test_backup_dir_is_private_and_its_manifest_lists_everything(made):
    tmp, svc, ids, before, out = made
    bk = tmp / "bk"
    assert "backup of" in out and "6 jobs" in out and "2 repositories" in out, out
    assert stat.S_IMODE(bk.stat().st_mode) == 0o700
    manifest = json.loads((bk / "manifest.json").read_text())
    assert manifest["schema_revision"] == checks.head()
    assert manifest["counts"]["jobs"] == len(before["jobs"]) == 6
    assert manifest["counts"]["ledger_entries"] == len(before["ledger"])
    assert manifest["repos"]["nlp/proj"]["refs"] == before["refs"]["nlp/proj.git"]
    assert manifest["repos"]["nlp/proj"]["lfs_objects"] == 1
    assert manifest["repos"]["vision/secret"] == {"bundle": None, "head": "refs/heads/main",
                                                  "refs": {}, "lfs_objects": 0, "lfs_bytes": 0}
    assert manifest["data_versions"] == ["data/nlp/cifar/1.json"]
    assert sorted(manifest["secrets"]) == ["hook_secret", "secret_key"]
    assert set(manifest["job_logs"]) == {str(ids["running"]), str(ids["succeeded"]),
                                         str(ids["vision_job"])}
    for rel, f in manifest["files"].items():
        st = (bk / rel).stat()
        assert stat.S_IMODE(st.st_mode) in (0o600,), rel
        assert st.st_size == f["size"] and len(f["sha256"]) == 64
    assert "database/slipway.sqlite3" in manifest["files"]
    assert f"lfs/nlp/proj/{ids['lfs_oid'][:2]}/{ids['lfs_oid'][2:4]}/{ids['lfs_oid']}" in manifest["files"]
    dm = json.loads((bk / "data/nlp/cifar/1.json").read_text())
    assert [f["path"] for f in dm["files"]] == ["labels.txt", "train/a.bin"]
    # the SQLite copy is a plain rollback-journal file: nothing else appeared next to it
    assert sorted(os.listdir(bk / "database")) == ["slipway.sqlite3"]


def test_restore_onto_an_empty_data_dir_finds_everything(made):
    tmp, svc, ids, before, _ = made
    new = tmp / "new"
    new_data = make_config(new).data_dir
    new_data.mkdir(parents=True)              # an existing but empty data dir is fine
    out = cli("restore", str(tmp / "bk"), data_dir=new_data)
    assert "restored" in out and "1 data versions, manifests verified; 0 with their files" in out
    assert "nlp/cifar:1" in out, out
    assert not [p for p in new.iterdir() if ".restore-" in p.name]
    svc2 = make_services(new, hook_secret="", secret_key="")
    try:
        after = backup_world.state(svc2)
        assert after == before                # jobs, ledger, balances, refs, data, secrets
        assert sum(before["balances"].values()) != 0
        bare = Path(svc2.config.repos_root) / "nlp" / "proj.git"
        subprocess.run(["git", "--git-dir", str(bare), "fsck", "--full"], check=True,
                       capture_output=True)
        hook = bare / "hooks" / "pre-receive"
        assert hook.is_file() and os.access(hook, os.X_OK)
        oid = ids["lfs_oid"]
        lfs = Path(svc2.config.lfs_root) / "nlp" / "proj" / oid[:2] / oid[2:4] / oid
        assert lfs.read_bytes() == backup_world.LFS_DATA
        log = Path(svc2.config.jobs_dir) / str(ids["running"]) / "output.log"
        assert log.read_text() == "epoch 1 loss 0.93\nepoch 2 loss 0.71\n"
        for name in ("hook_secret", "secret_key"):
            assert stat.S_IMODE((svc2.config.data_dir / name).stat().st_mode) == 0o600
        assert stat.S_IMODE(svc2.config.data_dir.stat().st_mode) == 0o711
        assert stat.S_IMODE(Path(svc2.config.repos_root).stat().st_mode) == 0o700
    finally:
        svc2.db.dispose()


def test_backup_refuses_a_dir_that_is_not_empty_or_inside_the_data_dir(made, tmp_path):
    _tmp, svc, _ids, _before, _ = made
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    out = cli("backup", str(full), data_dir=svc.config.data_dir, ok=False)
    assert "exists and is not empty" in out
    assert os.listdir(full) == ["keep.txt"]
    out = cli("backup", str(svc.config.data_dir / "bk"), data_dir=svc.config.data_dir, ok=False)
    assert "inside the data directory" in out and not (svc.config.data_dir / "bk").exists()
    out = cli("--as", "alice", "backup", str(tmp_path / "x"), data_dir=svc.config.data_dir,
              ok=False)
    assert "operator" in out and not (tmp_path / "x").exists()


def test_restore_refusals_change_nothing(made, tmp_path):
    tmp, *_ = made
    bk = tmp / "bk"
    out = cli("restore", str(tmp_path / "nope"), data_dir=tmp_path / "d0", ok=False)
    assert "does not exist" in out and not (tmp_path / "d0").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "slipway.db").write_text("")
    out = cli("restore", str(bk), data_dir=busy, ok=False)
    assert "is not empty" in out and "nothing was changed" in out
    assert os.listdir(busy) == ["slipway.db"]
    # a database elsewhere that already has tables
    db = tmp_path / "other.db"
    upgrade(f"sqlite:///{db}")
    out = cli("restore", str(bk), data_dir=tmp_path / "d1", ok=False,
              SLIPWAY_DATABASE_URL=f"sqlite:///{db}")
    assert "already has" in out and "table(s)" in out and not (tmp_path / "d1").exists()
    assert not list(tmp_path.glob(".*restore-*"))


def _copy_backup(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def test_a_damaged_or_newer_backup_is_refused(made, tmp_path):
    tmp, *_ = made
    bad = _copy_backup(tmp / "bk", tmp_path / "bad")
    bundle = bad / "repos" / "nlp" / "proj.bundle"
    os.chmod(bundle, 0o600)
    data = bytearray(bundle.read_bytes())
    data[-5] ^= 0xFF
    bundle.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="does not verify.*repos/nlp/proj.bundle"):
        restore(make_config(tmp_path / "n1"), bad)
    assert not (tmp_path / "n1").exists()
    newer = _copy_backup(tmp / "bk", tmp_path / "newer")
    m = json.loads((newer / "manifest.json").read_text())
    m["schema_revision"] = "9999"
    (newer / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BackupError, match="'9999' is newer than this Slipway"):
        restore(make_config(tmp_path / "n2"), newer)
    (newer / "manifest.json").unlink()
    with pytest.raises(BackupError, match="no manifest.json"):
        restore(make_config(tmp_path / "n3"), newer)


def test_a_failure_half_way_leaves_nothing(made, tmp_path, monkeypatch):
    tmp, *_ = made

    def broken(*_a, **_k):
        raise BackupError("disk full (simulated)")

    monkeypatch.setattr(repositories, "restore", broken)
    target = make_config(tmp_path / "n")
    with pytest.raises(BackupError, match="simulated"):
        restore(target, tmp / "bk")
    assert not target.data_dir.exists()
    assert not list((tmp_path / "n").glob(".*")), list((tmp_path / "n").iterdir())


def test_an_older_schema_is_migrated_after_loading(tmp_path):
    old = make_config(tmp_path / "old", hook_secret="", secret_key="")
    old.ensure_dirs()
    upgrade(old.database_url, "0012")
    manifest = backup(old, tmp_path / "bk")
    assert manifest["schema_revision"] == "0012"
    summary = restore(make_config(tmp_path / "new"), tmp_path / "bk")
    assert summary["schema_revision"] == "0012" and summary["migrated_to"] == checks.head()
    engine = create_engine(make_config(tmp_path / "new").database_url)
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == checks.head()
    engine.dispose()


def test_pushes_during_the_backup_leave_it_consistent(tmp_path):
    """Commits keep arriving in a repository (objects, then the ref: as receive-pack does) while
    the backup runs: every bundled ref is complete (fsck on restore) and equals the manifest."""
    import threading

    from tests.support.fakes import commit_to_bare, git, seed

    svc = make_services(tmp_path / "old")
    seed(svc)
    bare = Path(svc.config.repos_root) / "nlp" / "proj.git"
    stop = threading.Event()
    pushed: list[str] = []

    def pusher():
        work = tmp_path / "work"
        i = 0
        while not stop.is_set() and i < 200:
            sha = commit_to_bare(bare, work, {f"f{i % 7}.txt": f"{i}\n" * 500}, branch="main")
            git("--git-dir", str(bare), "update-ref", f"refs/heads/b{i % 5}", sha)
            pushed.append(sha)
            i += 1

    t = threading.Thread(target=pusher)
    t.start()
    try:
        while len(pushed) < 3 and t.is_alive():     # the repository is being written to
            t.join(timeout=0.05)
        manifest = backup(svc.config, tmp_path / "bk")
    finally:
        stop.set()
        t.join(timeout=120)
        svc.db.dispose()
    refs = manifest["repos"]["nlp/proj"]["refs"]
    assert refs and set(refs.values()) <= set(pushed)
    summary = restore(make_config(tmp_path / "new"), tmp_path / "bk")
    assert summary["repos"] == 1
    restored = backup_world.refs(make_config(tmp_path / "new").repos_root)["nlp/proj.git"]
    assert {k: v for k, v in restored.items() if k.startswith("refs/heads/")} == \
        {k: v for k, v in refs.items() if k.startswith("refs/heads/")}
