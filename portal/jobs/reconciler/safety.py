"""Safety nets (step 6 in the package's docstring): hard cancels of cancels that did not take,
reservations whose post-receive never came, and claimed submissions that never finished."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from ... import integrations as ig
from ...db import Job
from ...services import Services
from .. import recovery, states
from ..submit import UNKNOWN_REASON
from .report import TickReport, move


# A cancelled job that Slurm requeued (its node died as the cancel was sent) is let run once more
# before it is cancelled, for at most this long: see _waits_to_push.
REQUEUED_CANCEL_WAIT_S = 1800


def hard_cancels(svc: Services, now: datetime, report: TickReport) -> None:
    limit = now - timedelta(seconds=svc.config.cancel_grace)
    with svc.db.session() as s:
        todo = [(j.id, j.slurm_job_id) for j in s.scalars(select(Job).where(
            Job.state.in_(states.ACTIVE), Job.slurm_job_id.is_not(None),
            Job.cancel_requested_at.is_not(None), Job.cancel_requested_at < limit,
            Job.hard_cancel_at.is_(None))) if not _waits_to_push(j, now)]
    _act_then_mark(svc, todo, svc.backend.cancel, lambda job: setattr(job, "hard_cancel_at", now),
                   report, "hard cancel of job", report.hard_cancels)



def release_to_push(svc: Services, now: datetime, report: TickReport) -> None:
    """A cancelled requeued job that waits to push (``_waits_to_push``) but is held by
    Slipway's $1.00 start rule (the cut-off found it pending and held) would never start:
    Slipway's hold is released so it runs once, only to push; ``money.balance_holds`` leaves
    cancelled jobs alone. An administrator's hold stays (no Slipway mark)."""
    with svc.db.session() as s:
        todo = [(j.id, j.slurm_job_id) for j in s.scalars(select(Job).where(
            Job.state == states.PENDING, Job.slurm_job_id.is_not(None),
            Job.cancel_requested_at.is_not(None), Job.hard_cancel_at.is_(None),
            Job.balance_hold_at.is_not(None))) if _waits_to_push(j, now)]
    def released(job: Job) -> None:
        job.balance_hold_at = None
        job.reason = "cancelled: starts once more to push its interrupted attempt's files"

    _act_then_mark(svc, todo, svc.backend.release, released, report,
                   "release to push the files of cancelled job", report.releases)


def _act_then_mark(svc: Services, todo, act, mark, report: TickReport, failed: str,
                   done: list) -> None:
    """For each (job id, Slurm id): ``act(slurm_id)`` in Slurm (a job Slurm no longer has counts
    as done; any other refusal is reported and tried again next tick), then ``mark(job)`` in
    its own transaction and the job id into ``done``."""
    for job_id, slurm_id in todo:
        try:
            act(slurm_id)
        except ig.JobNotFound:
            pass
        except ig.SlurmBridgeError as exc:
            report.errors.append(f"{failed} {job_id}: {exc}")
            continue
        with svc.db.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None:     # (deleted with its project meanwhile)
                mark(job)
        done.append(job_id)


def _waits_to_push(job: Job, now: datetime) -> bool:
    """A cancelled job that Slurm put back in the queue after it had run (a node failure took
    the cancel's TERM with it) holds the files of its interrupted attempt in its job directory,
    and only a running attempt pushes them: cancelled while pending, they would never reach its
    branch. So it is let start once more; the hard cancel then comes at its first tick running
    (TERM: the runner commits and pushes, as for any cancel), or after REQUEUED_CANCEL_WAIT_S."""
    return (job.state == states.PENDING and (job.attempt or 0) > 0
            and (now - job.cancel_requested_at).total_seconds() < REQUEUED_CANCEL_WAIT_S)


def orphan_reservations(svc: Services, now: datetime, report: TickReport) -> None:
    """Reservations whose post-receive never came (see ``recovery.recover_reservation``).

    Runs after this tick's successful poll and its adoptions, so Slurm had none of these
    jobs when it answered. Only unclaimed reservations (no submission ever started) are
    touched; a post-receive arriving now loses or wins the claim, never both submit."""
    grace = svc.config.orphan_reservation_grace
    limit = now - timedelta(seconds=float(grace))
    with svc.db.session() as s:
        ids = list(s.scalars(select(Job.id).where(
            Job.state == states.QUEUED, Job.slurm_job_id.is_(None), Job.token_hash.is_(None),
            Job.cancel_requested_at.is_(None), Job.created_at < limit).order_by(Job.id)))
    for job_id in ids:
        try:
            outcome, msg = recovery.recover_reservation(svc, job_id)
        except Exception as exc:  # noqa: BLE001 — one bad repository must not stop the tick
            report.errors.append(f"reservation {job_id} (post-receive lost): {exc}")
            continue
        if outcome == "submitted":
            report.recovered.append(job_id)
            report.changes.append((job_id, states.QUEUED, states.PENDING))
        elif outcome == "unknown":  # sbatch had no answer: jobs.unknown finds out
            report.changes.append((job_id, states.QUEUED, states.UNKNOWN))
        elif outcome in ("abandoned", "failed"):
            if outcome == "abandoned":
                report.abandoned.append(job_id)
            report.changes.append((job_id, states.QUEUED, states.FAILED))
            if outcome == "failed":
                report.errors.append(f"reservation {job_id} (post-receive lost): {msg}")



def stale_reservations(svc: Services, now: datetime, report: TickReport) -> None:
    """A reservation still queued ``stale_reservation`` seconds after the push, not in
    this tick's queue. Its submission was claimed but never finished (the process died
    during ``sbatch``): Slurm may still have it, so it becomes ``unknown`` like a submission
    without an answer and ``jobs.unknown`` finds out (adopts it or submits it again). Never
    claimed (its branch could not be read): failed, the branch is free."""
    limit = now - timedelta(seconds=svc.config.stale_reservation)
    with svc.db.transaction() as s:
        for job in s.scalars(select(Job).where(Job.state == states.QUEUED, Job.slurm_job_id.is_(None),
                                               Job.created_at < limit)):
            if job.token_hash is not None:
                move(job, states.UNKNOWN, now, report, reason=UNKNOWN_REASON.format(
                    why="the submitting process stopped before Slurm's answer"))
                job.submitted_at = job.submitted_at or job.created_at
                continue
            move(job, states.FAILED, now, report,
                  reason="the push did not complete: its job never reached Slurm; push again")

