"""Cancelling a sweep, or one of its tasks (docs/SHARING.md). Tasks that have not started are
cancelled outright (``scancel <array>_<i>``); running ones get TERM, so their runner pushes
their files before they end (the reconciler's hard cancel follows after ``cancel_grace``, as for
any job). The $0 cut-off cancels a sweep through the same path (``service.request_cancel``)."""
from __future__ import annotations

from sqlalchemy import select

from .. import integrations as ig
from ..db import Job, JobPart
from ..services import Services, log
from . import parts, states


class TaskCancelError(Exception):
    pass


def _pending_and_running(svc: Services, job_id: int) -> tuple[list[int], bool]:
    with svc.db.session() as s:
        rows = s.execute(select(JobPart.index, JobPart.state).where(
            JobPart.job_id == job_id, JobPart.kind == "task")).all()
    waiting = [i for i, st in rows if st == parts.PART_PENDING]
    return waiting, any(st == parts.PART_RUNNING for _i, st in rows)


def cancel_sweep(svc: Services, job_id: int, array_id: int) -> str:
    waiting, running = _pending_and_running(svc, job_id)
    problems = []
    for i in waiting:
        try:
            svc.backend.cancel_task(array_id, i)
        except ig.JobNotFound:
            continue   # started and ended, or never split out of the array: TERM below
        except ig.SlurmBridgeError as exc:
            problems.append(f"task {i}: {exc}")
    try:
        svc.backend.cancel(array_id, signal="TERM", batch_only=True)
    except ig.JobNotFound:
        pass
    except ig.SlurmBridgeError as exc:
        if running:
            problems.append(str(exc))
    if problems:
        log.warning("sweep %s: cancel: %s", job_id, "; ".join(problems))
        return (f"job {job_id}: cancel recorded; Slurm refused part of it ({problems[0]}); it is "
                f"retried within {svc.config.cancel_grace:g} s")
    return (f"job {job_id} is stopping: {len(waiting)} waiting task(s) cancelled"
            + ("; running tasks push their files to results/<branch>/<job>/<task>, merged "
               "onto the branch when the last one ends" if running else ""))


def cancel_task(svc: Services, job_id: int, index: int, *, by: str) -> str:
    """Cancel task ``index`` of sweep ``job_id`` (the others go on)."""
    now = svc.now()
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise TaskCancelError(f"there is no job {job_id}")
        if not job.task_count:
            raise TaskCancelError(f"job {job_id} is not a sweep: it has no tasks (cancel the job)")
        if job.state in states.TERMINAL:
            raise TaskCancelError(f"job {job_id} already ended ({job.state})")
        part = s.scalar(select(JobPart).where(JobPart.job_id == job_id, JobPart.kind == "task",
                                              JobPart.index == index))
        if part is None:
            raise TaskCancelError(f"job {job_id} has tasks 0..{job.task_count - 1}, not {index}")
        if part.terminal:
            raise TaskCancelError(f"task {index} of job {job_id} already ended ({part.state})")
        part.cancel_requested_at = part.cancel_requested_at or now
        part.reason = f"cancelled by {by}"
        array_id, running = job.slurm_job_id, part.state == parts.PART_RUNNING
    if array_id is None:
        return f"job {job_id} task {index}: cancel recorded (the sweep is not in Slurm yet)"
    svc.wake.set()
    try:
        svc.backend.cancel_task(array_id, index, signal="TERM" if running else None)
    except ig.JobNotFound:
        return f"job {job_id} task {index}: Slurm no longer has it; its end is recorded shortly"
    except ig.SlurmBridgeError as exc:
        raise TaskCancelError(f"Slurm refused to cancel task {index} of job {job_id}: {exc}") \
            from None
    return (f"job {job_id} task {index} is stopping; its files are pushed to its results ref"
            if running else f"job {job_id} task {index} cancelled (it had not started)")
