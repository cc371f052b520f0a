"""A job's attempts (docs/FAULTS.md §1): where and when each run of a requeued job happened,
how it ended, its minutes and its cost. Flask-free: the job page, ``GET /api/jobs/<id>`` and
``slipway job show`` all read ``attempts_of``.

Slurm requeues a batch job whose node died (``JobRequeue=1``: the attempt ends ``NODE_FAIL``
when slurmctld declares the node down after ``SlurmdTimeout``) or that an emergency job
preempted (``PREEMPTED``); ``scontrol requeue`` ends it ``REQUEUED``. Each attempt is a new
``sacct -D`` record and a new ``restart_cnt`` in ``squeue``. The reconciler writes what it sees:

* ``record_live`` — a running attempt as this tick's ``squeue`` shows it (node, start);
* ``record_ended`` — every attempt of a job from ``sacct -D`` (node, start, end, state,
  ElapsedRaw): the attempt that a node failure ended, as soon as Slurm requeued the job, and
  all of them when the job ends;
* ``needs_accounting`` — an earlier attempt is still open here: ask sacct how it ended.

Minutes and cost come from the ledger (one GPU charge per attempt and minute range, keyed by
the attempt), so the page shows exactly what was billed, attempt by attempt."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Job, LedgerEntry, from_micros
from ..db.attempt_models import JobAttempt

KIND_GPU = "gpu"
RUNNING = "RUNNING"
# Slurm's end state of an attempt → how it ended, in words ({node}: where it ran)
ENDINGS = {
    "NODE_FAIL": "node {node} failed",
    "BOOT_FAIL": "node {node} failed to boot",
    "PREEMPTED": "preempted by an emergency job",
    "REQUEUED": "requeued in Slurm (an administrator's requeue)",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "TIMEOUT": "time limit reached",
    "DEADLINE": "deadline reached",
    "OUT_OF_MEMORY": "out of memory",
    "REVOKED": "revoked",
    "SPECIAL_EXIT": "requeued held (special exit)",
}
REQUEUES = frozenset({"NODE_FAIL", "PREEMPTED", "REQUEUED", "BOOT_FAIL"})
ENDED_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})
# an attempt of a settled job that accounting never reported how it ended (its record lost in a
# slurmdbd outage): no answer will come; its minutes are what the ledger holds for it
NO_RECORD = "ended (Slurm accounting kept no record of how)"


def _state_word(state: str) -> str:
    """``CANCELLED by 0`` → ``CANCELLED``."""
    return (state or "").split()[0].upper() if state else ""


def _row(s: Session, job_id: int, attempt: int) -> JobAttempt:
    row = s.scalar(select(JobAttempt).where(JobAttempt.job_id == job_id,
                                            JobAttempt.attempt == attempt))
    if row is None:
        row = JobAttempt(job_id=job_id, attempt=attempt, slurm_state=RUNNING)
        s.add(row)
    return row


def record_live(s: Session, job: Job, rec: Any) -> None:
    """The attempt ``rec`` (a squeue record of ``job``, running) shows: node and start."""
    if rec.start_time is None:
        return
    row = _row(s, job.id, int(rec.restart_count or 0))
    if row.ended_at is not None:
        return   # sacct already said how it ended; a late squeue answer does not reopen it
    row.slurm_job_id = job.slurm_job_id
    row.node = rec.node or row.node
    row.started_at = rec.start_time
    row.slurm_state = RUNNING


def needs_accounting(s: Session, job: Job, restart_count: int) -> bool:
    """An attempt before ``restart_count`` is still open here (Slurm requeued the job since):
    sacct says how and when it ended, and bills it exactly."""
    if restart_count <= 0:
        return False
    open_before = s.scalar(select(func.count()).select_from(JobAttempt).where(
        JobAttempt.job_id == job.id, JobAttempt.attempt < restart_count,
        JobAttempt.ended_at.is_(None)))
    if open_before:
        return True
    known = s.scalar(select(func.count()).select_from(JobAttempt).where(
        JobAttempt.job_id == job.id, JobAttempt.attempt < restart_count))
    # requeued before any tick saw an earlier attempt run (or Slipway was down meanwhile)
    return (known or 0) < restart_count


def record_ended(s: Session, job_id: int, records: Iterable[Any]) -> None:
    """Every attempt of ``job_id`` that ``sacct -D`` reports (``records``: SacctRecords): an
    attempt that never started (cancelled or requeued while pending) is not an attempt."""
    for r in records:
        if r.start is None or (not r.node and not r.elapsed_s):
            continue
        row = _row(s, job_id, int(r.attempt))
        row.slurm_job_id = int(r.job_id) if str(r.job_id).isdigit() else row.slurm_job_id
        row.node = r.node or row.node
        row.started_at = r.start
        if r.complete:
            row.slurm_state = _state_word(r.state) or row.slurm_state
            row.ended_at = r.end
            row.elapsed_s = r.elapsed_s
            row.exit_code = r.exit_code
        else:
            row.slurm_state = RUNNING


def how_it_ended(row: JobAttempt, *, later: bool, job_state: str) -> str:
    """``node a4k-1 failed (requeued)``, ``completed (exit code 0)``, ``running``…"""
    if row.ended_at is None:
        if job_state in ENDED_JOB_STATES:   # the job is settled: sacct will not be asked again
            return NO_RECORD
        if later or job_state == "unknown":
            return "ended (Slurm accounting has not said how yet)"
        return "running"
    word = row.slurm_state
    text = ENDINGS.get(word, f"Slurm state {word}").format(node=row.node or "?")
    if word in ("COMPLETED", "FAILED") and row.exit_code is not None:
        text += f" (exit code {row.exit_code})"
    if word in REQUEUES and later:
        text += "; requeued"
    return text


def attempts_of(session: Session, job: Job, now: datetime | None = None) -> list[dict]:
    """The job's attempts, oldest first: attempt, node, start, end, how it ended, the minutes
    and cost billed for it (the ledger's entries for that attempt). Empty for a job that never
    ran; a sweep's tasks have their own attempts (its parts)."""
    rows = list(session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id)
                                .order_by(JobAttempt.attempt)))
    if not rows:
        return []
    billed = {a: (int(m or 0), int(c or 0)) for a, m, c in session.execute(
        select(LedgerEntry.attempt, func.max(LedgerEntry.to_minute),
               func.sum(LedgerEntry.amount_micros))
        .where(LedgerEntry.kind == KIND_GPU, LedgerEntry.resource == str(job.id))
        .group_by(LedgerEntry.attempt))}
    out = []
    last = rows[-1].attempt
    for row in rows:
        minutes, micros = billed.get(row.attempt, (0, 0))
        cost = from_micros(-micros)
        out.append({
            "attempt": row.attempt, "node": row.node, "slurm_state": row.slurm_state,
            "started_at": row.started_at.isoformat() if row.started_at else None,
            "ended_at": row.ended_at.isoformat() if row.ended_at else None,
            "elapsed_s": row.elapsed_s, "exit_code": row.exit_code,
            "ended": how_it_ended(row, later=row.attempt < last or job.attempt > row.attempt,
                                  job_state=job.state),
            "minutes": minutes, "cost": str(cost), "cost_text": ig.format_usd(cost)})
    return out
