"""Projects: the paged project list, statistics and storage, create, change settings, delete."""
from __future__ import annotations

import functools
import shutil
import time

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.orm import Session, aliased

from .. import integrations as ig
from ..db import Job, Project, Team
from ..data import outputs as data_outputs
from ..jobs import push_options, runner_spec, states
from ..services import Services
from .settings import check_compute_type
from ..teams.access import (
    ROLE_ADMIN,
    ROLE_ANY,
    Actor,
    OpError,
    project_access,
    team_access,
)

# What the team page and the API show of a project: plain columns, no ORM entity.
PROJECT_ROW_COLUMNS = (Project.id, Project.team_id, Project.name, Project.gpu_type, Project.gpu_count,
                       Project.image, Project.time_limit_min, Project.created_at, Project.compute_type)


def like_contains(text: str) -> str:
    """The LIKE pattern of ``column.contains(text, autoescape=True)`` (escape character ``/``),
    for statements built once with a bound pattern."""
    return "%" + text.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


@functools.cache
def _project_page_stmt(filtered: bool):
    """Built once per shape (statement construction and its cache key cost more than running
    it): binds team_id, pattern (when ``filtered``), offset, limit."""
    def matching(p):
        where = [p.team_id == bindparam("team_id")]
        if filtered:
            where.append(p.name.like(bindparam("pattern"), escape="/"))
        return where

    other = aliased(Project)
    total = select(func.count(other.id)).where(*matching(other)).scalar_subquery()
    n_jobs = (select(func.count()).select_from(Job).where(Job.project_id == Project.id)
              .correlate(Project).scalar_subquery())
    last = select(func.max(Job.id)).where(Job.project_id == Project.id).correlate(Project).scalar_subquery()
    n_active = (select(func.count()).select_from(Job)
                .where(Job.project_id == Project.id, Job.state.in_(states.ACTIVE))
                .correlate(Project).scalar_subquery())
    page = (select(*PROJECT_ROW_COLUMNS, n_jobs.label("n_jobs"), n_active.label("n_active"),
                   last.label("last_job"), total.label("total"))
            .where(*matching(Project)).order_by(Project.name)
            .offset(bindparam("offset")).limit(bindparam("limit")))
    count = select(func.count(Project.id)).where(*matching(Project))
    return page, count


def project_page(s: Session, team: Team, *, q: str = "", page: int = 1, per_page: int = 50) -> dict:
    """A page of the team's projects (light rows: ``PROJECT_ROW_COLUMNS``), their total and
    per-project job stats (``stats[project id]``: jobs, active, last_job) — ONE query.

    The page comes in name order from the (team_id, name) index; only its rows get the
    correlated counts (index-only seeks: (project_id, id) for the count and the newest job,
    (project_id, state, id) for the active ones); the total is an uncorrelated subquery."""
    page = max(1, page)
    page_q, count_q = _project_page_stmt(bool(q))
    params = {"team_id": team.id, "offset": (page - 1) * per_page, "limit": per_page}
    if q:
        params["pattern"] = like_contains(q)
    rows = s.execute(page_q, params).all()
    if rows:
        total = rows[0].total
    else:  # no row on this page (none at all, or a page past the last): count them
        total = s.scalar(count_q, params) if page > 1 else 0
    total = int(total or 0)
    stats = {r.id: {"jobs": int(r.n_jobs or 0), "active": int(r.n_active or 0),
                    "last_job": r.last_job} for r in rows}
    return {"projects": rows, "stats": stats, "total": total, "page": page,
            "pages": max(1, -(-total // per_page)), "q": q}


def project_stats(s: Session, project_id: int) -> dict:
    """{"jobs": all jobs of the project, "active": those not ended}."""
    n, active = s.execute(select(func.count(Job.id), func.count(case((Job.state.in_(states.ACTIVE), 1))))
                          .where(Job.project_id == project_id)).one()
    return {"jobs": int(n or 0), "active": int(active or 0)}


def projects_with_stats(s: Session, team_ids: list[int] | None) -> list[tuple[Project, str, dict]]:
    """[(project, team name, {"jobs", "active"})] of the teams ``team_ids`` (None: every team),
    by team name and project name — two queries."""
    q = select(Project, Team.name).join(Team, Project.team_id == Team.id).order_by(Team.name, Project.name)
    if team_ids is not None:
        if not team_ids:
            return []
        q = q.where(Project.team_id.in_(list(team_ids)))
    rows = s.execute(q).all()
    stats: dict[int, dict] = {}
    if rows:
        for pid, n, active in s.execute(
                select(Job.project_id, func.count(Job.id), func.count(case((Job.state.in_(states.ACTIVE), 1))))
                .where(Job.project_id.in_([p.id for p, _ in rows])).group_by(Job.project_id)):
            stats[pid] = {"jobs": int(n), "active": int(active)}
    return [(p, tn, stats.get(p.id, {"jobs": 0, "active": 0})) for p, tn in rows]


_STORAGE_TTL_S = 300.0


def storage_bytes(svc: Services, team: str, project: str) -> int | None:
    """git + LFS bytes of a project's repository, cached in-process for 5 minutes so a page view
    walks the repository at most once per 5 minutes (the reconciler measures it for billing too)."""
    cache = svc.cache.storage
    key = (team, project)
    hit = cache.get(key)
    now = time.monotonic()
    if hit and now - hit[0] < _STORAGE_TTL_S:
        return hit[1]
    try:
        size = svc.git.repo_bytes(team, project)
    except (OSError, ValueError):
        size = None
    if len(cache) > 10_000:
        cache.clear()
    cache[key] = (now, size)
    return size


def _inputs_json(s, team: Team, inputs) -> str | None:
    """Default bindings checked (syntax, and that each one resolves for the team now)."""
    import json

    from ..data import bindings
    wanted = bindings.parse_defaults(inputs)
    _resolved, problems = bindings.resolve(s, team, {int(k[5:]): v for k, v in wanted.items()})
    if problems:
        raise OpError("; ".join(p.removeprefix("slipway: ") for p in problems))
    return json.dumps(wanted) if wanted else None


def create_project(svc: Services, actor: Actor, team_name: str, name: str,
                   settings: push_options.JobSettings, *, inputs: dict | None = None,
                   compute_type: str | None = None) -> str:
    """Create a project row and its bare repository (like ``slipway project create``);
    ``compute_type``: its default compute type (a defined one's name; None or "": none)."""
    try:
        name = ig.validate_name((name or "").strip(), "project")
    except ValueError as exc:
        raise OpError(str(exc)) from None
    with svc.db.transaction() as s:
        team, _ = team_access(s, actor, team_name, ROLE_ADMIN, "create projects")
        if s.scalar(select(Project.id).where(Project.team_id == team.id, Project.name == name)):
            raise OpError(f"project {team.name}/{name} exists already", 409)
        s.add(Project(team_id=team.id, name=name, gpu_type=settings.gpu_type, gpu_count=settings.gpu_count,
                      image=settings.image, time_limit_min=settings.time_limit_min, created_at=svc.now(),
                      inputs=_inputs_json(s, team, inputs) if inputs else None,
                      compute_type=check_compute_type(s, compute_type) if compute_type else None))
        svc.git.create_repo(team.name, name)
    return name


def update_settings(svc: Services, actor: Actor, team_name: str, project_name: str,
                    settings: push_options.JobSettings, *, inputs: dict | None = None,
                    compute_type: str | None = None) -> None:
    """``inputs``: the default bindings {"input0": "vision/cifar-100:latest", ...} (an empty
    text drops a slot; ``{}`` drops them all); None keeps them. ``compute_type``: the default
    compute type's name (it must be defined), "" clears it, None keeps it."""
    with svc.db.transaction() as s:
        p, _ = project_access(s, actor, team_name, project_name, ROLE_ANY, "change project settings")
        if inputs is not None:
            p.inputs = _inputs_json(s, p.team, inputs)
        if compute_type is not None:
            p.compute_type = check_compute_type(s, compute_type)
        p.gpu_type, p.gpu_count = settings.gpu_type, settings.gpu_count
        p.image, p.time_limit_min = settings.image, settings.time_limit_min


def delete_project(svc: Services, actor: Actor, team_name: str, project_name: str, confirm: str) -> int:
    """Delete a project, its repository, LFS objects, jobs and job directories — irrecoverably.

    Same steps as ``slipway project delete`` (portal/cli.py): refuse while jobs are active,
    delete the row (jobs go by ON DELETE CASCADE; ledger entries stay), then the repository and
    LFS objects (``svc.git.delete_repo``) and every job directory. Returns the job count.
    """
    ref = f"{team_name}/{project_name}"
    with svc.db.transaction() as s:
        p, _ = project_access(s, actor, team_name, project_name, ROLE_ADMIN, "delete projects")
        if (confirm or "").strip() != ref:
            raise OpError(f"type {ref} exactly to confirm; nothing was deleted")
        active = list(s.scalars(select(Job.id).where(Job.project_id == p.id, Job.state.in_(states.ACTIVE))))
        if active:
            raise OpError(f"project {ref} has active jobs ({', '.join(map(str, active))}); "
                          "cancel them first", 409)
        job_ids = list(s.scalars(select(Job.id).where(Job.project_id == p.id)))
    kept = data_outputs.before_jobs_deleted(svc, job_ids)   # 409 while another job binds one
    with svc.db.transaction() as s:
        p, _ = project_access(s, actor, team_name, project_name, ROLE_ADMIN, "delete projects")
        if s.scalar(select(Job.id).where(Job.project_id == p.id, Job.state.in_(states.ACTIVE))):
            raise OpError(f"project {ref} got an active job meanwhile; cancel it first", 409)
        job_ids = list(s.scalars(select(Job.id).where(Job.project_id == p.id)))
        s.delete(p)
    svc.git.delete_repo(team_name, project_name)
    data_outputs.remove_kept(kept)
    for jid in job_ids:
        shutil.rmtree(runner_spec.job_dir(svc, jid), ignore_errors=True)
    svc.cache.storage.pop((team_name, project_name), None)
    return len(job_ids)
