"""Delete one ended job: its results ref (``results/<branch>/<job>`` in the project's bare
repository), its job directory (log, spec, checkout) and its row. Money history stays: ledger
entries keep their job id, and job ids are never handed out again (migration 0005).

Who: the team's administrators and owners, and cluster administrators (others in the team: 403;
outsiders: 404, the job does not exist for them). What: only a job in a terminal state (a queued,
pending, running, finishing or unknown job: 409 "cancel it first"). How: an explicit
confirmation, the job's number typed again (like a project's delete).

Order, so that a failure loses nothing and a retry finishes the work: the checks (read only),
then the results ref and the job directory, then the row in one transaction. If git or the file
system fails, the row is still there, the error says so, and the same delete can be run again.
The web page, the API (``DELETE /api/jobs/<id>``) and ``slipway job delete N --yes`` all call
``delete_job`` (through ``portal.web.job_actions.delete_job``).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete as sql_delete
from sqlalchemy import select

from git_gateway.node import results

from ..db import Job, Membership, Project, Team
from ..services import Services
from ..data import outputs as data_outputs
from ..teams.access import OpError
from . import runner_spec, states

DELETERS = ("administrator", "owner")


class Actor(Protocol):
    id: int
    name: str
    is_cluster_admin: bool


class JobDeleteError(Exception):
    """A refused or failed delete; ``status`` as HTTP: 400, 403, 404, 409 or 500."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DeletedJob:
    job_id: int
    refs_removed: tuple[str, ...]
    message: str


def results_refs(job: Job) -> set[str]:
    """The job's results ref(s) in the bare repository: where the runner pushes
    (``results/<branch>/<job>``) and what the job recorded, if that is under results/."""
    refs = {results.results_ref(job.branch, job.id)}
    if job.results_ref and job.results_ref.startswith("refs/heads/results/"):
        refs.add(job.results_ref)
    return refs


def _check(svc: Services, actor: Actor, job_id: int, confirm: str) -> tuple[str, str, set[str]]:
    with svc.db.session() as s:
        row = s.execute(select(Job, Project.name, Team.id, Team.name)
                        .join(Project, Job.project_id == Project.id)
                        .join(Team, Project.team_id == Team.id).where(Job.id == job_id)).first()
        if row is None:
            raise JobDeleteError(f"there is no job {job_id}", 404)
        job, project, team_id, team = row
        role = s.scalar(select(Membership.role).where(Membership.user_id == actor.id,
                                                      Membership.team_id == team_id))
        if role is None and not actor.is_cluster_admin:
            raise JobDeleteError(f"there is no job {job_id}", 404)
        if role not in DELETERS and not actor.is_cluster_admin:
            raise JobDeleteError(f"{actor.name} may not delete jobs in team {team} "
                                 f"(needs role: {' or '.join(DELETERS)})", 403)
        if (confirm or "").strip().lstrip("#") != str(job_id):
            raise JobDeleteError(f"type the job number {job_id} to confirm; nothing was deleted")
        if job.state not in states.TERMINAL:
            raise JobDeleteError(f"job {job_id} is {job.state}: cancel it first (only an ended job "
                                 "can be deleted); nothing was deleted", 409)
        return team, project, results_refs(job)


def _remove_dir(path) -> None:
    """Rename first (a reader never sees half a directory), then remove; errors propagate."""
    if not os.path.lexists(path):
        return
    trash = path.parent / f".{path.name}.deleting-{os.getpid()}"
    if os.path.lexists(trash):  # an earlier attempt that failed half-way
        shutil.rmtree(trash)
    os.rename(path, trash)
    shutil.rmtree(trash)


def delete_job(svc: Services, actor: Actor, job_id: int, confirm: str) -> DeletedJob:
    """Delete ended job ``job_id`` (see the module doc); raises JobDeleteError when refused."""
    team, project, refs = _check(svc, actor, job_id, confirm)
    try:
        kept = data_outputs.before_jobs_deleted(svc, [job_id])
    except OpError as exc:
        raise JobDeleteError(str(exc), exc.status) from None
    removed = []
    try:
        for ref in sorted(refs):
            if svc.git.delete_ref(team, project, ref):
                removed.append(ref)
        _remove_dir(runner_spec.job_dir(svc, job_id))
    except (OSError, RuntimeError, ValueError) as exc:
        raise JobDeleteError(f"job {job_id} could not be deleted ({exc}); it is kept: try again",
                             500) from None
    with svc.db.transaction() as s:
        s.execute(sql_delete(Job).where(Job.id == job_id, Job.state.in_(states.TERMINAL)))
    data_outputs.remove_kept(kept)
    what = ", ".join([r[len("refs/heads/"):] for r in removed] + ["its log and job directory"]
                     + (["its kept /output"] if kept else []))
    return DeletedJob(job_id, tuple(removed),
                      f"job {job_id} deleted ({what}); its charges stay in the ledger")
