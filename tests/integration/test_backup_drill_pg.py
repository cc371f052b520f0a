"""Backup and restore drill on a REAL PostgreSQL (issue 16 item 6; docs/FAULTS.md §6).

A populated Slipway on PostgreSQL (real pushes through the push hooks, a git-lfs object, a data
version, logs, secrets) is backed up with ``slipway backup`` WHILE a writer keeps appending
ledger entries (pg_dump runs on a snapshot exported from the transaction that reads the counts:
the backup is one consistent state), restored with ``slipway restore`` onto an empty data
directory and an empty database, and a fresh bootstrap finds every job, ledger entry, balance,
branch and ref, LFS object, data manifest and secret. A second restore into the now-populated
database is refused; a restore failing after ``pg_restore`` drops what it loaded.
"""
from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from portal.backup import BackupError, database, repositories, restore
from portal.billing import ledger as billing
from portal.cli import main
from portal.db import utcnow
from tests.pg_server import create_database
from tests.support import backup_world
from tests.support.fakes import make_config, make_services

pytestmark = [pytest.mark.slow]

NO_CLIENT_ENV = {"SLIPWAY_URL": None, "SLIPWAY_TOKEN": None, "SLIPWAY_USER": None,
                 "SLIPWAY_CONFIG": None}


def cli(*args: str, data_dir: Path, url: str, ok: bool = True) -> str:
    r = CliRunner().invoke(main, list(args), env={**NO_CLIENT_ENV, "SLIPWAY_DATA_DIR": str(data_dir),
                                                  "SLIPWAY_DATABASE_URL": url})
    assert (r.exit_code == 0) == ok, r.output
    return r.output


def test_backup_while_writing_then_restore_onto_empty_postgres(postgres_url, tmp_path):  # noqa: F811
    src = create_database(postgres_url, "drill_src")
    svc, ids = backup_world.build(tmp_path / "old", database_url=src)
    before = backup_world.state(svc)
    stop = threading.Event()
    written: list[int] = []

    def writer():      # Slipway keeps billing while the backup runs
        i = 0
        while not stop.is_set() and i < 500:
            billing.add_funds(svc.db, "nlp", "0.01", by="drill", note=f"drill {i}",
                              now=utcnow() + timedelta(microseconds=i))
            i += 1
            written.append(i)

    t = threading.Thread(target=writer)
    t.start()
    try:
        out = cli("backup", str(tmp_path / "bk"), data_dir=svc.config.data_dir, url=src)
    finally:
        stop.set()
        t.join(timeout=60)
    assert "(postgresql)" in out and "6 jobs" in out, out

    dst = create_database(postgres_url, "drill_dst")
    new_data = make_config(tmp_path / "new").data_dir
    out = cli("restore", str(tmp_path / "bk"), data_dir=new_data, url=dst)
    assert "every balance equals its ledger" in out and "nlp/cifar:1" in out, out
    svc2 = make_services(tmp_path / "new", database_url=dst, hook_secret="", secret_key="")
    try:
        assert svc2.db.engine.dialect.name == "postgresql"
        after = backup_world.state(svc2)
        drill = [e for e in after["ledger"] if e not in before["ledger"]]
        # everything from before the backup, plus a consistent prefix of the writer's entries
        assert after["ledger"][:len(before["ledger"])] == before["ledger"]
        assert all(kind == "deposit" and amount == 10_000 for _k, _t, amount, kind, _j in drill)
        nlp_before = before["balances"]["nlp"]
        assert after["balances"]["nlp"] == nlp_before + 10_000 * len(drill)
        assert {k: v for k, v in after.items() if k not in ("ledger", "balances")} == \
            {k: v for k, v in before.items() if k not in ("ledger", "balances")}
        assert after["balances"]["vision"] == before["balances"]["vision"]
        oid = ids["lfs_oid"]
        lfs = Path(svc2.config.lfs_root) / "nlp" / "proj" / oid[:2] / oid[2:4] / oid
        assert lfs.read_bytes() == backup_world.LFS_DATA
        assert after["refs"]["nlp/proj.git"]["refs/heads/push-a"] == ids["sha_a"]
        # the restored balance triggers keep working: a deposit moves the balance
        billing.add_funds(svc2.db, "vision", "1.00", by="drill")
        assert backup_world.state(svc2)["balances"]["vision"] == \
            before["balances"]["vision"] + 1_000_000
        print(f"writer: {len(written)} deposits during the backup, {len(drill)} in it")
    finally:
        svc2.db.dispose()
        svc.db.dispose()

    # the restored database now has tables: a second restore is refused, nothing touched
    out = cli("restore", str(tmp_path / "bk"), data_dir=tmp_path / "again", url=dst, ok=False)
    assert "already has" in out and not (tmp_path / "again").exists()


def test_a_failed_restore_drops_what_pg_restore_loaded(postgres_url, tmp_path, monkeypatch):  # noqa: F811
    src = create_database(postgres_url, "drill_src2")
    svc, _ids = backup_world.build(tmp_path / "old", database_url=src)
    try:
        cli("backup", str(tmp_path / "bk"), data_dir=svc.config.data_dir, url=src)
    finally:
        svc.db.dispose()
    dst = create_database(postgres_url, "drill_dst2")

    def broken(*_a, **_k):
        raise BackupError("repositories disk full (simulated)")

    monkeypatch.setattr(repositories, "restore", broken)
    target = make_config(tmp_path / "new", database_url=dst)
    with pytest.raises(BackupError, match="simulated"):
        restore(target, tmp_path / "bk")
    assert database.existing_tables(dst) == []
    assert not target.data_dir.exists() and not list((tmp_path / "new").glob(".*"))
    monkeypatch.undo()
    summary = restore(target, tmp_path / "bk")       # the same target is still usable
    assert summary["counts"]["jobs"] == 6
