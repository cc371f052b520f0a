"""A sweep task's runner events (docs/SHARING.md): ``started`` / ``finishing`` / ``results``
carry ``"task": i`` and land on the task's row. The sweep itself never goes ``finishing``: its
state follows its tasks (reconciler.arrays); a first ``started`` moves it to running at once."""
from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Job, JobPart
from . import parts, states


class TaskEventError(ValueError):
    pass


def apply(s: Session, job: Job, kind: str, event: Mapping[str, Any], now: datetime,
          wake: threading.Event | None = None) -> str:
    index = event.get("task")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < job.task_count:
        raise TaskEventError(f"job {job.id} is a sweep of {job.task_count} tasks: an event must "
                             f"name its task (0..{job.task_count - 1}), not {index!r}")
    part = s.scalar(select(JobPart).where(JobPart.job_id == job.id, JobPart.kind == "task",
                                          JobPart.index == index))
    if part is None:
        raise TaskEventError(f"job {job.id} has no task {index}")
    if kind == "started":
        if not part.terminal:
            part.state = parts.PART_RUNNING
            part.started_at = part.started_at or now
        if job.state == states.PENDING:
            states.transition(job, states.RUNNING, now=now)
    elif kind == "finishing":
        code = event.get("exit_code")
        if isinstance(code, int) and not isinstance(code, bool):
            part.exit_code = code
        if wake is not None:
            wake.set()
    elif kind == "results":
        part.results_sha = str(event.get("sha") or "") or None
        part.results_message = str(event.get("message") or "")[:4000] or None
        if wake is not None:
            wake.set()
    return part.state
