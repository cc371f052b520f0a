"""Schema comes from the Alembic migration and matches the models; SQLite is WAL + busy_timeout."""
from __future__ import annotations

from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from portal.db import Base, Database, from_micros, to_micros, upgrade


def test_migration_matches_models_and_sqlite_settings(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    upgrade(url)  # idempotent
    db = Database(url)
    with db.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        idx = c.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name='uq_jobs_active_branch'").scalar()
        assert "UNIQUE" in idx and "WHERE state IN ('queued', 'pending', 'running', 'finishing', 'unknown')" in idx
    db.dispose()


def test_money_is_integer_micro_dollars():
    assert to_micros(Decimal("25.00")) == 25_000_000
    assert to_micros("-0.166667") == -166_667
    assert from_micros(24_733_333) == Decimal("24.733333")
    with pytest.raises(ValueError):
        to_micros(Decimal("0.0000001"))


# ------------------------------------------------------------------ ids billing keys on never repeat

from datetime import datetime, timezone  # noqa: E402

from sqlalchemy import select  # noqa: E402
from sqlalchemy.exc import IntegrityError  # noqa: E402

from portal.billing import ledger as billing  # noqa: E402
from portal.db import Job, LedgerEntry, Project, Team, TeamBalance  # noqa: E402

T = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
_JOB_COLS = ("project_id, branch, commit_sha, state, gpu_type, gpu_count, image, time_limit_min, "
             "created_at, attempt, cost_micros")


def _raw_job(c, jid, branch, state="succeeded"):
    c.exec_driver_sql(f"INSERT INTO jobs (id, {_JOB_COLS}) VALUES "
                      f"({jid}, 1, '{branch}', 'x', '{state}', 'a4000', 1, 'python', 60, '2026-01-05', 0, 0)")


def test_upgrade_keeps_jobs_and_seeds_ids_past_every_id_the_ledger_has_seen(tmp_path):
    """Upgrading a 0004 database: jobs keep their rows, the partial unique index and the balance
    triggers survive the rebuild, and the next job id is above every id a job ever had — also
    those only the ledger remembers (a deleted project's jobs)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0004")
    db = Database(url)
    with db.engine.begin() as c:
        c.exec_driver_sql("INSERT INTO teams (id, name, personal, created_at, fairshare) VALUES (1, 'nlp', 0, '2026-01-05', 100)")
        c.exec_driver_sql("INSERT INTO projects (id, team_id, name, gpu_type, gpu_count, image, time_limit_min, created_at) "
                          "VALUES (1, 1, 'p', 'a4000', 1, 'python', 60, '2026-01-05')")
        for jid in (1, 2, 3):
            _raw_job(c, jid, f"b{jid}")
        _raw_job(c, 4, "live", state="running")
        # jobs 5..9 were deleted with their project; their charges stay (the highest: job 9)
        c.exec_driver_sql("INSERT INTO ledger_entries (team_id, kind, amount_micros, idempotency_key, job_id, "
                          "resource, attempt, from_minute, to_minute, created_at) VALUES "
                          "(1, 'gpu', -5, 'gpu:9:0:0', 9, '9', 0, 0, 3, '2026-01-05')")
    db.dispose()
    upgrade(url)
    db = Database(url)
    with db.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
        names = {r[0] for r in c.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='trigger'")}
        assert names == {"trg_ledger_balance_insert", "trg_ledger_balance_delete", "trg_ledger_balance_update"}
    with db.transaction() as s:
        assert [j.id for j in s.scalars(select(Job).order_by(Job.id))] == [1, 2, 3, 4]
        assert s.get(Job, 4).state == "running" and s.get(Job, 4).balance_hold_at is None
        new = Job(project_id=1, branch="b-new", commit_sha="y", state="queued", gpu_type="a4000",
                  gpu_count=1, image="python", time_limit_min=60, created_at=T)
        s.add(new)
        s.flush()
        assert new.id == 10
        s.add(LedgerEntry(team_id=1, kind="deposit", amount_micros=7, idempotency_key="d", created_at=T))
    with db.session() as s:  # the triggers still keep the balance
        assert s.get(TeamBalance, 1).balance_micros == 2 and billing.balance_mismatches(s) == {}
    with pytest.raises(IntegrityError):  # one active job per branch, still
        with db.transaction() as s:
            s.add(Job(project_id=1, branch="live", commit_sha="z", state="pending", gpu_type="a4000",
                      gpu_count=1, image="python", time_limit_min=60, created_at=T))
    db.dispose()


def test_deleted_jobs_ids_are_never_handed_out_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    db = Database(url)

    def add_job(s, branch):
        job = Job(project_id=1, branch=branch, commit_sha="x", state="succeeded", gpu_type="a4000",
                  gpu_count=1, image="python", time_limit_min=60, created_at=T)
        s.add(job)
        s.flush()
        return job.id

    with db.transaction() as s:
        s.add(Team(id=1, name="nlp", created_at=T))
        s.add(Project(id=1, team_id=1, name="p", gpu_type="a4000", gpu_count=1, image="python", created_at=T))
        s.flush()
        ids = [add_job(s, f"b{i}") for i in range(5)]
    with db.transaction() as s:
        for jid in ids[2:]:
            s.delete(s.get(Job, jid))
    with db.transaction() as s:
        assert add_job(s, "again") == max(ids) + 1
    # and a whole project deleted (ON DELETE CASCADE) leaves no id to reuse either
    with db.transaction() as s:
        s.delete(s.get(Project, 1))
    with db.transaction() as s:
        s.add(Project(id=2, team_id=1, name="p", gpu_type="a4000", gpu_count=1, image="python", created_at=T))
        s.flush()
        job = Job(project_id=2, branch="b0", commit_sha="x", state="queued", gpu_type="a4000",
                  gpu_count=1, image="python", time_limit_min=60, created_at=T)
        s.add(job)
        s.flush()
        assert job.id == max(ids) + 2
    db.dispose()


def test_ledger_store_charges_the_team_that_has_the_name_now(tmp_path):
    """A long-lived store (the reconciler's) must not remember a deleted team's id: the name's new
    holder gets its charges, and nobody else does."""
    from accounting.entries import Deposit

    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    db = Database(url)
    store = billing.DbLedgerStore(db)
    with db.transaction() as s:
        s.add(Team(id=1, name="lab", created_at=T))
    assert store.append_if_absent(Deposit(team="lab", amount=Decimal("1"), by="t", at=T))
    with db.transaction() as s:
        s.delete(s.get(Team, 1))   # its ledger goes with it (ON DELETE CASCADE)
    with db.transaction() as s:
        s.add(Team(id=1, name="other", created_at=T))  # the old id, handed to another team
        s.add(Team(id=2, name="lab", created_at=T))
    assert store.append_if_absent(Deposit(team="lab", amount=Decimal("2"), by="t", at=T))
    assert store.balance("lab") == Decimal("2") and store.balance("other") == 0
    db.dispose()
