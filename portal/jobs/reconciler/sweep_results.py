"""A sweep's results, once all its tasks ended (docs/SHARING.md): each task pushed its files to
``results/<branch>/<job>/<task>``; ONE commit on the branch merges them, each task's files under
``sweep-<job>/task-<i>/`` (``Git.merge_sweep``: compare-and-swap, idempotent). A failed merge
is tried again at the next ticks for ``RETRY_FOR_S``, then recorded on the job."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from ...db import Job, JobPart
from ...services import Services, log
from .. import states
from ..shaped_spec import task_ref
from .report import TickReport

RETRY_FOR_S = 600.0


def merge_ended(svc: Services, now: datetime, report: TickReport) -> None:
    with svc.db.session() as s:
        rows = s.execute(select(Job.id, Job.branch, Job.commit_sha, Job.ended_at, Job.task_count)
                         .where(Job.task_count.is_not(None), Job.state.in_(states.TERMINAL),
                                Job.results_message.is_(None), Job.slurm_job_id.is_not(None))
                         ).all()
        todo = []
        for job_id, branch, commit, ended_at, _count in rows:
            job = s.get(Job, job_id)
            todo.append((job_id, branch, commit, ended_at, job.project.team.name,
                         job.project.name,
                         [p.index for p in s.scalars(select(JobPart).where(
                             JobPart.job_id == job_id, JobPart.kind == "task"))]))
    for job_id, branch, commit, ended_at, team, project, indexes in todo:
        try:
            tasks = {}
            for i in indexes:
                sha = svc.git.resolve_ref(team, project, task_ref(branch, job_id, i))
                if sha:
                    tasks[i] = sha
            result = svc.git.merge_sweep(team, project, branch=branch, base=commit, tasks=tasks,
                                         job_id=job_id)
        except Exception as exc:  # noqa: BLE001 — retried, then said on the job
            report.errors.append(f"merging the results of sweep {job_id}: {exc}")
            log.warning("sweep %s: merge failed: %s", job_id, exc)
            if ended_at is not None and (now - ended_at).total_seconds() < RETRY_FOR_S:
                continue
            _record(svc, job_id, None, {}, f"slipway: the tasks' results could not be merged "
                    f"onto {branch}: {exc}; each task's files stay on results/{branch}/{job_id}/<task>")
            continue
        _record(svc, job_id, result.sha, tasks, result.message)


def _record(svc: Services, job_id: int, sha: str | None, tasks: dict[int, str], message: str) -> None:
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        job.results_sha = sha
        job.results_ref = f"refs/heads/{job.branch}" if sha else None
        job.branch_updated = bool(sha)
        job.results_message = (message or "slipway: no task pushed any result")[:4000]
        for part in s.scalars(select(JobPart).where(JobPart.job_id == job_id,
                                                    JobPart.kind == "task")):
            if part.index in tasks:
                part.results_sha = tasks[part.index]
