"""Slipway on a REAL PostgreSQL (started for the session by ``tests.pg_server``).

The portal's default database is SQLite; these tests run the parts that depend on the database
engine against PostgreSQL: the migrations from empty (and back), the one-active-job-per-branch
guarantee under concurrent pushes (the same test as on SQLite), write transactions serialised as
BEGIN IMMEDIATE serialises them on SQLite, billing idempotency under concurrent writers (balance
= sum of entries), and pages + API rendering PostgreSQL data (``make_world``).

No skip: if PostgreSQL's server binaries are missing the session fixture fails, naming
``slurm_conf/install-deps``.
"""
from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select

from portal.billing import ledger as billing
from portal import integrations as ig
from portal.app import create_app
from portal.db import Base, Database, LedgerEntry, ReconcilerState, Team, alembic_config, upgrade
from tests.support.fakes import FakeBackend, make_services, seed
from tests.support.web import login, make_world
from tests.pg_server import create_database
from tests.unit import test_portal_launch as launch_tests
from tests.unit import test_web_no_slurm as no_slurm_tests

_n = itertools.count(1)


@pytest.fixture
def pg_db(postgres_url):  # noqa: F811
    """A fresh, empty database on the session's server for this test."""
    return create_database(postgres_url, f"t{next(_n)}")


def _services(tmp_path, url, **kw):
    svc = make_services(tmp_path, database_url=url, **kw)
    assert svc.db.engine.dialect.name == "postgresql"
    return svc


# ------------------------------------------------------------------------------- migrations

def test_migrations_from_empty_match_models_and_go_back(pg_db):
    upgrade(pg_db)
    upgrade(pg_db)  # idempotent
    db = Database(pg_db)
    try:
        with db.engine.connect() as c:
            head = ScriptDirectory.from_config(alembic_config(pg_db)).get_current_head()
            assert head is not None and head >= "0006"  # the fund requests' table is there too
            assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head
            assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
            idx = {r[0]: r[1] for r in c.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")}
            active = idx["uq_jobs_active_branch"]
            assert active.startswith("CREATE UNIQUE INDEX") and "(project_id, branch) WHERE" in active
            for s in ("queued", "pending", "running", "finishing", "unknown"):
                assert f"'{s}'" in active
            assert "'succeeded'" not in active
            assert "(team_id, created_at)" in idx["ix_ledger_entries_team_created"]
            assert "(team_id, amount_micros)" in idx["ix_ledger_entries_team_amount"]
            assert "(project_id, id)" in idx["ix_jobs_project_id_id"]
            assert "(state)" in idx["ix_jobs_state"]
            assert "(resource, kind, to_minute)" in idx["ix_ledger_entries_resource"]
            types = dict(c.exec_driver_sql(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'ledger_entries'").all())
            assert types["amount_micros"] == "bigint" and types["carry"] == "bigint"
        from alembic import command

        command.downgrade(alembic_config(pg_db), "base")
        with db.engine.connect() as c:
            left = set(c.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").scalars())
            assert left <= {"alembic_version"}
        upgrade(pg_db)
    finally:
        db.dispose()


def test_utc_datetimes_and_big_sums_round_trip(pg_db, tmp_path):
    svc = _services(tmp_path, pg_db)
    try:
        ids = seed(svc, funds=None)
        when = datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc)
        with svc.db.transaction() as s:
            for i in range(3):  # 3 × $5e9: far beyond 32-bit micro-dollars
                s.add(LedgerEntry(team_id=ids["team_id"], kind="deposit", amount_micros=5_000_000_000_000_000,
                                  idempotency_key=f"big{i}", created_by="t", created_at=when))
        with svc.db.session() as s:
            assert billing.balance(s, ids["team_id"]) == Decimal("15000000000.000000")
            row = s.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == "big0"))
            assert row.created_at == when and row.created_at.tzinfo is not None
    finally:
        svc.db.dispose()


def test_job_ids_never_reused_and_storage_carry_round_trips(pg_db, tmp_path):
    """PostgreSQL's sequence never hands out a deleted job's id; the storage remainder is stored
    and read back, so the next charge continues from it."""
    from portal.db import Job, Project

    svc = _services(tmp_path, pg_db)
    try:
        ids = seed(svc)
        when = datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc)

        def add_job(branch):
            with svc.db.transaction() as s:
                job = Job(project_id=ids["project_id"], branch=branch, commit_sha="x", state="succeeded",
                          gpu_type="a4000", gpu_count=1, image="python", time_limit_min=60, created_at=when)
                s.add(job)
                s.flush()
                return job.id

        made = [add_job(f"b{i}") for i in range(3)]
        with svc.db.transaction() as s:
            s.delete(s.get(Job, made[-1]))
            assert s.get(Project, ids["project_id"]) is not None
        assert add_job("again") > max(made)

        store = billing.DbLedgerStore(svc.db)
        biller = ig.make_biller(store, svc.config)
        sample = ig.storage_sample("nlp", "repo:nlp/proj", 70 * 10**6, when)
        for minutes in (10, 20, 30):
            biller.tick_storage([sample], when + timedelta(minutes=minutes))
        billed = store.storage_billed("repo:nlp/proj")
        rows = [e for e in store.entries("nlp") if isinstance(e, ig.StorageCharge)]
        assert [r.minutes for r in rows] == [10, 10, 10] and billed.carry == rows[-1].carry != 0
        # 70 MB for 30 minutes at $0.10/GB-month: 4.86 micro-dollars in all (1.62 per tick: 1 + 1 + 1
        # rounded alone), billed as 2 + 1 + 2 = round(4.86) with the carry
        exact = Decimal(70 * 10**6) * 30 * Decimal("0.10") / (10**9 * 43_200)
        assert [r.amount for r in rows] == [Decimal("0.000002"), Decimal("0.000001"), Decimal("0.000002")]
        assert abs(sum(r.amount for r in rows) - exact) <= Decimal("0.0000005")
    finally:
        svc.db.dispose()


# ------------------------------------------------------------------ one job per branch

@pytest.fixture
def launch_env(pg_db, tmp_path):
    """The same (svc, backend, bare, work) as tests/unit/test_portal_launch.py's ``env``."""
    backend = FakeBackend()
    svc = _services(tmp_path, pg_db, backend=backend)
    seed(svc)
    yield svc, backend, svc.config.repos_root / "nlp" / "proj.git", tmp_path / "work"
    svc.db.dispose()


def test_concurrent_pushes_to_one_branch_start_exactly_one_job(launch_env):
    launch_tests.test_concurrent_pushes_to_one_branch_start_exactly_one_job(launch_env)


def test_concurrent_pushes_many_rounds(launch_env):
    """12 threads per round, 3 rounds (a round's job is cancelled before the next)."""
    svc, _backend, bare, work = launch_env
    from tests.support.fakes import commit_to_bare

    for rnd in range(3):
        shas = [commit_to_bare(bare, work, {**launch_tests.EP, "n": f"{rnd}-{i}"}) for i in range(12)]
        barrier = threading.Barrier(len(shas))
        results = []

        def push(sha):
            barrier.wait()
            results.append(launch_tests.pre(svc, sha, branch="hot"))

        threads = [threading.Thread(target=push, args=(sha,)) for sha in shas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r.ok for r in results) == 1, [r.messages for r in results]
        assert all(any("already has job" in m for m in r.messages) for r in results if not r.ok)
        active = [j for j in launch_tests.jobs(svc) if j.state == "queued"]
        assert len(active) == 1
        from portal.jobs import service
        service.request_cancel(svc, active[0].id, by="test")
    assert len(launch_tests.jobs(svc)) == 3


def test_partial_unique_index_is_the_last_line_of_defence(launch_env):
    launch_tests.test_partial_unique_index_is_the_last_line_of_defence(launch_env)


def test_busy_branch_message_and_parallel_branches(launch_env):
    launch_tests.test_busy_branch_message_and_parallel_branches(launch_env)


def test_push_reserves_then_submits(launch_env):
    launch_tests.test_push_reserves_then_submits(launch_env)


# ------------------------------------------------------ write transactions are serialised

def test_write_transactions_run_one_at_a_time(pg_db):
    """Read-then-write inside ``db.transaction()`` never loses an update (as with BEGIN IMMEDIATE),
    and a reader is never blocked by a writer."""
    upgrade(pg_db)
    db = Database(pg_db)
    try:
        with db.transaction() as s:
            s.add(ReconcilerState(key="n", value="0", updated_at=datetime.now(timezone.utc)))
        n_threads, per = 8, 10
        barrier = threading.Barrier(n_threads)
        errors = []

        def bump():
            try:
                barrier.wait()
                for _ in range(per):
                    with db.transaction() as s:
                        row = s.get(ReconcilerState, "n")
                        v = int(row.value)
                        time.sleep(0.001)  # widen the race window
                        row.value = str(v + 1)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=bump) for _ in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with db.session() as s:
            assert s.get(ReconcilerState, "n").value == str(n_threads * per)

        # a writer holding its transaction does not block readers
        held, release = threading.Event(), threading.Event()

        def writer():
            with db.transaction() as s:
                s.get(ReconcilerState, "n").value = "held"
                s.flush()
                held.set()
                release.wait(10)

        w = threading.Thread(target=writer)
        w.start()
        assert held.wait(10)
        t0 = time.monotonic()
        with db.session() as s:
            assert s.scalar(select(ReconcilerState.value).where(ReconcilerState.key == "n")) == str(n_threads * per)
        assert time.monotonic() - t0 < 2
        release.set()
        w.join()
    finally:
        db.dispose()


# ------------------------------------------------------------------------------ billing

def test_ledger_append_is_idempotent_under_concurrent_writers(pg_db, tmp_path):
    svc = _services(tmp_path, pg_db)
    try:
        seed(svc, funds=None)
        at = datetime(2026, 1, 5, 12, tzinfo=timezone.utc)
        deposits = [ig.Deposit(team="nlp", amount=Decimal("10.00"), by="t", at=at, key=f"deposit:{i}")
                    for i in range(5)]
        charges = [ig.GpuCharge(team="nlp", cluster_job_id=str(100 + i // 10), attempt=0, attempt_start=at,
                                from_minute=i % 10, to_minute=i % 10 + 1,
                                gpus=(ig.GpuLine("a4000", 2, Decimal("1.20")),), amount=Decimal("0.040000"))
                   for i in range(40)]
        entries = deposits + charges
        n_writers = 8
        barrier = threading.Barrier(n_writers)
        appended = []
        errors = []

        def writer(k):
            store = billing.DbLedgerStore(svc.db)  # its own store: no shared cache
            mine = entries[k % 5:] + entries[:k % 5]  # each writer in its own order
            try:
                barrier.wait()
                appended.append(sum(store.append_if_absent(e) for e in mine))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sum(appended) == len(entries)  # every key written exactly once, by someone
        store = billing.DbLedgerStore(svc.db)
        assert store.balance("nlp") == Decimal("50.00") - 40 * Decimal("0.04")
        with svc.db.session() as s:
            tid = s.scalar(select(Team.id).where(Team.name == "nlp"))
            n, total = s.execute(select(func.count(), func.sum(LedgerEntry.amount_micros))
                                 .where(LedgerEntry.team_id == tid)).one()
            assert n == len(entries)
            assert billing.balance(s, tid) == billing.from_micros(int(total))
            assert billing.balances(s)[tid] == store.balance("nlp")
            assert billing.job_cost_micros(s, 100) == 10 * 40_000
        assert store.billed_minutes("100", 0) == 10
        assert not store.append_if_absent(charges[0])  # a re-run never double-charges
        assert len(store.entries("nlp")) == len(entries)
    finally:
        svc.db.dispose()


# ------------------------------------------------------------------------ pages and API

@pytest.fixture
def pg_world(pg_db, tmp_path):
    no_slurm_tests.ExplodingBackend.calls.clear()
    svc = _services(tmp_path, pg_db, backend=no_slurm_tests.ExplodingBackend())
    ids = make_world(svc)
    yield svc, create_app(svc), ids
    svc.db.dispose()


def test_pages_and_api_render_postgres_data(pg_world):
    svc, app, ids = pg_world
    c = app.test_client()
    assert login(c, "alice").status_code == 302
    r = c.get("/teams/nlp")
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and "proj" in body and "$24.25" in body
    r = c.get("/jobs?team=nlp")
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and "exp-1" in body and "exp-2" in body and "hidden-branch" not in body
    r = c.get("/teams/nlp/billing")
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and 'id="chart-spending"' in body  # the spending plot: to_char/date_trunc on PostgreSQL
    assert c.get("/teams/vision").status_code == 404

    api = app.test_client()
    h = {"Authorization": f"Bearer {ids['alice_token']}"}
    teams = api.get("/api/teams", headers=h).get_json()["teams"]
    assert [(t["name"], t["balance"], t["projects"]) for t in teams] == [("nlp", "24.250000", 1)]
    jobs = api.get("/api/jobs?team=nlp&state=active", headers=h).get_json()["jobs"]
    assert sorted(j["branch"] for j in jobs) == ["exp-1", "exp-2"]
    r = api.post("/api/teams/nlp/funds", headers=h, json={"amount": "5.25"})
    assert r.status_code == 403  # an owner requests funds; cluster administrators add them
    r = api.post("/api/teams/nlp/funds", headers={"Authorization": f"Bearer {ids['dave_token']}"},
                 json={"amount": "5.25"})
    assert r.status_code == 201 and r.get_json()["balance"] == "29.500000"
    assert no_slurm_tests.ExplodingBackend.calls == []


def test_every_get_route_renders_without_slurm(pg_world):
    no_slurm_tests.test_every_get_route_renders_without_slurm(pg_world)



# ----------------------------------------------- running balance = sum of ledger entries

@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request, tmp_path):
    """The running-balance triggers exist per dialect: check both (SQLite needs no server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'balances.db'}"
    return request.getfixturevalue("pg_db")


def test_running_balance_is_always_the_sum_of_entries(any_db_url, tmp_path):
    from sqlalchemy import delete, insert, text, update

    from portal.db import alembic_config
    from alembic import command

    # entries written before migration 0004 are summed into the running balance by it
    command.upgrade(alembic_config(any_db_url), "0003")
    db = Database(any_db_url)
    at = datetime(2026, 1, 5, 12, tzinfo=timezone.utc)
    try:
        with db.transaction() as s:
            # the 0003 schema (no later columns): plain SQL, as a writer of that time did
            for n in ("a", "b", "c"):
                s.execute(text("INSERT INTO teams (name, personal, created_at, fairshare) "
                               "VALUES (:n, false, :at, 100)"), {"n": n, "at": at.replace(tzinfo=None)})
            a, b, c = (s.scalar(text("SELECT id FROM teams WHERE name = :n"), {"n": n})
                       for n in ("a", "b", "c"))
            s.execute(text("INSERT INTO ledger_entries (team_id, kind, amount_micros, idempotency_key, "
                           "created_by, created_at) VALUES (:t, 'deposit', 7000000, 'old', 't', :at)"),
                      {"t": a, "at": at.replace(tzinfo=None)})
        upgrade(any_db_url)

        def check():
            with db.session() as s:
                assert billing.balance_mismatches(s) == {}
                for tid in (a, b, c):
                    assert billing.balance(s, tid) == billing.ledger_sum(s, tid)
                return {tid: billing.balance(s, tid) for tid in (a, b, c)}

        assert check()[a] == Decimal("7")
        store = billing.DbLedgerStore(db)
        store.append_if_absent(ig.Deposit(team="b", amount=Decimal("25.00"), by="t", at=at, key="d1"))
        store.append_if_absent(ig.Deposit(team="b", amount=Decimal("25.00"), by="t", at=at, key="d1"))
        assert check()[b] == Decimal("25")
        with db.transaction() as s:  # ORM, Core bulk and raw SQL writers are all covered
            s.add(LedgerEntry(team_id=c, kind="adjustment", amount_micros=-1_500_000, idempotency_key="x1",
                              created_by="t", created_at=at))
            s.execute(insert(LedgerEntry), [
                {"team_id": a if i % 2 else c, "kind": "gpu", "amount_micros": -(i + 1) * 1000,
                 "idempotency_key": f"bulk{i}", "created_at": at} for i in range(500)])
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO ledger_entries (team_id, kind, amount_micros, idempotency_key, created_at) "
                f"VALUES ({b}, 'adjustment', 333, 'raw', '2026-01-05 12:00:00')")
        check()
        with db.transaction() as s:  # corrections: amount changed, entry moved, entry deleted
            s.execute(update(LedgerEntry).where(LedgerEntry.idempotency_key == "x1").values(amount_micros=-2_000_000))
            s.execute(update(LedgerEntry).where(LedgerEntry.idempotency_key == "raw").values(team_id=a))
            s.execute(delete(LedgerEntry).where(LedgerEntry.idempotency_key.like("bulk1%")))
        check()
        rounding = [ig.GpuCharge(team="c", cluster_job_id="9", attempt=0, attempt_start=at, from_minute=m,
                                 to_minute=m + 1, gpus=(ig.GpuLine("a4000", 1, Decimal("0.50")),),
                                 amount=Decimal("0.008333")) for m in range(30)]
        threads = [threading.Thread(target=lambda: [billing.DbLedgerStore(db).append_if_absent(e)
                                                    for e in rounding]) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check()
        with db.transaction() as s:  # a deleted team takes its entries and running balance along
            s.delete(s.get(Team, c))
        with db.session() as s:
            assert billing.balance_mismatches(s) == {}
            assert billing.balance(s, c) == Decimal("0") and c not in billing.balances(s)
    finally:
        db.dispose()
