"""THE reservation of a new job row: one active job per branch (checked here, and by the
partial unique index when two writers race: ``IntegrityError`` at the flush), the compute the
admission decided, the input bindings, and the policy record. Push, re-run, workspaces and
``slipway submit`` all reserve through ``reserve``; each says "busy" in its own words."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

import json

from ..db import Job, JobPart
from ..policy.admission import Admission, record_job
from . import job_data, lookups, states


class BranchBusy(Exception):
    """The branch already has an active job (the message says which, and how to cancel it)."""


def reserve(s: Session, *, project_id: int, branch: str, commit: str, pusher_id: int | None,
            admission: Admission, data_plan, by: str, now: datetime, kind: str = "task",
            checked: bool = False) -> Job:
    """Insert a queued job in the caller's write transaction. Raises BranchBusy, or
    IntegrityError when a concurrent writer reserved the branch between the check and the
    insert. ``checked``: the caller found the branch free in this same write transaction."""
    busy = None if checked else lookups.active_job(s, project_id, branch)
    if busy is not None:
        raise BranchBusy(lookups.busy_message(busy))
    job = Job(project_id=project_id, branch=branch, commit_sha=commit, pusher_id=pusher_id,
              kind=kind, state=states.QUEUED, **admission.row_fields(),
              created_at=now, state_changed_at=now)
    s.add(job)
    s.flush()  # the partial unique index fires here on PostgreSQL races
    for i, params in enumerate(admission.shape.tasks):   # a sweep: one row per task
        s.add(JobPart(job_id=job.id, kind="task", index=i, state="pending",
                      params=json.dumps(params) if params else None))
    job_data.apply(s, job.id, data_plan)
    record_job(s, job, admission, by)
    return job
