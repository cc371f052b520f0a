"""request_cancel when Slurm refuses: a message (never a traceback) and the job still ends."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from portal.db import Job
from portal.jobs import service
from portal.jobs.reconciler import Reconciler
from tests.support.fakes import Clock, FakeBackend, make_services, seed
from slurm_bridge.errors import ControllerUnavailable, JobNotFound, SlurmRejected


@dataclass
class RefusingBackend(FakeBackend):
    """cancel() raises the errors queued in ``cancel_errors`` (one per call), then succeeds."""

    cancel_errors: list = field(default_factory=list)
    attempts: list = field(default_factory=list)

    def cancel(self, job_id, signal=None, batch_only=False):
        self.attempts.append((job_id, signal, batch_only))
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)
        return super().cancel(job_id, signal, batch_only)


REQUEUED = SlurmRejected("Slurm refused to signal job 11: Job is pending execution",
                         slurm_message="Job is pending execution")


@pytest.fixture
def env(tmp_path):
    backend, clock = RefusingBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, cancel_grace=60,
                        storage_interval=10**9)
    seed(svc)
    yield svc, backend, clock
    svc.db.dispose()


def make_job(svc, slurm_id=11, state="running"):
    with svc.db.transaction() as s:
        job = Job(project_id=1, branch="exp-1", commit_sha="a" * 40, pusher_id=1, state=state,
                  slurm_job_id=slurm_id, gpu_type="a4000", gpu_count=1, image="python",
                  time_limit_min=60, created_at=svc.now(), submitted_at=svc.now())
        s.add(job)
        s.flush()
        return job.id


def job(svc, jid) -> Job:
    with svc.db.session() as s:
        return s.get(Job, jid)


def test_refused_term_falls_back_to_a_hard_cancel_now(env):
    svc, backend, clock = env
    jid = make_job(svc)
    backend.cancel_errors = [REQUEUED]
    r = service.request_cancel(svc, jid, by="alice")
    # TERM first, then the plain scancel that ends the job
    assert backend.attempts == [(11, "TERM", True), (11, None, False)]
    assert backend.cancels == [(11, None, False)]
    assert "Slurm refused the gentle stop" in r.message and "Job is pending execution" in r.message
    assert "cancelled outright" in r.message
    j = job(svc, jid)
    assert j.cancel_requested_at == clock() and j.hard_cancel_at == clock()
    assert j.state == "running"          # the reconciler records the end, as for any cancel
    # ... and does not send a second hard cancel after the grace period
    clock.advance(seconds=120)
    backend.set_queue(11, "RUNNING", start=clock())
    Reconciler(svc).tick()
    assert backend.attempts == [(11, "TERM", True), (11, None, False)]


def test_refused_term_and_refused_hard_cancel_say_so_and_the_safety_net_retries(env):
    svc, backend, clock = env
    jid = make_job(svc)
    backend.cancel_errors = [REQUEUED, SlurmRejected("Access/permission denied")]
    r = service.request_cancel(svc, jid, by="alice")
    assert "cancel recorded" in r.message and "Access/permission denied" in r.message
    assert "retried within 60 s" in r.message
    assert job(svc, jid).hard_cancel_at is None
    clock.advance(seconds=61)
    backend.set_queue(11, "RUNNING", start=clock())
    rep = Reconciler(svc).tick()
    assert rep.hard_cancels == [jid] and backend.cancels == [(11, None, False)]


def test_refused_pending_cancel_is_a_message(env):
    svc, backend, clock = env
    jid = make_job(svc, state="pending")
    backend.cancel_errors = [SlurmRejected("Slurm refused: Invalid job state")]
    r = service.request_cancel(svc, jid, by="alice")
    assert backend.attempts == [(11, None, False)]
    assert "Slurm refused it (Slurm refused: Invalid job state)" in r.message
    assert "retried within 60 s" in r.message
    assert job(svc, jid).cancel_requested_at is not None


@pytest.mark.parametrize("error,needle", [
    (JobNotFound(11), "Slurm no longer has it"),
    (ControllerUnavailable("slurmctld is down"), "Slurm is not answering"),
])
def test_known_errors_keep_their_messages_without_a_hard_cancel(env, error, needle):
    svc, backend, clock = env
    jid = make_job(svc)
    backend.cancel_errors = [error]
    r = service.request_cancel(svc, jid, by="alice")
    assert needle in r.message
    assert backend.attempts == [(11, "TERM", True)]


def test_hard_cancel_finding_no_job_is_fine(env):
    svc, backend, clock = env
    jid = make_job(svc)
    backend.cancel_errors = [REQUEUED, JobNotFound(11)]
    r = service.request_cancel(svc, jid, by="alice")
    assert "Slurm no longer has it" in r.message
