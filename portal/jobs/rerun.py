"""Run a job again, without an empty commit: ``slipway job rerun N``, ``POST /api/jobs/<id>/rerun``
and the job page's "Run again" button all call ``rerun_job``.

The new job runs on the same project and branch, at the branch's CURRENT tip (so it includes
the results the old job pushed back, and any push since), with the old job's GPU type and count,
time limit and image. The rules are a push's, through the same code (``portal.jobs.push``'s rooms):

* who: a member of the job's team (any role) or a cluster administrator; anyone else is told
  the job does not exist (404), as everywhere else; the actor becomes the new job's pusher
  (its Unix user runs the job; the server's operator, who is no user, reruns as the old job's
  pusher);
* the branch must still exist; ``slipway-entrypoint.sh`` must be a regular file at its tip;
* the settings must still be allowed (``push_options.settings_problems``: GPU limits, time limit,
  image in the catalog with a build for the configured runtime);
* the team's balance is at least ``min_start_balance`` ($1.00);
* one active job per branch (``lookups.active_job`` and the partial unique index): an active old
  job, or a push that got there first, makes the rerun refused (409) with the same words.

The job is reserved (``queued``) and submitted with ``submit.submit_job``, exactly as a push's
post-receive does; its answer (queued, unknown, or why it failed) is the rerun's message.
"""
from __future__ import annotations

from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..billing import ledger as billing
from .. import integrations as ig
from ..db import Job, Membership, Project, Team, User
from ..services import Services, log
from ..policy.admission import admit
from .reserve import BranchBusy, reserve
from . import job_data, lookups, push_options, recovery, submit, sweeps


class Actor(Protocol):
    id: int
    name: str
    is_cluster_admin: bool


class RerunError(Exception):
    """A refused rerun; ``status`` as HTTP: 404 (no such job for this actor) or 409."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


def _plain(message: str) -> str:
    """Push replies say ``slipway: ...``; the rerun's caller prints its own prefix."""
    return message[len("slipway: "):] if message.startswith("slipway: ") else message


def rerun_job(svc: Services, actor: Actor, job_id: int, *, continue_output: bool = False,
              emergency: bool = False) -> tuple[int, str]:
    """Reserve and submit a new job like ``job_id`` (same GPUs, time, image and input
    bindings) at its branch's current tip -- or, with ``continue_output``, at the SAME commit
    with a /output that starts as a copy of ``job_id``'s kept /output (``slipway job continue``).

    Returns (new job id, message). Raises RerunError when the rerun is refused (nothing is
    reserved then)."""
    cfg = svc.config
    with svc.db.session() as s:
        row = s.execute(select(Job, Project, Team).join(Project, Job.project_id == Project.id)
                        .join(Team, Project.team_id == Team.id).where(Job.id == job_id)).first()
        if row is None:
            raise RerunError(f"there is no job {job_id}", 404)
        old, project, team = row
        member = s.scalar(select(Membership.id).where(Membership.user_id == actor.id,
                                                      Membership.team_id == team.id))
        if member is None and not actor.is_cluster_admin:
            raise RerunError(f"there is no job {job_id}", 404)
        pusher_id = actor.id if s.get(User, actor.id) is not None else None
        if pusher_id is None and actor.is_cluster_admin:
            pusher_id = old.pusher_id  # the server's operator (no user): as the old job's pusher
        if pusher_id is None:
            raise RerunError(f"job {job_id} has no pusher to run it as: name a user (--as USER)")
        busy = lookups.active_job(s, project.id, old.branch)
        if busy is not None:
            raise RerunError(_plain(lookups.busy_message(busy)))
        settings = push_options.JobSettings(gpu_type=old.gpu_type, gpu_count=old.gpu_count,
                                            time_limit_min=old.time_limit_min, image=old.image,
                                            cpus=old.cpus, mem_mb=old.mem_mb)
        # today's limits and quotas hold for a re-run too; emergency only with the right
        admission = admit(svc, s, team=team, user_id=pusher_id, project=project,
                          overrides={"emergency": emergency}, base=settings,
                          base_compute_type=old.compute_type, base_partition=old.partition,
                          base_shape=sweeps.Shape(
                              tasks=tuple(sweeps.tasks_of(old.sweep, old.task_count)),
                              max_parallel=old.max_parallel, nodes=old.nodes or 1))
        problems = [_plain(p) for p in admission.problems]
        decision = ig.can_start(billing.balance(s, team.id), team.name, cfg.min_start_balance)
        if not decision.ok:
            problems.append(decision.message)
        if continue_output:
            data_plan, data_problems = job_data.plan(s, project, team, {}, continue_from=job_id)
        else:
            data_plan, data_problems = job_data.plan(s, project, team, {}, inputs_from=job_id)
        problems += [_plain(p) for p in data_problems]
        team_name, project_name, project_id, branch = team.name, project.name, project.id, old.branch
        old_commit, kind = old.commit_sha, old.kind
    tip = recovery.branch_tip(svc, team_name, project_name, branch)
    if tip is None:
        raise RerunError(f"branch {branch} no longer exists in {team_name}/{project_name}: "
                         f"nothing to run; push it again")
    # a continued task runs the same commit again; a workspace always opens the branch's tip
    # (what its last stop committed back)
    commit = old_commit if continue_output and kind != "workspace" else tip
    msg = svc.git.entrypoint_problem(team_name, project_name, commit, None) \
        if kind != "workspace" else None
    if msg:
        problems.append(_plain(msg) + f" (branch {branch} at {commit[:12]})")
    if problems:
        what = "be continued" if continue_output else "run again"
        raise RerunError(f"job {job_id} cannot {what}: " + "; ".join(problems))

    now = svc.now()
    try:
        with svc.db.transaction() as s:
            new_id = reserve(s, project_id=project_id, branch=branch, commit=commit,
                             pusher_id=pusher_id, admission=admission, data_plan=data_plan,
                             by=actor.name, now=now, kind=kind).id
    except BranchBusy as exc:
        raise RerunError(_plain(str(exc))) from None
    except IntegrityError:  # a push reserved the branch between the check and the insert
        with svc.db.session() as s:
            busy = lookups.active_job(s, project_id, branch)
        raise RerunError(_plain(lookups.busy_message(busy)) if busy is not None
                         else f"branch {branch} got a job just now") from None
    how = "continued" if continue_output else "run again"
    log.info("job %s: %s by %s as job %s at %s", job_id, how, actor.name, new_id, commit[:12])
    _ok, message = submit.submit_job(svc, new_id)
    if admission.notes:
        message = "; ".join([_plain(n) for n in admission.notes] + [message])
    if continue_output:
        return new_id, (f"job {job_id} continues as job {new_id} at {commit[:12]} with its /output: "
                        f"{_plain(message)}")
    return new_id, f"job {job_id} runs again as job {new_id} at {commit[:12]}: {_plain(message)}"
