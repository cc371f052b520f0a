"""Slipway on two servers (issue 16 item 4, docs/FAULTS.md §4), live: one PostgreSQL, one data
directory, two ``slipway serve`` processes behind one address (tests/support/failover_proxy.py,
the site's load balancer). Both serve pages, the API and git; exactly one reconciler is active
(a PostgreSQL advisory lock); ``kill -9`` of the active server hands the reconciler over to the
other within two ticks; the job running across the kill finishes, is final, and the ledger
equals sacct: no minute billed twice, none missed."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from portal.jobs.leadership import LEADER_KEY
from portal.jobs.reconciler.leader import PgAdvisoryLease
from portal.monitoring.alarm_store import TICK_KEY
from tests.pg_server import create_database
from tests.support.failover_proxy import FailoverProxy
from tests.support.harness import another_server, cleanup, job_id_from_push, start_slipway, \
    write_project

INTERVAL = 1.0   # SLIPWAY_RECONCILE_INTERVAL of both servers (the harness's)
SLEEPER = """#!/bin/bash
echo started > started.txt
for i in $(seq 1 {ticks}); do echo "tick $i" >> progress.txt; sleep 1; done
echo done > done.txt
"""


@pytest.fixture
def servers(slurm_cluster, postgres_url):  # noqa: F811 — postgres_url: tests/pg_server.py
    db_url = create_database(postgres_url, "two_servers_" + secrets.token_hex(3))
    proxy = FailoverProxy()
    a = start_slipway(slurm_cluster.env, SLIPWAY_DATABASE_URL=db_url, SLIPWAY_BASE_URL=proxy.url,
                      SLIPWAY_GPU_RATES="a4000:0.50,a6000:1.00",
                      SLIPWAY_RECONCILE_INTERVAL=str(INTERVAL))
    b = None
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        proxy.backends.append(int(a.url.rsplit(":", 1)[1]))
        _wait_for(lambda: (_leader(engine) or {}).get("pid") == a.proc.pid, "server A leads", 30)
        b = another_server(a)   # started second: it stands by
        proxy.backends.append(int(b.url.rsplit(":", 1)[1]))
        yield a, b, engine, proxy
    finally:
        if b is not None:
            b.stop()
        engine.dispose()
        proxy.close()
        cleanup(a, slurm_cluster.env)


def _wait_for(cond, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def _state(engine, key: str) -> dict | None:
    with engine.connect() as c:
        raw = c.execute(text("SELECT value FROM reconciler_state WHERE key = :k"), {"k": key}).scalar()
    return json.loads(raw) if raw else None


def _leader(engine) -> dict | None:
    return _state(engine, LEADER_KEY)


def _last_tick_end(engine) -> datetime | None:
    d = _state(engine, TICK_KEY)
    return datetime.fromisoformat(d["end"]) if d and d.get("end") else None


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


def _projects(body: bytes) -> set[tuple[str, str]]:
    d = json.loads(body)
    return {(p["team"], p["name"]) for p in (d["projects"] if isinstance(d, dict) else d)}


def _push(sw, tmp_path, branch: str, entrypoint: str) -> int:
    work = tmp_path / branch
    sw.git("clone", "-q", sw.remote("carol", "carol", "p"), str(work))
    sw.git("checkout", "-B", branch, cwd=work)
    write_project(work, entrypoint)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", branch, cwd=work)
    return job_id_from_push(sw.git("push", "origin", branch, cwd=work).stderr)


def _gpu_rows(sw) -> list[dict]:
    rows = csv.DictReader(io.StringIO(sw.cli("team", "ledger", "carol", "--csv").stdout))
    return [r for r in rows if r["kind"] == "gpu"]


def _sacct(cluster, slurm_id: int) -> list[dict]:
    out = cluster.run("sacct", "-j", str(slurm_id), "-X", "-D", "-n", "-P", "-S", "now-1day",
                      "-E", "now", "-o", "JobID,State,ElapsedRaw,AllocTRES").stdout
    keys = ["id", "state", "elapsed", "tres"]
    return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]


def _assert_ledger_equals_sacct(sw, cluster, job: dict) -> None:
    """Per attempt: charges contiguous from minute 0 to ceil(elapsed / 60) — none twice, none
    missing — and the job's cost is their sum."""
    rows = [r for r in _gpu_rows(sw) if int(r["job"]) == job["id"]]
    acct = _sacct(cluster, job["slurm_job_id"])
    assert acct and all("gres/gpu:a4000=1" in a["tres"] for a in acct), acct
    spans = sorted((int(r["attempt"]), int(r["from_minute"]), int(r["to_minute"])) for r in rows)
    billed: dict[int, int] = {}
    for attempt, lo, hi in spans:
        assert lo == billed.get(attempt, 0) and hi > lo, spans   # contiguous, no overlap
        billed[attempt] = hi
    assert billed == {n: math.ceil(int(a["elapsed"]) / 60) for n, a in enumerate(acct)}, \
        (spans, acct)
    charged = -sum(float(r["amount"]) for r in rows)
    assert abs(float(sw.job(job["id"])["cost"]) - charged) < 1e-6, (charged, job)


@pytest.mark.cluster
@pytest.mark.slow
def test_two_servers_serve_everything_and_kill9_of_the_leader_hands_over(
        servers, slurm_cluster, tmp_path):
    a, b, engine, proxy = servers
    a.cli("user", "add", "carol", "--unix-user", "sw-carol")
    a.cli("team", "add-funds", "carol", "10.00", "--note", "test funds")
    a.cli("project", "create", "carol", "p", "--gpus", "a4000:1", "--image", "python")
    a.tokens["carol"] = a.cli("token", "create", "carol").stdout.strip()
    token = a.tokens["carol"]

    # both servers: pages, the API (one database), git; only A's reconciler runs
    for sw in (a, b):
        assert _get(sw.url + "/login")[0] == 200
        status, body = _get(sw.url + "/api/projects", token)
        assert status == 200 and ("carol", "p") in _projects(body), body[:300]
    assert "reconciler: active on" in a.cli("alarms").stdout
    job_id = _push(b, tmp_path, "long", SLEEPER.format(ticks=70))   # git on B...
    a.git("ls-remote", "--exit-code", a.remote("carol", "carol", "p"), "long")  # ...seen on A
    leader = _leader(engine)
    assert leader["pid"] == a.proc.pid and leader["lease"].startswith("PostgreSQL advisory lock")
    line = b.cli("alarms").stdout.splitlines()[0]
    assert line.startswith(f"reconciler: active on {leader['host']}:{a.proc.pid} since"), line

    # A bills the first minute while the job runs...
    a.wait_job(job_id, {"running"}, timeout=60)
    _wait_for(lambda: float(b.job(job_id)["cost"]) > 0, "a charge while the job runs", 90)
    assert [(r["from_minute"], r["to_minute"]) for r in _gpu_rows(b)] == [("0", "1")]

    # ...then dies mid-job: B takes over within two ticks and finishes the bill
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait(10)
    killed = datetime.now(timezone.utc)
    took = _wait_for(lambda: (_leader(engine) or {}).get("pid") == b.proc.pid
                     and (_last_tick_end(engine) or killed) > killed and _last_tick_end(engine),
                     "server B leads and has ticked", 2 * INTERVAL + 10)
    print(f"handover: kill -9 of A -> B's first tick ended {(took - killed).total_seconds():.2f} s "
          f"later (reconcile interval {INTERVAL:g} s)")
    assert f"active on {leader['host']}:{b.proc.pid}" in b.cli("alarms").stdout
    assert _get(b.url + "/api/projects", token)[0] == 200

    job = b.wait_results(job_id, timeout=120)   # the runner reached B through the one address
    assert job["state"] == "succeeded" and job["results_ref"], job
    b.git("ls-remote", "--exit-code", b.remote("carol", "carol", "p"), job["results_ref"])
    for _ in range(2):   # two more ticks: the final bill does not change
        before = _last_tick_end(engine)
        _wait_for(lambda: (_last_tick_end(engine) or before) > before, "another tick of B", 30)
    _assert_ledger_equals_sacct(b, slurm_cluster, job)
    assert proxy.served.get(int(b.url.rsplit(":", 1)[1]), 0) > 0   # callbacks went to B


HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from portal.jobs.reconciler.leader import PgAdvisoryLease
lease = PgAdvisoryLease({url!r}, {key})
print(lease.try_acquire(), flush=True)
time.sleep(300)
"""


def test_pg_lease_is_free_at_once_after_kill9_and_a_dead_session_is_noticed(postgres_url):  # noqa: F811
    """Without Slurm: the advisory lock dies with its holder's session. Another process's lease
    is refused while the holder lives, and its first attempt after ``kill -9`` wins; a session
    ended under a holder (here by the administrator) is found by ``holds()`` before any tick."""
    from sqlalchemy.engine import make_url

    url = create_database(postgres_url, "lease_" + secrets.token_hex(3))
    key = 4242
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(
        repo=str(Path(__file__).resolve().parents[2]), url=url, key=key)],
        stdout=subprocess.PIPE, text=True)
    mine = PgAdvisoryLease(make_url(url), key)
    try:
        assert holder.stdout.readline().strip() == "True"
        assert not mine.try_acquire() and not mine.holds()
        holder.kill()             # SIGKILL
        holder.wait(10)
        assert mine.try_acquire() and mine.holds()   # the first attempt after the death
        admin = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                           " WHERE application_name = 'slipway-reconciler-lease'"))
        admin.dispose()
        _wait_for(lambda: not mine.holds(), "the lease's lost session is noticed", 30)
        assert mine.try_acquire() and mine.holds()   # taken again on a new session
        other = PgAdvisoryLease(make_url(url), key)
        assert not other.try_acquire()
        mine.release()
        assert other.try_acquire()
        other.dispose()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        mine.dispose()
