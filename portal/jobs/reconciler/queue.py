"""The live mapping: this tick's ``squeue`` answer → the jobs' states (steps 1 and the adoptions
of 6 and 7 in the package's docstring).

A failed poll marks every job Slurm holds ``unknown`` (``mark_unknown``). A successful one
(``apply_queue``) adopts reservations whose submit reply was lost and submissions that had no
answer (by name ``slipway-<id>`` under the team's account), maps each job's Slurm state, and
hands back the running attempts to bill and the jobs that left the queue (``Ended``).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select

from ... import integrations as ig
from ...db import Job
from ...services import Services, log
from .. import attempts, node_parts, states
from ..recovery import RECOVERED_NOTE
from ..submit import UNSUBMITTED_FROM
from ..unknown import RESUBMITTED_PREFIX
from ...policy import preemption, reasons
from .identity import record_is_job
from .report import BUSY_AFTER_END_S, POLL_FAILED, STALE_REASONS, WAITING, Ended, TickReport, move


def mark_unknown(svc: Services, now: datetime, exc: Exception, report: TickReport) -> None:
    with svc.db.transaction() as s:
        for job in s.scalars(select(Job).where(Job.state.in_(states.IN_SLURM))):
            move(job, states.UNKNOWN, now, report, reason=f"{POLL_FAILED}: {exc}")



def apply_queue(svc: Services, queue: dict[int, Any], now: datetime, report: TickReport):
    live_records, ended = [], []
    by_name: dict[int | None, list] = {}
    for r in queue.values():
        by_name.setdefault(ig.job_id_from_slurm_name(r.name), []).append(r)
    with svc.db.transaction() as s:
        # adopt reservations whose submit reply was lost, and submissions that had no answer
        # (unknown since queued, see jobs.unknown)
        for job in s.scalars(select(Job).where(
                or_(Job.state == states.QUEUED,
                    and_(Job.state == states.UNKNOWN,
                         Job.previous_state.in_(UNSUBMITTED_FROM))),
                Job.slurm_job_id.is_(None))):
            # only a job submitted for this reservation: the same name can be another
            # Slipway's on a shared cluster (each has its own account prefix, see
            # slurm_accounts), so the account must be this job's team's
            expected = svc.config.slurm_account(job.project.team.name).lower()
            rec = next((r for r in by_name.get(job.id, ())
                        if (r.account or "").lower() == expected), None)
            if rec is not None:
                if job.state == states.UNKNOWN:
                    job.reason = None  # no longer "finding out": Slurm's reason follows
                    report.adopted.append(job.id)
                    log.warning("job %s: its submission had no answer; Slurm has it as job "
                                "%s: adopted", job.id, rec.job_id)
                job.slurm_job_id = getattr(rec, "array_job_id", 0) or rec.job_id
                job.submitted_at = job.submitted_at or rec.submit_time or now
                move(job, states.PENDING, now, report)
        # a sweep's state follows its tasks (reconciler.arrays), not one queue record
        jobs = s.scalars(select(Job).where(Job.state.in_(states.ACTIVE - {states.QUEUED}),
                                           Job.slurm_job_id.is_not(None),
                                           Job.task_count.is_(None)))
        reason_words: dict = {}   # pending reasons in words, shared by the jobs of this tick
        for job in jobs:
            team = job.project.team.name
            rec = queue.get(job.slurm_job_id)
            if rec is not None and not record_is_job(rec, job.id):
                rec = None   # Slurm reused the id (it lost this job): another Slipway job's
            mapping = states.slurm_mapping(rec.state) if rec is not None else None
            if job.state == states.FINISHING or job.cancel_requested:
                report.busy = True
            if rec is None or (mapping.live is None and mapping.final is not None):
                # just ended: sacct settles within seconds; after BUSY_AFTER_END_S (sacct
                # down, a lost record) the loop goes back to its normal pace
                since = job.last_seen_at or job.submitted_at or job.created_at
                if since is None or (now - since).total_seconds() < BUSY_AFTER_END_S:
                    report.busy = True
                ended.append(Ended(job.id, job.slurm_job_id, job.submitted_at or job.created_at,
                                    job.last_seen_at, job.cancel_requested, team,
                                    {job.gpu_type: job.gpu_count * (job.nodes or 1)},
                                    attempt=job.attempt or 0, absent=rec is None,
                                    never_ran=_never_ran(job)))
                continue
            job.last_seen_at = now
            if rec.node:
                job.node = rec.node
                if (job.nodes or 1) > 1:
                    node_parts.record(s, job, rec.node, now)
            if rec.restart_count > job.attempt:
                job.attempt = rec.restart_count
            if attempts.needs_accounting(s, job, rec.restart_count):
                # requeued (a node failed, preempted): sacct says how the attempt before ended
                ended.append(Ended(job.id, job.slurm_job_id, job.submitted_at or job.created_at,
                                   job.last_seen_at, job.cancel_requested, team,
                                   {job.gpu_type: job.gpu_count * (job.nodes or 1)},
                                   requeued=True, attempt=rec.restart_count))
            target = mapping.live
            base = job.previous_state if job.state == states.UNKNOWN else job.state
            if target is None:  # a Slurm state we do not know: keep the job where it was
                target = base
            if base == states.FINISHING and target == states.RUNNING:
                target = states.FINISHING
            requeued = base in (states.RUNNING, states.FINISHING) and target == states.PENDING
            move(job, target, now, report)
            if requeued:   # preempted by an emergency job, or a node failed: it resumes
                job.reason = preemption.requeue_note(s, job, now)
            if job.state != states.PENDING and job.balance_hold_at is not None:
                job.balance_hold_at = None  # it left the queue (released by hand, or ended)
            # a job submitted for a lost post-receive keeps saying so (recovery.RECOVERED_NOTE)
            note = _kept_note(job.reason)
            if job.state == states.PENDING:
                job.priority = getattr(rec, "priority", None)
                job.expected_start_at = getattr(rec, "expected_start", None)
                if job.balance_hold_at is None:  # else: the hold reason stays (_balance_holds)
                    code = rec.reason or ""
                    words = None if note and code == "BeginTime" \
                        else reasons.explain(s, job, code, reason_words)
                    waiting = f"{WAITING}{words}" if words else None
                    job.reason = "; ".join(x for x in (note, waiting) if x) or None
            elif job.state in (states.RUNNING, states.FINISHING):
                job.priority = job.expected_start_at = None
                if note is not None and note.startswith(RECOVERED_NOTE):
                    job.reason = note
                elif job.reason and job.reason.startswith(STALE_REASONS):
                    job.reason = None
                if rec.start_time is not None:
                    attempts.record_live(s, job, rec)
                    job.attempt_started_at = rec.start_time
                    if job.started_at is None or job.started_at > rec.start_time:
                        job.started_at = rec.start_time
                    live_records.append(ig.attempt_record(
                        job_id=job.id, attempt=rec.restart_count, state="RUNNING",
                        start=rec.start_time, end=None, elapsed_s=None,
                        gpus=ig.billed_gpus(rec.gpus, 0, {job.gpu_type: job.gpu_count}),
                        team=team))
    return live_records, ended


def _never_ran(job: Job) -> bool:
    """Pending (or unknown since pending) and never started: no start, no earlier attempt."""
    base = job.previous_state if job.state == states.UNKNOWN else job.state
    return base == states.PENDING and job.started_at is None and not job.attempt


def _kept_note(reason: str | None) -> str | None:
    """The part of a pending job's reason that outlives a tick: it was submitted by the
    reconciler (RECOVERED_NOTE), submitted again (its first submission had no answer, or Slurm
    lost it), or requeued (preempted, node failure)."""
    first = (reason or "").split("; ", 1)[0]
    if first.startswith((RECOVERED_NOTE, RESUBMITTED_PREFIX, preemption.PREEMPTED_NOTE,
                         preemption.REQUEUED_NOTE)):
        return first
    return None
