"""Jobs that left the queue: ONE bounded ``sacct`` call for all of them, their final states,
exit codes and nodes, and the ended attempts to bill (step 2 in the package's docstring)."""
from __future__ import annotations

from datetime import datetime, timedelta

from ... import integrations as ig
from ...db import Job
from ...services import Services
from .. import attempts, node_parts, states
from .identity import record_is_job
from .report import ACCOUNTING_DOWN, STALE_REASONS, Ended, TickReport, move


# how an attempt that Slurm requeued ends in sacct (-D): never how the job itself ended while a
# later attempt exists
REQUEUED_ENDS = frozenset({"NODE_FAIL", "REQUEUED", "PREEMPTED"})
# a job Slurm lost before it started: submitted again (jobs.unknown), never failed
LOST_NOTE = ("Slurm lost the job before it started (Slurm job {slurm_id} is in neither its "
             "queue nor its accounting's ended jobs: a controller that took over from an older "
             "saved state); Slipway submits it again")


def ended_jobs(svc: Services, ended: list[Ended], now: datetime, report: TickReport):
    if not ended:
        return [], []
    cfg = svc.config
    start = min(e.since for e in ended) - timedelta(seconds=cfg.accounting_slack)
    try:
        recs = svc.backend.accounting(start=start, end=now, job_ids=[e.slurm_id for e in ended])
    except ig.SlurmBridgeError as exc:
        report.errors.append(f"accounting failed: {exc}")
        _note_accounting_down(svc, [e for e in ended if not e.requeued], now, report, exc)
        return [], []
    by_id: dict[int, list] = {}
    for r in recs:
        by_id.setdefault(int(r.job_id), []).append(r)
    records, finals, reported = [], [], []
    for e in ended:
        rs = [r for r in by_id.get(e.slurm_id, []) if record_is_job(r, e.job_id)]
        if _lost_before_start(e, rs):
            if (now - (e.last_seen or e.since)).total_seconds() > cfg.unknown_submission_grace:
                # submitted again, unless its user cancelled it: then it just ends so
                finals.append((e.job_id, states.CANCELLED if e.cancel_requested
                               else states.UNKNOWN, None, None, None,
                               LOST_NOTE.format(slurm_id=e.slurm_id)))
            continue
        if e.requeued:   # still in the queue: its earlier attempts that sacct has settled
            done = [r for r in rs if r.settled and r.attempt < e.attempt]
            records += [rec for r in done if (rec := ig.ended_attempt_record(
                r, job_id=e.job_id, team=e.team, job_gpus=e.gpus, now=now)) is not None]
            reported.append((e.job_id, done))
            continue
        if not rs:
            seen = e.last_seen or e.since
            if (now - seen).total_seconds() > cfg.lost_after:
                finals.append((e.job_id, states.FAILED, None, None, None,
                               "Slurm lost track of the job (in neither the queue nor accounting)"))
            continue
        last = max(rs, key=lambda r: r.attempt)
        if (states.normalize_slurm_state(last.state) in REQUEUED_ENDS and last.attempt < e.attempt
                and not waited_enough(last, e.last_seen or e.since, now, cfg.lost_after,
                                      end_known=False)):
            # sacct's latest record is an attempt Slurm requeued, and squeue showed a later one:
            # its records are still on their way (slurmdbd was down), the NODE_FAIL is not
            # how the job ended
            continue
        final = states.final_state(last.state, cancel_requested=e.cancel_requested)
        if final is None:
            continue  # accounting says it has not ended: ask again next tick
        if not last.settled and not waited_enough(last, e.last_seen or e.since, now,
                                                  cfg.lost_after):
            continue  # Slurm still filling in End/AllocTRES/QOS: wait for the fields
        records += [rec for r in rs if (rec := ig.ended_attempt_record(
            r, job_id=e.job_id, team=e.team, job_gpus=e.gpus, now=now)) is not None]
        reported.append((e.job_id, rs))
        word = states.normalize_slurm_state(last.state)
        if final == states.FAILED:
            reason = states.SLURM_FAILURE_REASONS.get(word)
            if reason is None:
                reason = (f"exit code {last.exit_code}" if last.exit_code is not None
                          else f"Slurm state {word}")
        elif final == states.CANCELLED:
            reason = None  # keep the cancel reason recorded with the request
        else:
            reason = None
        finals.append((e.job_id, final, last.exit_code, last.node, last.end, reason))
    _record_attempts(svc, reported)
    return records, finals


def _lost_before_start(e: Ended, rs) -> bool:
    """Slurm lost this job before it ran: a successful squeue no longer lists it at all and
    accounting has no attempt that started or ended (at most a PENDING record that no
    controller holds any more)."""
    return (e.absent and e.never_ran and not e.requeued
            and not any(r.start is not None or r.complete for r in rs))


def waited_enough(rec, seen: datetime, now: datetime, lost_after: float,
                  end_known: bool = True) -> bool:
    """Bill an unsettled record anyway: its End is known and 120 s old (AllocTRES/QOS may never
    come), or it has no End and the job was last seen ``lost_after`` ago (accounting never
    filled it in). Until then an ended attempt without an End is NOT billed: its ElapsedRaw is
    "now - start" and still growing."""
    if end_known and rec.end is not None:
        return (now - rec.end).total_seconds() >= 120
    return (now - seen).total_seconds() > lost_after


def _record_attempts(svc: Services, reported: list) -> None:
    """Where, when and how each attempt sacct reported ran and ended (the job page's attempts)."""
    if not any(rs for _, rs in reported):
        return
    with svc.db.transaction() as s:
        for job_id, rs in reported:
            if rs and s.get(Job, job_id) is not None:
                attempts.record_ended(s, job_id, rs)



def _note_accounting_down(svc: Services, ended: list[Ended], now: datetime,
                          report: TickReport, exc: Exception) -> None:
    """Jobs that left the queue while accounting does not answer: how they ended is not known,
    so they are ``unknown`` (never failed, never billed twice) with the reason in words, until
    sacct answers and they reach their true final state (state machine: unknown remembers the
    state it came from)."""
    if not ended:
        return
    with svc.db.transaction() as s:
        for e in ended:
            job = s.get(Job, e.job_id)
            if job is not None and job.state not in states.TERMINAL:
                move(job, states.UNKNOWN, now, report)
                job.reason = f"{ACCOUNTING_DOWN}: {exc}"[:500]



def apply_finals(svc: Services, finals, now: datetime, report: TickReport) -> None:
    if not finals:
        return
    with svc.db.transaction() as s:
        for job_id, final, exit_code, node, end, reason in finals:
            job = s.get(Job, job_id)
            if job is None or job.state in states.TERMINAL:
                continue
            if final == states.UNKNOWN:   # lost before it started: submitted again
                _resubmit_lost(job, now, report, reason)
                continue
            if exit_code is not None:
                job.exit_code = exit_code
            if node and not (_many_hosts(job.node) and not _many_hosts(node)):
                # (slurmdbd's record from the completion message, before the start message,
                # names only the batch host of a multi-node job: squeue's list is kept)
                job.node = node
            if final == states.CANCELLED:
                reason = job.cancel_reason or "cancelled in Slurm"
            if reason == states.SLURM_FAILURE_REASONS["OUT_OF_MEMORY"]:
                reason = out_of_memory_reason(job, svc.config.default_mem_per_cpu_mb)
            if reason is None and (job.reason or "").startswith(
                    STALE_REASONS + (states.STOPPED_BY_SLURM,)):
                job.reason = None  # a poll's or the queue's word, not why the job ended
            move(job, final, now, report, reason=reason)
            if job.state in states.TERMINAL and end is not None:
                job.ended_at = end
            node_parts.finish(s, job)


def _many_hosts(nodes: str | None) -> bool:
    """``a4k-[1-2]`` or ``a4k-1,a6k-1``: a node list naming more than one host."""
    return bool(nodes) and ("[" in nodes or "," in nodes)


def _resubmit_lost(job: Job, now: datetime, report: TickReport, reason: str) -> None:
    """A job Slurm lost before it ran becomes an unknown submission without a Slurm id
    (``submit.unknown_submission``): ``jobs.unknown`` looks for it by name once more and
    submits it again after ``unknown_submission_grace`` (a conditional claim: never twice)."""
    if job.state not in (states.PENDING, states.UNKNOWN) or job.started_at is not None:
        return
    move(job, states.UNKNOWN, now, report, reason=reason)
    job.slurm_job_id = None
    report.lost.append(job.id)


def out_of_memory_reason(job: Job, default_mem_per_cpu_mb: int) -> str:
    """``out of memory at 4.0 GiB``: the limit the job had (``mem=``, its compute type's, or
    Slurm's DefMemPerCPU x cores), and how to ask for more."""
    cores = job.gpu_count if job.gpu_type == "cpu" else (job.cpus or 1)
    mb = job.mem_mb or default_mem_per_cpu_mb * cores
    return (f"out of memory at {mb / 1024:.1f} GiB (the job's memory limit); ask for more with "
            f"-o mem=…, e.g. mem={max(2, -(-mb * 2 // 1024))}G")
