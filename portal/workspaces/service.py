"""Workspaces: start, stop, restart, list, show -- and what the gateway asks (``gateway_target``,
``touch``). A workspace is a job of kind "workspace" (docs/WORKSPACES.md): the rules of a push
(member, settings, $1.00 to start, one active job per branch, bindings) plus the caps of the
workspace policy and an image with JupyterLab."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from .. import integrations as ig
from ..billing import ledger as billing
from ..db import Job, Project, Team, User
from ..jobs import job_data, lookups, push_options, recovery, rerun, service as jobs_service, states
from ..jobs.submit import submit_job
from ..policy.admission import admit
from ..jobs.reserve import BranchBusy, reserve
from ..policy.quotas import workspace_quota_problems
from ..services import Services, log
from ..teams.access import Actor, NotFound, OpError, job_access, project_access
from . import credential, policy

KIND = "workspace"
DEFAULT_TIME_MIN = 8 * 60


class NotRunning(OpError):
    status = 404


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    token: str


def _options(gpus, cpus, mem, image, time) -> list[str]:
    """The start's compute as push options (one parser for both); ``cpus`` alone: CPU-only."""
    if cpus not in (None, "") and gpus in (None, ""):
        gpus = "none"
    out = []
    for key, value in (("gpus", gpus), ("cpus", cpus), ("mem", mem), ("image", image), ("time", time)):
        if value not in (None, ""):
            out.append(f"{key}={value}")
    return out


def start_workspace(svc: Services, actor: Actor, team: str, project: str, *, branch: str,
                    gpus: str | None = None, cpus=None, mem: str | None = None,
                    image: str | None = None, time: str | None = None,
                    inputs: dict[str, str] | None = None) -> tuple[int, str]:
    """Reserve and submit a workspace on TEAM/PROJECT's ``branch``. Returns (job id, message)."""
    branch = (branch or "").strip()
    if not branch:
        raise OpError("name the branch to open (it becomes the workspace's /work)")
    overrides, problems = push_options.parse_push_options(
        _options(gpus, cpus, mem, image, time), svc.config.gpu_limits)
    for key, text in (inputs or {}).items():
        o, p = push_options.parse_push_options([f"{key}={text}"], svc.config.gpu_limits)
        overrides.setdefault("inputs", {}).update(o.get("inputs", {}))
        problems += p
    with svc.db.session() as s:
        proj, _role = project_access(s, actor, team, project)
        t = proj.team
        user_id = actor.id if s.get(User, actor.id) is not None else None
        if user_id is None:
            raise OpError("a workspace runs as a user: act as one (--as USER)")
        if time in (None, ""):
            overrides["time_limit_min"] = DEFAULT_TIME_MIN
        admission = admit(svc, s, team=t, user_id=user_id, project=proj, overrides=overrides)
        settings = admission.settings
        if not problems:
            problems += admission.problems
        if settings.image in svc.catalog.names and not svc.catalog.has_jupyter(settings.image):
            problems.append(f"slipway: image {settings.image!r} has no JupyterLab; choose one that "
                            f"has (e.g. python)")
        pol = policy.effective(s, t.id)
        if settings.gpu_units > pol.max_gpus:
            problems.append(f"slipway: a workspace may use at most {pol.max_gpus} GPU(s); "
                            f"{settings.gpu_units} asked")
        mine = s.scalar(select(func.count(Job.id)).where(
            Job.kind == KIND, Job.pusher_id == user_id, Job.state.in_(states.ACTIVE))) or 0
        if mine >= pol.max_per_user:
            problems.append(f"slipway: {actor.name} has {mine} open workspace(s), the most allowed "
                            f"is {pol.max_per_user}; stop one first")
        problems += workspace_quota_problems(s, t, user_id, actor.name)
        decision = ig.can_start(billing.balance(s, t.id), t.name, svc.config.min_start_balance)
        if not decision.ok:
            problems.append(f"slipway: {decision.message}")
        busy = lookups.active_job(s, proj.id, branch)
        if busy is not None:
            problems.append(lookups.busy_message(busy))
        data_plan, data_problems = job_data.plan(s, proj, t, overrides)
        problems += data_problems
        project_id, team_name, project_name = proj.id, t.name, proj.name
    if problems:
        raise OpError("; ".join(p.removeprefix("slipway: ") for p in problems), 409 if any(
            "open workspace" in p or "already has job" in p for p in problems) else 400)
    tip = recovery.branch_tip(svc, team_name, project_name, branch)
    if tip is None:
        raise OpError(f"there is no branch {branch!r} in {team_name}/{project_name}; push it first")
    now = svc.now()
    try:
        with svc.db.transaction() as s:
            job_id = reserve(s, project_id=project_id, branch=branch, commit=tip, pusher_id=user_id,
                             admission=admission, data_plan=data_plan, by=actor.name, now=now,
                             kind=KIND).id
    except (BranchBusy, IntegrityError):
        raise OpError(f"branch {branch} got a job just now", 409) from None
    log.info("workspace %s: opened by %s on %s/%s %s", job_id, actor.name, team_name,
             project_name, branch)
    _ok, message = submit_job(svc, job_id)
    message = "; ".join([n.removeprefix("slipway: ") for n in admission.notes] + [message])
    return job_id, message.removeprefix("slipway: ").replace(f"job {job_id}", f"workspace {job_id}", 1)


def _workspace(s, actor: Actor, job_id: int) -> tuple[Job, Project, Team, str | None]:
    job, project, team, role = job_access(s, actor, job_id)
    if job.kind != KIND:
        raise NotFound(f"there is no workspace {job_id}")
    return job, project, team, role


def stop_workspace(svc: Services, actor: Actor, job_id: int) -> str:
    """Stop it: the job is cancelled (TERM), its /work committed back, its /output kept."""
    with svc.db.session() as s:
        job, _p, _t, _r = _workspace(s, actor, job_id)
        if job.state in states.TERMINAL:
            raise OpError(f"workspace {job_id} is {job.state} already", 409)
    res = jobs_service.request_cancel(svc, job_id, by=actor.name, reason=f"stopped by {actor.name}")
    return res.message.replace(f"job {job_id}", f"workspace {job_id}")


def restart_workspace(svc: Services, actor: Actor, job_id: int) -> tuple[int, str]:
    """A new workspace on the same branch (its tip), bindings and compute, whose /output
    continues this one's."""
    with svc.db.session() as s:
        job, _p, team, _r = _workspace(s, actor, job_id)
        pol = policy.effective(s, team.id)
        mine = s.scalar(select(func.count(Job.id)).where(
            Job.kind == KIND, Job.pusher_id == actor.id, Job.state.in_(states.ACTIVE))) or 0
    if mine >= pol.max_per_user:
        raise OpError(f"{actor.name} has {mine} open workspace(s), the most allowed is "
                      f"{pol.max_per_user}; stop one first", 409)
    try:
        new_id, message = rerun.rerun_job(svc, actor, job_id, continue_output=True)
    except rerun.RerunError as exc:
        raise OpError(str(exc).replace("job ", "workspace ", 1), exc.status) from None
    return new_id, message.replace("continues as job", "restarts as workspace")


def gateway_target(svc: Services, user_id: int | None, job_id: int) -> Target:
    """Where the gateway sends a member's request for workspace ``job_id`` (NotFound for
    anybody else, NotRunning while it is not up)."""
    if user_id is None:
        raise NotFound(f"there is no workspace {job_id}")
    with svc.db.session() as s:
        user = s.get(User, user_id)
        if user is None or not user.active:
            raise NotFound(f"there is no workspace {job_id}")
        actor = Actor(user.id, user.name, bool(user.is_cluster_admin))
        job, _p, _t, _r = _workspace(s, actor, job_id)
        if job.state != states.RUNNING or not job.node or not job.port:
            raise NotRunning(f"workspace {job_id} is not running ({job.state})")
        node, port = job.node, job.port
    return Target(svc.node_address(node), int(port), credential.token(svc.config.secret_key, job_id))


def touch(svc: Services, job_id: int) -> None:
    """The gateway carried a request of workspace ``job_id``: it is not idle."""
    with svc.db.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.kind == KIND)
                  .values(last_activity_at=svc.now(), reminded_at=None)
                  .execution_options(synchronize_session=False))
