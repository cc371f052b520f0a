"""Sweeps in the tick (docs/SHARING.md): this tick's ``squeue`` records of job arrays → each
task's state; tasks that left the queue → ONE ``sacct`` call for all of them (each task's final
state and its attempts to bill, keyed ``<job>_<task>``); then each sweep's own state follows
from its tasks (``jobs.parts.aggregate``). A sweep whose tasks all ended gets its results
merged onto its branch (``sweep_results``)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from ... import integrations as ig
from ...db import Job, JobPart
from ...services import Services
from .. import parts, states
from .report import BUSY_AFTER_END_S, TickReport, move
from .ended import waited_enough


@dataclass
class TaskEnded:
    job_id: int
    index: int
    array_id: int
    since: datetime
    cancel_at: datetime | None      # the job's or the task's cancel request
    team: str
    gpus: dict
    started: bool = False           # Slipway saw it running (a started task has a sacct record)


def split(queue: dict[int, Any]) -> dict[int, list]:
    """Array records of this tick's queue, by array job id."""
    out: dict[int, list] = {}
    for rec in queue.values():
        aid = getattr(rec, "array_job_id", 0) or 0
        if aid:
            out.setdefault(aid, []).append(rec)
    return out


def apply_arrays(svc: Services, queue: dict[int, Any], now: datetime, report: TickReport):
    """Live task states and running attempts to bill; the tasks that left the queue."""
    arrays = split(queue)
    live_records, ended = [], []
    with svc.db.transaction() as s:
        jobs = s.scalars(select(Job).where(Job.state.in_(states.ACTIVE - {states.QUEUED}),
                                           Job.slurm_job_id.is_not(None),
                                           Job.task_count.is_not(None)))
        for job in jobs:
            recs = arrays.get(job.slurm_job_id, [])
            by_task = {r.array_task_id: r for r in recs if r.array_task_id is not None}
            waiting: set[int] = set()
            for r in recs:
                if r.array_task_id is None:
                    waiting |= parts.pending_tasks(getattr(r, "array_tasks", ""), job.task_count)
            team = job.project.team.name
            gpus = {job.gpu_type: job.gpu_count}
            if recs:
                job.last_seen_at = now
            for part in _tasks(s, job.id):
                if part.terminal:
                    continue
                rec = by_task.get(part.index)
                if rec is not None:
                    mapping = states.slurm_mapping(rec.state)
                    if mapping.live is not None:
                        _live(part, rec, mapping.live, now)
                        if part.state == parts.PART_RUNNING and rec.start_time is not None:
                            live_records.append(ig.attempt_record(
                                job_id=job.id, task=part.index, attempt=rec.restart_count,
                                state="RUNNING", start=rec.start_time, end=None, elapsed_s=None,
                                gpus=ig.billed_gpus(rec.gpus, 0, gpus), team=team))
                        continue
                elif part.index in waiting:
                    part.state, part.last_seen_at = parts.PART_PENDING, now
                    continue
                since = part.started_at or job.submitted_at or job.created_at
                if (now - (part.last_seen_at or since)).total_seconds() < BUSY_AFTER_END_S:
                    report.busy = True
                ended.append(TaskEnded(job.id, part.index, job.slurm_job_id, since,
                                       part.cancel_requested_at or job.cancel_requested_at,
                                       team, gpus, started=part.started_at is not None))
    return live_records, ended


def _tasks(s, job_id: int) -> list[JobPart]:
    return list(s.scalars(select(JobPart).where(JobPart.job_id == job_id, JobPart.kind == "task")
                          .order_by(JobPart.index)))


def _live(part: JobPart, rec, job_state: str, now: datetime) -> None:
    part.state = parts.part_state(job_state)
    part.last_seen_at = now
    part.slurm_id = rec.job_id
    if rec.node:
        part.node = rec.node
    part.attempt = max(part.attempt or 0, rec.restart_count)
    if part.state == parts.PART_RUNNING and rec.start_time is not None \
            and (part.started_at is None or part.started_at > rec.start_time):
        part.started_at = rec.start_time


def ended_tasks(svc: Services, ended: list[TaskEnded], now: datetime, report: TickReport):
    """ONE sacct call for every task that left the queue: billing records and final states."""
    if not ended:
        return [], []
    cfg = svc.config
    start = min(e.since for e in ended) - timedelta(seconds=cfg.accounting_slack)
    try:
        recs = svc.backend.accounting(start=start, end=now,
                                      job_ids=sorted({e.array_id for e in ended}))
    except ig.SlurmBridgeError as exc:
        report.errors.append(f"accounting of sweep tasks failed: {exc}")
        return [], []
    by_task: dict[tuple[int, int], list] = {}
    for r in recs:
        aid, tid = getattr(r, "array_job_id", 0), getattr(r, "array_task_id", None)
        if aid and tid is not None:
            by_task.setdefault((aid, tid), []).append(r)
    records, finals = [], []
    for e in ended:
        rs = by_task.get((e.array_id, e.index), [])
        if not rs and e.cancel_at is not None and not e.started:
            # cancelled while waiting: Slurm keeps no record of a task that never ran (only the
            # array's "123_[2-5]" line), and there is nothing to bill
            finals.append((e.job_id, e.index, states.CANCELLED, None, None, None, None))
            continue
        if not rs:
            if (now - e.since).total_seconds() > cfg.lost_after:
                finals.append((e.job_id, e.index, states.FAILED, None, None, None,
                               "Slurm lost track of the task (in neither the queue nor accounting)"))
            continue
        last = max(rs, key=lambda r: r.attempt)
        # sacct's end has whole seconds: a task stopped by the cancel may end "before" it
        cancelled = e.cancel_at is not None and (
            last.end is None or last.end >= e.cancel_at.replace(microsecond=0) - timedelta(seconds=1))
        final = states.final_state(last.state, cancel_requested=cancelled)
        if final is None:
            continue
        if not last.settled and not waited_enough(last, e.since, now, cfg.lost_after):
            continue   # End/AllocTRES/QOS not filled in yet (ended.waited_enough)
        records += [rec for r in rs if (rec := ig.ended_attempt_record(
            r, job_id=e.job_id, task=e.index, team=e.team, job_gpus=e.gpus, now=now)) is not None]
        reason = None
        if final == states.FAILED:
            word = states.normalize_slurm_state(last.state)
            reason = states.SLURM_FAILURE_REASONS.get(word) or (
                f"exit code {last.exit_code}" if last.exit_code is not None else f"Slurm state {word}")
        finals.append((e.job_id, e.index, final, last.exit_code, last.node, last.end, reason))
    return records, finals


def apply_task_finals(svc: Services, finals, now: datetime) -> None:
    if not finals:
        return
    with svc.db.transaction() as s:
        for job_id, index, final, exit_code, node, end, reason in finals:
            part = s.scalar(select(JobPart).where(JobPart.job_id == job_id, JobPart.kind == "task",
                                                  JobPart.index == index))
            if part is None or part.terminal:
                continue
            part.state = final
            part.exit_code = exit_code if exit_code is not None else part.exit_code
            part.node = node or part.node
            part.ended_at = end or now
            part.reason = reason if final != states.CANCELLED else "cancelled"


def settle_parents(svc: Services, now: datetime, report: TickReport) -> list[int]:
    """Each active sweep's state from its tasks; returns the sweeps that ended this tick."""
    done = []
    with svc.db.transaction() as s:
        jobs = s.scalars(select(Job).where(Job.state.in_(states.ACTIVE - {states.QUEUED}),
                                           Job.slurm_job_id.is_not(None),
                                           Job.task_count.is_not(None)))
        for job in jobs:
            tasks = _tasks(s, job.id)
            started = any(t.started_at is not None or t.terminal for t in tasks)
            target, reason = parts.aggregate([t.state for t in tasks],
                                             cancel_requested=job.cancel_requested, started=started)
            if target in states.TERMINAL:
                ends = [t.ended_at for t in tasks if t.ended_at is not None]
                exits = [t.exit_code for t in tasks if t.exit_code]
                job.exit_code = exits[0] if exits else 0 if target == states.SUCCEEDED else None
                move(job, target, now, report, reason=reason)
                if job.state in states.TERMINAL:
                    job.ended_at = max(ends) if ends else now
                    done.append(job.id)
            else:
                if target == states.RUNNING and job.state == states.PENDING \
                        or job.state == states.UNKNOWN:
                    move(job, target, now, report)
                elif job.state == states.RUNNING and target == states.PENDING:
                    pass   # started once: the sweep runs until its last task ends
                if job.state not in states.TERMINAL and job.balance_hold_at is None:
                    job.reason = reason
                first = min((t.started_at for t in tasks if t.started_at), default=None)
                if first is not None and (job.started_at is None or job.started_at > first):
                    job.started_at = first
    return done
