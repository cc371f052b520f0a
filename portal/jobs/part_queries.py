"""A job's parts as the front doors show them (docs/SHARING.md): a sweep's tasks (values,
state, node, cost, exit code, results ref, log) and a multi-node job's nodes, with the job's
compute in words. Flask-free: the web page, the API and the CLI's local mode all call these.

* ``job_parts(session, job, svc=None)`` → the task dictionaries (``log`` tells whether the
  task's log file exists when ``svc`` is given); ``job_nodes(session, job)`` → the nodes;
* ``detail_fields(svc, session, job)`` → ``{"shape": …, "tasks": […], "nodes": […]}`` (the
  lists only when the job has them), what ``GET /api/jobs/<id>`` and ``slipway job show`` add;
* ``task_log_chunk(svc, job, index, offset, limit)`` → a task's log, in the job log's shape."""
from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Job, JobPart, from_micros
from ..services import Services
from ..teams.access import OpError
from . import attempts, job_shape, runner_spec, shaped_spec, states, sweeps
from .queries import read_chunk

MAX_TASK_INDEX = 2**31 - 1   # job_parts.index is an INTEGER column

def task_results_ref(job: Job, index: int) -> str:
    """``results/<branch>/<job>/<i>``: the branch a task's results are pushed to."""
    return shaped_spec.task_ref(job.branch, job.id, index).removeprefix("refs/heads/")


def _iso(t) -> str | None:
    return t.isoformat() if t else None


def _params(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _parts(session: Session, job_id: int, kind: str) -> list[JobPart]:
    return list(session.scalars(select(JobPart).where(JobPart.job_id == job_id,
                                                      JobPart.kind == kind)
                                .order_by(JobPart.index)))


def task_dict(job: Job, part: JobPart, *, log: bool | None = None) -> dict:
    params = _params(part.params)
    cost = from_micros(part.cost_micros or 0)
    return {"index": part.index, "state": part.state, "active": not part.terminal,
            "params": params, "values": sweeps.describe(params), "node": part.node,
            "slurm_id": part.slurm_id, "attempt": part.attempt or 0,
            "started_at": _iso(part.started_at), "ended_at": _iso(part.ended_at),
            "exit_code": part.exit_code, "reason": part.reason,
            "cost": str(cost), "cost_text": ig.format_usd(cost),
            "results_ref": task_results_ref(job, part.index), "results_sha": part.results_sha,
            "results_message": part.results_message,
            "cancel_requested": part.cancel_requested_at is not None, "log": log}


def job_parts(session: Session, job: Job, svc: Services | None = None) -> list[dict]:
    """The sweep's tasks in order (empty for a job that is not a sweep)."""
    if not job.task_count:
        return []
    out = []
    for part in _parts(session, job.id, "task"):
        log = runner_spec.task_log_path(svc, job.id, part.index).exists() if svc else None
        out.append(task_dict(job, part, log=log))
    return out


def job_nodes(session: Session, job: Job) -> list[dict]:
    """A multi-node job's nodes by rank (recorded once the job started; empty before)."""
    if (job.nodes or 1) <= 1:
        return []
    return [{"rank": p.index, "node": p.node, "state": p.state,
             "started_at": _iso(p.started_at), "ended_at": _iso(p.ended_at),
             "exit_code": p.exit_code} for p in _parts(session, job.id, "node")]


def shape(svc: Services, job: Job) -> dict:
    return job_shape.shape_of(job, svc.config.shards_of)


def detail_fields(svc: Services, session: Session, job: Job) -> dict:
    """What a job's own page adds to its dictionary: its shape (with the configured shard
    sizes), its tasks when it is a sweep, its nodes when it runs on several."""
    d: dict = {"shape": shape(svc, job)}
    if job.task_count:
        d["tasks"] = job_parts(session, job, svc)
    if (job.nodes or 1) > 1:
        d["nodes"] = job_nodes(session, job)
    d["attempts"] = attempts.attempts_of(session, job)   # docs/FAULTS.md §1: each run, billed
    return d


def task_part(session: Session, job: Job, index: int) -> JobPart:
    """Task ``index`` of ``job``, or OpError 404 saying which tasks there are."""
    if not job.task_count:
        raise OpError(f"job {job.id} is not a sweep: it has no tasks", 404)
    part = None if not 0 <= index <= MAX_TASK_INDEX else session.scalar(
        select(JobPart).where(JobPart.job_id == job.id, JobPart.kind == "task",
                              JobPart.index == index))
    if part is None:
        raise OpError(f"job {job.id} has tasks 0..{job.task_count - 1}, not {index}", 404)
    return part


def task_log_chunk(svc: Services, session: Session, job: Job, index: int, offset: int,
                   limit: int = 256 * 1024) -> dict:
    """Task ``index``'s log from ``offset`` with the task's state (``terminal``: the task, or
    the whole job, has ended: the log is complete) and the job's state as ``job_state``."""
    part = task_part(session, job, index)
    chunk = read_chunk(runner_spec.task_log_path(svc, job.id, index), offset, limit)
    cost = from_micros(part.cost_micros or 0)
    chunk.update(task=index, state=part.state, job_state=job.state,
                 terminal=part.terminal or job.state in states.TERMINAL, reason=part.reason,
                 exit_code=part.exit_code, node=part.node, cost=str(cost),
                 cost_text=ig.format_usd(cost))
    return chunk
