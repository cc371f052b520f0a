"""Two reconciler nits: a terminal job keeps no stale poll/queue reason; the $0 cut-off reports a
cancel it could not make and tries again next tick."""
from __future__ import annotations

from datetime import timedelta

import pytest

from portal.db import Job, LedgerEntry
from portal.jobs import service
from portal.jobs.reconciler import Reconciler
from tests.support.fakes import Clock, FakeBackend, make_services, seed


@pytest.fixture
def env(tmp_path):
    backend, clock = FakeBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, storage_interval=10**9)
    seed(svc)
    yield svc, backend, clock
    svc.db.dispose()


def make_job(svc, slurm_id, state, branch="exp-1"):
    with svc.db.transaction() as s:
        job = Job(project_id=1, branch=branch, commit_sha="a" * 40, pusher_id=1, state=state,
                  slurm_job_id=slurm_id, gpu_type="a4000", gpu_count=1, image="python",
                  time_limit_min=60, created_at=svc.now(), submitted_at=svc.now())
        s.add(job)
        s.flush()
        return job.id


def job(svc, jid) -> Job:
    with svc.db.session() as s:
        return s.get(Job, jid)


@pytest.mark.parametrize("live", ["RUNNING", "PENDING"])
def test_a_job_that_ends_after_a_failed_poll_keeps_no_stale_reason(env, live):
    svc, backend, clock = env
    jid = make_job(svc, 11, "running" if live == "RUNNING" else "pending")
    start = clock()
    backend.set_queue(11, live, start=start if live == "RUNNING" else None, reason="Priority")
    backend.down = True
    Reconciler(svc).tick()
    assert job(svc, jid).reason.startswith("Slurm is not answering")
    backend.down = False
    backend.finish(11, "COMPLETED", start=start, end=start + timedelta(minutes=1))
    clock.advance(minutes=2)
    Reconciler(svc).tick()
    j = job(svc, jid)
    assert (j.state, j.reason) == ("succeeded", None)


def test_a_queue_reason_is_cleared_but_a_failure_reason_is_kept(env):
    svc, backend, clock = env
    ok, bad = make_job(svc, 11, "pending"), make_job(svc, 12, "pending", branch="b")
    backend.set_queue(11, "PENDING", reason="Resources")
    backend.set_queue(12, "PENDING", reason="Resources")
    Reconciler(svc).tick()
    assert job(svc, ok).reason == "waiting: no node has the GPUs, cores or memory it needs free yet"
    start = clock()
    backend.finish(11, "COMPLETED", start=start, end=start + timedelta(seconds=30))
    backend.finish(12, "TIMEOUT", start=start, end=start + timedelta(seconds=30), exit_code=0)
    clock.advance(minutes=1)
    Reconciler(svc).tick()
    assert (job(svc, ok).state, job(svc, ok).reason) == ("succeeded", None)
    assert (job(svc, bad).state, job(svc, bad).reason) == ("failed", "time limit reached")


def test_cut_off_reports_a_cancel_it_could_not_make_and_retries(env, monkeypatch):
    svc, backend, clock = env
    jid = make_job(svc, 11, "pending")
    backend.set_queue(11, "PENDING")
    with svc.db.transaction() as s:  # the team is at $0
        s.add(LedgerEntry(team_id=1, kind="adjustment", amount_micros=-25_000_000,
                          idempotency_key="adj", created_by="t", created_at=clock()))
    real, calls = service.request_cancel, []

    def flaky(svc_, job_id, **kw):
        calls.append(job_id)
        if len(calls) == 1:
            raise service.JobError(f"job {job_id}: database busy")
        return real(svc_, job_id, **kw)

    monkeypatch.setattr(service, "request_cancel", flaky)
    rep = Reconciler(svc).tick()
    assert rep.cancels == [] and rep.cut_off == ["nlp"]
    assert rep.errors == [f"cut-off of job {jid} (team nlp): job {jid}: database busy"]
    assert job(svc, jid).cancel_requested_at is None
    clock.advance(seconds=5)
    rep = Reconciler(svc).tick()  # next tick: tried again, and made
    assert rep.cancels == [jid] and rep.errors == [] and calls == [jid, jid]
    assert job(svc, jid).cancel_requested_at is not None and (11, None, False) in backend.cancels
