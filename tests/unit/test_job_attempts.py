"""A job's attempts (docs/FAULTS.md §1, §5) against the fake Slurm: a node failure requeues the
job, the attempt it ended is recorded and billed exactly as sacct reports it as soon as Slurm
requeued the job, the next attempt on another node too; the job page, the API and
``attempts_of`` list both; while accounting does not answer, a job that left the queue is
``unknown`` (with the reason), the queue is still reconciled, and billing catches up exactly."""
from __future__ import annotations

import math
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from portal.app import create_app
from portal.billing import ledger as billing
from portal.db import Job, LedgerEntry, Team
from portal.jobs import attempts
from portal.jobs.reconciler import Reconciler
from portal.jobs.reconciler.report import ACCOUNTING_DOWN
from tests.support.fakes import Clock, FakeBackend, make_services
from tests.support.web import login, make_world

RATE_PER_MIN = Decimal("0.50") / 60     # a4000 x1 at $0.50/h (the test config's rate)


@pytest.fixture
def env(tmp_path):
    backend, clock = FakeBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, lost_after=600)
    ids = make_world(svc)
    backend.set_queue(1002, "PENDING", reason="Resources")      # the world's other jobs
    backend.set_queue(1003, "RUNNING", start=clock(), node="a6k-1", gpus={"a6000": 1})
    yield svc, backend, clock, ids
    svc.db.dispose()


def _job(svc, jid) -> Job:
    with svc.db.session() as s:
        return s.get(Job, jid)


def _attempts(svc, jid) -> list[dict]:
    with svc.db.session() as s:
        return attempts.attempts_of(s, s.get(Job, jid))


def _billed(svc, jid) -> dict[int, tuple[int, Decimal]]:
    """attempt -> (minutes, dollars) in the ledger for job ``jid``."""
    with svc.db.session() as s:
        rows = s.execute(select(LedgerEntry.attempt, func.max(LedgerEntry.to_minute),
                                func.sum(LedgerEntry.amount_micros))
                         .where(LedgerEntry.kind == "gpu", LedgerEntry.resource == str(jid))
                         .group_by(LedgerEntry.attempt)).all()
    return {a: (m, Decimal(-c) / 10**6) for a, m, c in rows}


def _balance(svc, team="nlp") -> Decimal:
    with svc.db.session() as s:
        return billing.balance(s, s.scalar(select(Team.id).where(Team.name == team)))


def _node_failure(svc, backend, clock, jid):
    """Attempt 0 runs on a4k-1 for 3 min 25 s until Slurm declares the node dead; the job is
    requeued (PENDING, BeginTime, restart 1), then runs on a4k-2 and completes after 70 s."""
    t0 = clock()
    backend.set_queue(1001, "RUNNING", start=t0, node="a4k-1", gpus={"a4000": 1})
    Reconciler(svc).tick()
    clock.advance(minutes=3, seconds=10)
    Reconciler(svc).tick()      # 3 whole minutes billed while it runs
    assert _billed(svc, jid)[0][0] == 3
    dead_at = clock.advance(seconds=15)
    backend.finish(1001, "NODE_FAIL", start=t0, end=dead_at, exit_code=None, gpus={"a4000": 1},
                   node="a4k-1", attempt=0)
    clock.advance(seconds=2)
    backend.set_queue(1001, "PENDING", reason="BeginTime", restart_count=1)
    rep = Reconciler(svc).tick()
    return t0, dead_at, rep


def test_node_failure_attempt_is_recorded_and_billed_as_sacct_says_when_requeued(env):
    svc, backend, clock, ids = env
    jid = ids["running"]
    t0, dead_at, rep = _node_failure(svc, backend, clock, jid)
    j = _job(svc, jid)
    assert (j.state, j.attempt) == ("pending", 1)
    assert "requeued by Slurm" in j.reason and "resumes from its files" in j.reason
    # attempt 0 is settled now, not when the job ends: ElapsedRaw 205 s -> 4 started minutes
    assert _billed(svc, jid)[0] == (4, (4 * RATE_PER_MIN).quantize(Decimal("0.000001")))
    (a0,) = _attempts(svc, jid)
    assert (a0["attempt"], a0["node"], a0["slurm_state"], a0["elapsed_s"]) == (0, "a4k-1", "NODE_FAIL", 205)
    assert a0["ended"] == "node a4k-1 failed; requeued" and a0["minutes"] == 4
    assert a0["ended_at"] == dead_at.isoformat()
    calls = len(backend.accounting_calls)
    Reconciler(svc).tick()      # settled: no more sacct for this job while it waits
    assert all(1001 not in ids for _, _, ids in backend.accounting_calls[calls:])

    t1 = clock.advance(seconds=10)
    backend.set_queue(1001, "RUNNING", start=t1, node="a4k-2", restart_count=1, gpus={"a4000": 1})
    Reconciler(svc).tick()
    j = _job(svc, jid)
    assert (j.state, j.node, j.attempt, j.reason) == ("running", "a4k-2", 1, None)
    a0, a1 = _attempts(svc, jid)
    assert (a1["node"], a1["ended"], a1["started_at"]) == ("a4k-2", "running", t1.isoformat())

    end = clock.advance(seconds=70)
    backend.finish(1001, "COMPLETED", start=t1, end=end, gpus={"a4000": 1}, node="a4k-2", attempt=1)
    clock.advance(seconds=1)
    Reconciler(svc).tick()
    j = _job(svc, jid)
    assert (j.state, j.exit_code) == ("succeeded", 0)
    a0, a1 = _attempts(svc, jid)
    assert a0["ended"] == "node a4k-1 failed; requeued"
    assert (a1["node"], a1["slurm_state"], a1["ended"], a1["elapsed_s"]) == \
        ("a4k-2", "COMPLETED", "completed (exit code 0)", 70)
    # each attempt billed exactly sacct's ElapsedRaw in started minutes, nothing twice
    billed = _billed(svc, jid)
    for a, elapsed in ((0, 205), (1, 70)):
        minutes = math.ceil(elapsed / 60)
        assert billed[a] == (minutes, (minutes * RATE_PER_MIN).quantize(Decimal("0.000001")))
        assert [x for x in _attempts(svc, jid) if x["attempt"] == a][0]["minutes"] == minutes


def test_job_page_and_api_list_each_attempt(env):
    svc, backend, clock, ids = env
    jid = ids["running"]
    _node_failure(svc, backend, clock, jid)
    t1 = clock.advance(seconds=12)
    backend.set_queue(1001, "RUNNING", start=t1, node="a4k-2", restart_count=1, gpus={"a4000": 1})
    Reconciler(svc).tick()
    app = create_app(svc)
    c = app.test_client()
    assert login(c, "carol").status_code == 302
    page = c.get(f"/jobs/{jid}").get_data(as_text=True)
    assert 'id="attempts-table"' in page
    row0 = page.split('id="attempt-0"', 1)[1].split("</tr>", 1)[0]
    row1 = page.split('id="attempt-1"', 1)[1].split("</tr>", 1)[0]
    assert "a4k-1" in row0 and "node a4k-1 failed; requeued" in row0 and "3 min 25 s" in row0
    assert "a4k-2" in row1 and "running" in row1
    api = c.get(f"/api/jobs/{jid}").get_json()["job"]
    assert [(a["attempt"], a["node"]) for a in api["attempts"]] == [(0, "a4k-1"), (1, "a4k-2")]
    assert api["attempts"][0]["minutes"] == 4 and api["attempts"][0]["cost"] == "0.033333"
    # a job that was never requeued shows no attempts table
    plain = c.get(f"/jobs/{ids['succeeded']}").get_data(as_text=True)
    assert 'id="attempts-table"' not in plain


def test_accounting_down_job_that_ended_is_unknown_queue_goes_on_billing_catches_up(env):
    svc, backend, clock, ids = env
    jid, other = ids["running"], ids["pending"]
    t0 = clock()
    backend.set_queue(1001, "RUNNING", start=t0, node="a4k-1", gpus={"a4000": 1})
    backend.set_queue(1002, "PENDING", reason="Resources")
    Reconciler(svc).tick()
    before = _balance(svc)
    clock.advance(minutes=1, seconds=10)
    Reconciler(svc).tick()          # one whole minute billed while it runs
    end = clock.advance(minutes=1, seconds=20)
    backend.finish(1001, "COMPLETED", start=t0, end=end, gpus={"a4000": 1})
    backend.accounting_down = True
    backend.set_queue(1002, "RUNNING", start=end, node="a4k-2", gpus={"a4000": 1})
    for _ in range(3):
        rep = Reconciler(svc).tick()
        clock.advance(seconds=20)
    assert any("accounting failed" in e for e in rep.errors)
    j = _job(svc, jid)
    assert (j.state, j.previous_state) == ("unknown", "running")
    assert j.reason.startswith(ACCOUNTING_DOWN) and "slurmdbd is down" in j.reason
    # the queue is still reconciled: the other job started and is billed as it runs
    assert _job(svc, other).state == "running"
    assert _billed(svc, jid) == {0: (1, (1 * RATE_PER_MIN).quantize(Decimal("0.000001")))}
    backend.accounting_down = False
    Reconciler(svc).tick()
    j = _job(svc, jid)
    assert (j.state, j.reason, j.exit_code, j.ended_at) == ("succeeded", None, 0, end)
    assert _billed(svc, jid) == {0: (3, (3 * RATE_PER_MIN).quantize(Decimal("0.000001")))}
    other_billed = sum(d for _, d in _billed(svc, other).values())
    assert other_billed > 0
    assert _balance(svc) == before - _billed(svc, jid)[0][1] - other_billed


def test_an_attempt_accounting_never_reported_says_so_once_the_job_is_settled(env):
    """slurmdbd lost the job's record: Slipway fails the job after ``lost_after`` ("Slurm lost
    track of the job") and its attempt no longer waits for an answer that will never come."""
    svc, backend, clock, ids = env
    jid = ids["running"]
    backend.set_queue(1001, "RUNNING", start=clock(), node="a4k-1", gpus={"a4000": 1})
    Reconciler(svc).tick()
    clock.advance(minutes=2, seconds=5)
    Reconciler(svc).tick()
    backend.queue.pop(1001)                    # gone from the queue; sacct never heard of it
    clock.advance(seconds=5)
    Reconciler(svc).tick()
    assert _job(svc, jid).state == "running"
    assert _attempts(svc, jid)[0]["ended"] == "running"
    clock.advance(seconds=svc.config.lost_after + 1)
    Reconciler(svc).tick()
    j = _job(svc, jid)
    assert j.state == "failed" and "lost track" in j.reason
    [a] = _attempts(svc, jid)
    assert a["ended"] == attempts.NO_RECORD and a["ended_at"] is None
    assert a["minutes"] == 2 and a["node"] == "a4k-1"

