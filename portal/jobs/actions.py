"""What a member does to a job (cancel, run again, delete), with the access rule checked first."""
from __future__ import annotations

from ..db import Job
from ..services import Services
from ..teams.access import ROLE_ADMIN, Actor, Forbidden, OpError, can_cancel, job_access
from . import delete, rerun, service, states, task_cancel


def cancel_job(svc: Services, actor: Actor, job_id: int, *, task: int | None = None
               ) -> service.CancelResult:
    """Cancel a job (a sweep: all its tasks), or with ``task`` one task of a sweep."""
    with svc.db.session() as s:
        job, _p, team, role = job_access(s, actor, job_id)
        if not can_cancel(actor, job, role):
            raise Forbidden(f"{actor.name} may not cancel job {job_id} (only members of team "
                            f"{team.name} may)")
        state = job.state
    if task is not None:
        try:
            return service.CancelResult(job_id, state, task_cancel.cancel_task(
                svc, job_id, task, by=actor.name))
        except task_cancel.TaskCancelError as exc:
            raise OpError(str(exc), 409) from None
    try:
        return service.request_cancel(svc, job_id, by=actor.name)
    except service.JobError as exc:
        raise OpError(str(exc), 409) from None


def rerun_job(svc: Services, actor: Actor, job_id: int, *, emergency: bool = False
              ) -> tuple[int, str]:
    """``jobs.rerun.rerun_job`` with its refusals as OpError (web, API and CLI); ``emergency``:
    as an emergency job (refused without the emergency right)."""
    try:
        return rerun.rerun_job(svc, actor, job_id, emergency=emergency)
    except rerun.RerunError as exc:
        raise OpError(str(exc), exc.status) from None


def can_delete_job(actor: Actor, job: Job, role: str | None) -> bool:
    """Team administrators/owners and cluster admins delete an ENDED job (``jobs.delete``)."""
    return job.state in states.TERMINAL and (actor.is_cluster_admin or role in ROLE_ADMIN)


def delete_job(svc: Services, actor: Actor, job_id: int, confirm: str):
    """``jobs.delete.delete_job`` with its refusals as OpError (web, API and CLI)."""
    try:
        return delete.delete_job(svc, actor, job_id, confirm)
    except delete.JobDeleteError as exc:
        raise OpError(str(exc), exc.status) from None
