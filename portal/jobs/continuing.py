"""Continue a job: ``slipway job continue N``, ``POST /api/jobs/N/continue``, the job page's
"Continue" button (and the push option ``continue=N``, in ``jobs.push``).

A new job at job N's commit and branch, with its GPUs, time limit, image and input bindings,
whose /output starts as a copy of job N's kept /output (``cp --reflink=auto``: shared blocks
where the filesystem has reflinks). Job N's output never changes. The rules are a rerun's
(``jobs.rerun``): a member of the team, the branch free, the settings allowed, $1.00 to start,
and job N ended with its /output kept."""
from __future__ import annotations

from ..services import Services
from ..teams.access import Actor, OpError
from . import rerun


def continue_job(svc: Services, actor: Actor, job_id: int) -> tuple[int, str]:
    try:
        return rerun.rerun_job(svc, actor, job_id, continue_output=True)
    except rerun.RerunError as exc:
        raise OpError(str(exc), exc.status) from None
