"""Operations the web pages and the JSON API share: permission checks, reads shaped for pages,
and the writes (project create/settings/delete, members, funds, tokens, team delete).

Every function here reads or writes Slipway's database (and the repository / job directories on
delete) — none calls Slurm, except ``cancel_job`` which goes through ``jobs.service``.

Permission model (the web pages, the JSON API and the CLI all go through these functions):

* a team, its projects, jobs, logs, repositories and proxied ports are visible to the team's
  members (any role) and to cluster administrators; to anybody else they do not exist (404);
* members lacking the role for an action get 403 (``Forbidden``);
* every member (``user`` and up): change project settings, push, start jobs, cancel any job of
  the team's projects (not only their own pushes);
* ``ROLE_ADMIN`` (administrator/owner): add/remove members, change roles, request funds (money
  itself enters only through cluster administrators: ``portal.funds``), see the ledger, create
  and delete projects; granting ``owner`` or touching an owner's membership
  needs ``owner``, and the last owner stays;
* owner alone deletes the team;
* cluster administrators may do all of it in every team.
"""
from __future__ import annotations

import functools
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.orm import Session, aliased

from .. import auth as tokens_mod
from .. import billing
from .. import integrations as ig
from .. import ledger_csv
from ..db import (AccessToken, Job, LedgerEntry, Membership, Project, Team, TeamBalance, User,
                 from_micros)
from ..jobs import launch, service, states
from ..services import Services

ROLE_ANY = ("user", "administrator", "owner")
ROLE_ADMIN = ("administrator", "owner")
ROLE_OWNER = ("owner",)
ROLES = ROLE_ANY


class OpError(Exception):
    """A refused operation. ``status``: 400 (bad input), 403, 404, 409 (conflict)."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFound(OpError):
    status = 404


class Forbidden(OpError):
    status = 403


@dataclass(frozen=True)
class Actor:
    """Who is acting (a logged-in user or a token's user)."""

    id: int
    name: str
    is_cluster_admin: bool = False


# --------------------------------------------------------------------------------- access

def role_in(s: Session, actor: Actor, team_id: int) -> str | None:
    return s.scalar(select(Membership.role).where(Membership.user_id == actor.id,
                                                  Membership.team_id == team_id))


# team and the actor's role in one query (built once: see "Job pages" below)
_TEAM_AND_ROLE = (select(Team, Membership.role)
                  .outerjoin(Membership, (Membership.team_id == Team.id)
                             & (Membership.user_id == bindparam("user_id")))
                  .where(Team.name == bindparam("team_name")))


def team_access(s: Session, actor: Actor, team_name: str, roles: tuple[str, ...] = ROLE_ANY,
                what: str = "do that") -> tuple[Team, str | None]:
    """(team, actor's role). Non-members: NotFound (existence is not revealed); members lacking
    ``roles``: Forbidden. Cluster admins pass (role may be None)."""
    row = s.execute(_TEAM_AND_ROLE, {"user_id": actor.id, "team_name": team_name}).first()
    if row is None:
        raise NotFound(f"there is no team {team_name!r}")
    team, role = row
    if actor.is_cluster_admin:
        return team, role
    if role is None:
        raise NotFound(f"there is no team {team_name!r}")
    if role not in roles:
        raise Forbidden(f"{actor.name} may not {what} in team {team.name} "
                        f"(needs role: {' or '.join(roles)})")
    return team, role


def project_access(s: Session, actor: Actor, team_name: str, project_name: str,
                   roles: tuple[str, ...] = ROLE_ANY, what: str = "do that") -> tuple[Project, str | None]:
    try:
        team, role = team_access(s, actor, team_name, ROLE_ANY)
    except NotFound:
        raise NotFound(f"there is no project {team_name}/{project_name}") from None
    project = s.scalar(select(Project).where(Project.team_id == team.id, Project.name == project_name))
    if project is None:
        raise NotFound(f"there is no project {team_name}/{project_name}")
    if not actor.is_cluster_admin and role not in roles:
        raise Forbidden(f"{actor.name} may not {what} in team {team.name} "
                        f"(needs role: {' or '.join(roles)})")
    return project, role


def job_access(s: Session, actor: Actor, job_id: int) -> tuple[Job, Project, Team, str | None]:
    row = s.execute(select(Job, Project, Team).join(Project, Job.project_id == Project.id)
                    .join(Team, Project.team_id == Team.id).where(Job.id == job_id)).first()
    if row is None:
        raise NotFound(f"there is no job {job_id}")
    job, project, team = row
    role = role_in(s, actor, team.id)
    if role is None and not actor.is_cluster_admin:
        raise NotFound(f"there is no job {job_id}")
    return job, project, team, role


def can_cancel(actor: Actor, job: Job, role: str | None) -> bool:
    """Any member of the job's team (``role`` from ``job_access``) and cluster admins."""
    return actor.is_cluster_admin or role in ROLE_ANY


def my_team_names(s: Session, actor: Actor) -> list[str]:
    return list(s.scalars(select(Team.name).join(Membership, Membership.team_id == Team.id)
                          .where(Membership.user_id == actor.id).order_by(Team.name)))


def my_team_pairs(s: Session, actor: Actor) -> list[tuple[int, str]]:
    """[(team id, team name)] of the actor's teams, by name — one query for both lists."""
    return [tuple(r) for r in s.execute(_MY_TEAM_PAIRS, {"user_id": actor.id})]


_MY_TEAM_PAIRS = (select(Team.id, Team.name).join(Membership, Membership.team_id == Team.id)
                  .where(Membership.user_id == bindparam("user_id")).order_by(Team.name))


def my_team_ids(s: Session, actor: Actor) -> list[int]:
    return list(s.scalars(select(Membership.team_id).where(Membership.user_id == actor.id)))


def visible_team_ids(s: Session, actor: Actor, team_name: str | None = None) -> list[int] | None:
    """The teams a listing covers: the named team (access checked), else the actor's teams;
    None = every team (cluster admins, no team named)."""
    if team_name:
        return [team_access(s, actor, team_name)[0].id]
    return None if actor.is_cluster_admin else my_team_ids(s, actor)


# ---------------------------------------------------------------------------------- reads

_BALANCES = (select(TeamBalance.team_id, TeamBalance.balance_micros)
             .where(TeamBalance.team_id.in_(bindparam("team_ids", expanding=True))))


def balances_for(s: Session, team_ids: list[int]) -> dict[int, Decimal]:
    """Balances of several teams in ONE primary-key lookup (``team_balances``: the running sum of
    each team's ledger, kept by triggers in the same transaction as every ledger write) — what
    ``billing.balances_of`` reads (teams without entries: 0), with the statement built once."""
    out = {tid: from_micros(0) for tid in team_ids}
    if out:
        out.update({tid: from_micros(int(m or 0))
                    for tid, m in s.execute(_BALANCES, {"team_ids": list(out)})})
    return out


def my_teams(s: Session, actor: Actor) -> list[dict]:
    """The actor's teams with role, balance, project count — three queries in all."""
    rows = s.execute(select(Team, Membership.role).join(Membership, Membership.team_id == Team.id)
                     .where(Membership.user_id == actor.id).order_by(Team.personal.desc(), Team.name)).all()
    ids = [t.id for t, _ in rows]
    bal = balances_for(s, ids)
    counts = dict(s.execute(select(Project.team_id, func.count(Project.id))
                            .where(Project.team_id.in_(ids)).group_by(Project.team_id)).all()) if ids else {}
    return [{"team": t, "role": r, "balance": bal[t.id], "projects": counts.get(t.id, 0)} for t, r in rows]


# Job pages. Statements are built once per shape (which filters are present) with bound values:
# building a statement and its cache key costs more than SQLite takes to run it.

ACTIVE_ID_CAP = 5000


def _job_filter_params(team_ids: list[int] | None = None, project_id: int | None = None,
                       state: str | None = None, before: int | None = None,
                       branch: str | None = None) -> tuple[tuple, dict]:
    """(shape, bound values) of a job page's filters; an unknown state is an OpError."""
    if state and state != "active" and state not in states.STATES:
        raise OpError(f"unknown state {state!r}; states: {', '.join(states.STATES)}, active")
    params: dict = {}
    if team_ids is not None:
        params["team_ids"] = list(team_ids)
    if project_id is not None:
        params["project_id"] = project_id
    if branch:
        params["branch"] = branch
    if state and state != "active":
        params["state"] = state
    if before:
        params["before"] = before
    shape = (team_ids is not None, project_id is not None, bool(branch),
             "active" if state == "active" else ("one" if state else None), bool(before))
    return shape, params


@functools.cache
def _job_ids_stmt(shape: tuple, prefiltered: bool):
    """SELECT the ids of a job page, newest first (LIMIT :limit), from the indexes alone: a big
    team's 80,000 jobs are ranked by id inside the (project_id, id) index, no job row is read.
    ``prefiltered``: only among :active_ids (see ``_active_ids``)."""
    has_teams, has_project, has_branch, state_kind, has_before = shape
    q = select(Job.id)
    if has_teams:
        q = q.join(Project, Job.project_id == Project.id).where(
            Project.team_id.in_(bindparam("team_ids", expanding=True)))
    if has_project:
        q = q.where(Job.project_id == bindparam("project_id"))
    if has_branch:
        q = q.where(Job.branch == bindparam("branch"))
    if state_kind == "active":
        q = q.where(Job.state.in_(states.ACTIVE))
    elif state_kind == "one":
        q = q.where(Job.state == bindparam("state"))
    if has_before:
        q = q.where(Job.id < bindparam("before"))
    if prefiltered:
        q = q.where(Job.id.in_(bindparam("active_ids", expanding=True)))
    return q.order_by(Job.id.desc()).limit(bindparam("limit"))


@functools.cache
def _active_ids_stmt(one_state: bool, has_before: bool):
    q = select(Job.id).where(Job.state == bindparam("state") if one_state else Job.state.in_(states.ACTIVE))
    if has_before:
        q = q.where(Job.id < bindparam("before"))
    return q.order_by(Job.id.desc()).limit(ACTIVE_ID_CAP)


def _page_ids_stmt(s: Session, kw: dict) -> tuple:
    """(ids statement, bound values) of a job page (LIMIT still to bind).

    Active states are few among many ended jobs: their ids come first from the state index
    (one small query), so the page never scans a big team's whole job history to find them."""
    shape, params = _job_filter_params(**kw)
    state = kw.get("state")
    if state == "active" or state in states.ACTIVE:
        one, before = state != "active", kw.get("before")
        bound = {k: v for k, v in (("state", state if one else None), ("before", before)) if v}
        active_ids = list(s.scalars(_active_ids_stmt(one, bool(before)), bound))
        if len(active_ids) < ACTIVE_ID_CAP:
            params["active_ids"] = active_ids
            return _job_ids_stmt(shape, True), params
    return _job_ids_stmt(shape, False), params


def job_ids(s: Session, limit: int = 50, **kw) -> list[int]:
    """The ids of the newest ``limit`` jobs matching the filters (``list_jobs``'s), from the
    indexes alone (e.g. to count active jobs up to a cap)."""
    q, params = _page_ids_stmt(s, kw)
    params["limit"] = max(1, min(int(limit), 500))
    return list(s.scalars(q, params))


_JOB_ENTITIES = (select(Job, Project.name, Team.name).join(Project, Job.project_id == Project.id)
                 .join(Team, Project.team_id == Team.id)
                 .where(Job.id.in_(bindparam("ids", expanding=True))).order_by(Job.id.desc()))


def list_jobs(s: Session, limit: int = 50, **kw) -> tuple[list[tuple[Job, str, str]], int | None]:
    """(rows of (Job, project name, team name), next ``before`` cursor or None) — full Job
    entities (the JSON API; pages use ``list_job_rows``). Filters: team_ids, project_id, state
    (a state or "active"), before (keyset pagination: ids below it), branch."""
    limit = max(1, min(int(limit), 500))
    q, params = _page_ids_stmt(s, kw)
    params["limit"] = limit + 1  # one more tells whether there is an older page
    # Two steps: the page's ids from the indexes alone, then only those rows in full.
    ids = list(s.scalars(q, params))
    more = len(ids) > limit
    ids = ids[:limit]
    if not ids:
        return [], None
    rows = [tuple(r) for r in s.execute(_JOB_ENTITIES, {"ids": ids}).all()]
    return rows, (rows[-1][0].id if more and rows else None)


# What a job table shows (``_macros.html``'s job_table): plain columns, no ORM entity.
JOB_ROW_COLUMNS = (Job.id, Job.branch, Job.state, Job.reason, Job.gpu_type, Job.gpu_count, Job.node,
                   Job.cost_micros, Job.created_at, Project.name.label("project"),
                   Team.name.label("team"))


@functools.cache
def _job_rows_stmt(ids_stmt):
    return (select(*JOB_ROW_COLUMNS).join(Project, Job.project_id == Project.id)
            .join(Team, Project.team_id == Team.id).where(Job.id.in_(ids_stmt.scalar_subquery()))
            .order_by(Job.id.desc()))


def list_job_rows(s: Session, limit: int = 50, **kw) -> tuple[list, int | None]:
    """The page ``list_jobs`` gives, as light rows for the job tables (``row.id``, ``.branch``,
    ``.state``, ``.reason``, ``.gpu_type``, ``.gpu_count``, ``.node``, ``.cost_micros``,
    ``.created_at``, ``.project``, ``.team``) and the next ``before`` cursor or None.

    One statement: the page's ids come from the indexes alone in a subquery (as in
    ``list_jobs``), and only those rows are read, with only the columns shown."""
    limit = max(1, min(int(limit), 500))
    ids_q, params = _page_ids_stmt(s, kw)
    params["limit"] = limit + 1  # one more tells whether there is an older page
    rows = s.execute(_job_rows_stmt(ids_q), params).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


# What the team page and the API show of a project: plain columns, no ORM entity.
PROJECT_ROW_COLUMNS = (Project.id, Project.team_id, Project.name, Project.gpu_type, Project.gpu_count,
                       Project.image, Project.time_limit_min, Project.created_at)


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


def user_names(s: Session, user_ids) -> dict[int, str]:
    ids = [i for i in set(user_ids) if i is not None]
    if not ids:
        return {}
    return dict(s.execute(select(User.id, User.name).where(User.id.in_(ids))).all())


_MEMBERS = (select(User, Membership).join(Membership, Membership.user_id == User.id)
            .where(Membership.team_id == bindparam("team_id")).order_by(
                case((Membership.role == "owner", 0), (Membership.role == "administrator", 1), else_=2),
                User.name))


def members(s: Session, team: Team) -> list[tuple[User, Membership]]:
    return [tuple(r) for r in s.execute(_MEMBERS, {"team_id": team.id}).all()]


def ledger_page(s: Session, team: Team, *, before: int | None = None, limit: int = 50):
    q = select(LedgerEntry).where(LedgerEntry.team_id == team.id).order_by(LedgerEntry.id.desc())
    if before:
        q = q.where(LedgerEntry.id < before)
    rows = list(s.scalars(q.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


LEDGER_CSV_HEADER = ledger_csv.LEDGER_CSV_HEADER


def ledger_csv_row(e: LedgerEntry) -> list:
    """The row ``slipway team ledger --csv`` prints for ``e`` (``portal.ledger_csv``: text cells
    that a spreadsheet would run as a formula are neutralised)."""
    from ..api.serialize import entry_dict  # not at import time: portal.api imports this module

    return ledger_csv.ledger_csv_row(entry_dict(e, ""))


def describe_entry(e: LedgerEntry) -> str:
    if e.kind == billing.KIND_GPU:
        rate = ig.format_usd(e.rate) if e.rate is not None else "?"
        return (f"job {e.job_id} attempt {e.attempt}: minutes {e.from_minute}–{e.to_minute}, "
                f"{e.gpu_count}× {e.gpu_type} @ {rate}/h")
    if e.kind == billing.KIND_STORAGE:
        return e.note or e.resource or ""
    return f"{e.created_by}: {e.note}" if e.note else (e.created_by or "")


_SPENDING_TTL_S = 60.0


def daily_spending(s: Session, team: Team, *, days: int, now: datetime,
                   cache: dict | None = None) -> list[tuple[str, Decimal]]:
    """[(YYYY-MM-DD, dollars spent that day)] for the last ``days`` days, aggregated in SQL.
    With ``cache`` (a dict kept by the caller) the series is reused for 60 s per team."""
    if cache is not None:
        key = (team.id, days, now.strftime("%Y-%m-%d"))
        hit = cache.get(key)
        if hit and time.monotonic() - hit[0] < _SPENDING_TTL_S:
            return hit[1]
        out = daily_spending(s, team, days=days, now=now)
        if len(cache) > 10_000:
            cache.clear()
        cache[key] = (time.monotonic(), out)
        return out
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        day = func.strftime("%Y-%m-%d", LedgerEntry.created_at)
    else:
        day = func.to_char(func.date_trunc("day", LedgerEntry.created_at), "YYYY-MM-DD")
    rows = s.execute(select(day.label("d"), func.sum(LedgerEntry.amount_micros))
                     .where(LedgerEntry.team_id == team.id, LedgerEntry.amount_micros < 0,
                            LedgerEntry.created_at >= start).group_by("d")).all()
    by_day = {str(d): from_micros(-int(v or 0)) for d, v in rows}
    out = []
    for i in range(days):
        d = (start + timedelta(days=i)).strftime("%Y-%m-%d")
        out.append((d, by_day.get(d, from_micros(0))))
    return out


_STORAGE_TTL_S = 300.0


def storage_bytes(svc: Services, team: str, project: str) -> int | None:
    """git + LFS bytes of a project's repository, cached in-process for 5 minutes so a page view
    walks the repository at most once per 5 minutes (the reconciler measures it for billing too)."""
    cache = svc.extra.setdefault("web_storage_cache", {})
    key = (team, project)
    hit = cache.get(key)
    now = time.monotonic()
    if hit and now - hit[0] < _STORAGE_TTL_S:
        return hit[1]
    try:
        size = ig.repo_bytes(svc.config, team, project)
    except (OSError, ValueError):
        size = None
    if len(cache) > 10_000:
        cache.clear()
    cache[key] = (now, size)
    return size


def job_log_chunk(svc: Services, job_id: int, offset: int, limit: int = 256 * 1024) -> dict:
    """Bytes of the job's log from ``offset`` (the file the batch script writes; never Slurm)."""
    path = launch.log_path(svc, job_id)
    offset = max(0, int(offset))
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            if offset > size:  # the log was truncated (requeue rewrites it): start over
                offset = 0
            fh.seek(offset)
            data = fh.read(limit)
    except FileNotFoundError:
        return {"offset": offset, "next_offset": offset, "size": 0, "data": "", "exists": False}
    return {"offset": offset, "next_offset": offset + len(data), "size": size,
            "data": data.decode("utf-8", "replace"), "exists": True}


# --------------------------------------------------------------------------------- writes

def _json_type_problems(fields: dict) -> list[str]:
    """JSON values are taken as sent, never guessed: text fields must be JSON strings, the GPU
    count a JSON integer (not ``true``, ``1.9`` or ``"2"``), the time a JSON integer (minutes) or
    a string (``"2h"``)."""
    problems = []
    for name in ("gpus", "gpu_type", "image"):
        v = fields[name]
        if v is not None and not isinstance(v, str):
            problems.append(f"{name} must be a JSON string, got {json_type(v)} {v!r:.40}")
    v = fields["gpu_count"]
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        problems.append(f"gpu_count must be a JSON integer (e.g. 2), got {json_type(v)} {v!r:.40}")
    v = fields["time"]
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, str))):
        problems.append(f"time must be a JSON integer (minutes) or a string like \"2h\", "
                        f"got {json_type(v)} {v!r:.40}")
    return problems


def json_type(v) -> str:
    """The JSON name of a parsed JSON value's type, for messages."""
    return {bool: "boolean", int: "integer", float: "number with a fraction", str: "string",
            list: "array", dict: "object", type(None): "null"}.get(type(v), type(v).__name__)


_DIGITS = re.compile(r"[0-9]{1,6}")


def parse_settings(svc: Services, *, gpus: str | None = None, gpu_type: str | None = None,
                   gpu_count=None, image: str | None = None, time_text=None,
                   base: launch.JobSettings | None = None,
                   from_json: bool = False) -> tuple[launch.JobSettings | None, list[str]]:
    """Form/JSON values -> JobSettings validated with the same rules as the CLI and the push hook
    (``launch.settings_problems``: ``check_gpus``, time limit bounds, the image's build for the runtime).
    ``from_json``: the values came from a JSON body and must have the right JSON types."""
    if from_json:
        problems = _json_type_problems({"gpus": gpus, "gpu_type": gpu_type, "gpu_count": gpu_count,
                                        "image": image, "time": time_text})
        if problems:
            return None, problems
    problems: list[str] = []
    g_type = base.gpu_type if base else None
    g_count = base.gpu_count if base else 1
    minutes = base.time_limit_min if base else svc.config.default_time_limit
    img = base.image if base else svc.config.default_image
    try:
        if gpus:
            g_type, g_count = ig.parse_gpus(str(gpus), svc.config.gpu_limits)
        else:
            if gpu_type:
                g_type = str(gpu_type)
            if gpu_count not in (None, ""):
                if isinstance(gpu_count, int) and not isinstance(gpu_count, bool):
                    g_count = gpu_count
                elif isinstance(gpu_count, str) and _DIGITS.fullmatch(gpu_count.strip()):
                    g_count = int(gpu_count)
                else:  # never guessed: not True, 1.9 or "1.9"
                    problems.append(f"GPU count must be a whole number, got {gpu_count!r:.40}")
    except (ig.InvalidRequest, ValueError) as exc:
        problems.append(str(exc))
    if g_type is None:
        g_type = "a4000"
    if time_text not in (None, ""):
        try:
            minutes = int(time_text) if isinstance(time_text, int) and not isinstance(time_text, bool) \
                else launch.parse_time(str(time_text))
        except ValueError as exc:
            problems.append(str(exc))
    if image:
        img = str(image)
    if problems:
        return None, problems
    st = launch.JobSettings(g_type, g_count, minutes, img)
    problems = [p.removeprefix("slipway: ") for p in launch.settings_problems(svc, st)]
    return (None, problems) if problems else (st, [])


def create_project(svc: Services, actor: Actor, team_name: str, name: str,
                   settings: launch.JobSettings) -> str:
    """Create a project row and its bare repository (like ``slipway project create``)."""
    try:
        name = ig.validate_name((name or "").strip(), "project")
    except ValueError as exc:
        raise OpError(str(exc)) from None
    with svc.db.transaction() as s:
        team, _ = team_access(s, actor, team_name, ROLE_ADMIN, "create projects")
        if s.scalar(select(Project.id).where(Project.team_id == team.id, Project.name == name)):
            raise OpError(f"project {team.name}/{name} exists already", 409)
        s.add(Project(team_id=team.id, name=name, gpu_type=settings.gpu_type, gpu_count=settings.gpu_count,
                      image=settings.image, time_limit_min=settings.time_limit_min, created_at=svc.now()))
        ig.create_repo(svc.config, team.name, name)
    return name


def update_settings(svc: Services, actor: Actor, team_name: str, project_name: str,
                    settings: launch.JobSettings) -> None:
    with svc.db.transaction() as s:
        p, _ = project_access(s, actor, team_name, project_name, ROLE_ANY, "change project settings")
        p.gpu_type, p.gpu_count = settings.gpu_type, settings.gpu_count
        p.image, p.time_limit_min = settings.image, settings.time_limit_min


def delete_project(svc: Services, actor: Actor, team_name: str, project_name: str, confirm: str) -> int:
    """Delete a project, its repository, LFS objects, jobs and job directories — irrecoverably.

    Same steps as ``slipway project delete`` (portal/cli.py): refuse while jobs are active,
    delete the row (jobs go by ON DELETE CASCADE; ledger entries stay), then the repository and
    LFS objects (``integrations.delete_repo``) and every job directory. Returns the job count.
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
        s.delete(p)
    ig.delete_repo(svc.config, team_name, project_name)
    for jid in job_ids:
        shutil.rmtree(launch.job_dir(svc, jid), ignore_errors=True)
    svc.extra.get("web_storage_cache", {}).pop((team_name, project_name), None)
    return len(job_ids)


def create_team(svc: Services, actor: Actor, name: str) -> str:
    """A new (non-personal) team owned by the actor. Its Slurm account is created by the
    reconciler's account convergence (no Slurm call from the web process)."""
    try:
        name = ig.validate_name((name or "").strip(), "team")
    except ValueError as exc:
        raise OpError(str(exc)) from None
    with svc.db.transaction() as s:
        if s.scalar(select(Team.id).where(Team.name == name)):
            raise OpError(f"team {name!r} exists already", 409)
        now = svc.now()
        t = Team(name=name, personal=False, created_at=now)
        s.add(t)
        s.flush()
        s.add(Membership(user_id=actor.id, team_id=t.id, role="owner", created_at=now))
    return name


def delete_team(svc: Services, actor: Actor, team_name: str, confirm: str) -> None:
    """Owner alone (or a cluster admin) deletes a team: its projects, repositories, jobs,
    memberships and ledger. Refused for personal teams and while jobs are active."""
    with svc.db.transaction() as s:
        team, _ = team_access(s, actor, team_name, ROLE_OWNER, "delete the team")
        if (confirm or "").strip() != team.name:
            raise OpError(f"type {team.name} exactly to confirm; nothing was deleted")
        if team.personal:
            raise OpError(f"{team.name} is a personal team; it goes away with its user", 409)
        pids = dict(s.execute(select(Project.id, Project.name).where(Project.team_id == team.id)).all())
        if pids:
            active = list(s.scalars(select(Job.id).where(Job.project_id.in_(list(pids)),
                                                         Job.state.in_(states.ACTIVE))))
            if active:
                raise OpError(f"team {team.name} has active jobs ({', '.join(map(str, active))}); "
                              "cancel them first", 409)
        job_ids = list(s.scalars(select(Job.id).where(Job.project_id.in_(list(pids))))) if pids else []
        s.delete(team)
    for name in pids.values():
        ig.delete_repo(svc.config, team_name, name)
    for jid in job_ids:
        shutil.rmtree(launch.job_dir(svc, jid), ignore_errors=True)


def _owner_count(s: Session, team_id: int) -> int:
    return s.scalar(select(func.count(Membership.id)).where(Membership.team_id == team_id,
                                                           Membership.role == "owner")) or 0


def set_member(svc: Services, actor: Actor, team_name: str, username: str, role: str) -> str:
    """Add ``username`` to the team or change their role. Administrators/owners; granting
    ``owner`` or changing an owner's role needs ``owner``; the last owner stays owner."""
    username = (username or "").strip()
    if role not in ROLES:
        raise OpError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    with svc.db.transaction() as s:
        team, my_role = team_access(s, actor, team_name, ROLE_ADMIN, "add or change members")
        user = s.scalar(select(User).where(User.name == username))
        if user is None:
            raise OpError(f"there is no user {username!r} (users appear after their first login "
                          "or `slipway user add`)")
        m = s.scalar(select(Membership).where(Membership.user_id == user.id, Membership.team_id == team.id))
        owner_power = actor.is_cluster_admin or my_role == "owner"
        if (role == "owner" or (m is not None and m.role == "owner")) and not owner_power:
            raise Forbidden("only an owner may grant the owner role or change an owner's membership")
        if m is None:
            s.add(Membership(user_id=user.id, team_id=team.id, role=role, created_at=svc.now()))
            return "added"
        if m.role == "owner" and role != "owner" and _owner_count(s, team.id) <= 1:
            raise OpError(f"{username} is the last owner of {team.name}; make someone else owner first", 409)
        m.role = role
        return "changed"


def remove_member(svc: Services, actor: Actor, team_name: str, username: str) -> None:
    with svc.db.transaction() as s:
        team, my_role = team_access(s, actor, team_name, ROLE_ADMIN, "remove members")
        row = s.execute(select(Membership).join(User, Membership.user_id == User.id)
                        .where(Membership.team_id == team.id, User.name == username)).first()
        if row is None:
            raise OpError(f"{username} is not a member of team {team.name}", 404)
        m = row[0]
        if m.role == "owner":
            if not (actor.is_cluster_admin or my_role == "owner"):
                raise Forbidden("administrators cannot remove an owner")
            if _owner_count(s, team.id) <= 1:
                raise OpError(f"{username} is the last owner of {team.name}; it cannot be removed", 409)
        s.delete(m)


def add_funds(svc: Services, actor: Actor, team_name: str, amount, note: str = "") -> Decimal:
    """Credit a team directly: cluster administrators only (``portal.funds.add_funds``); team
    administrators and owners request funds (403 says how)."""
    from .. import funds

    return funds.add_funds(svc, actor, team_name, amount, note)


def cancel_job(svc: Services, actor: Actor, job_id: int) -> service.CancelResult:
    with svc.db.session() as s:
        job, _p, team, role = job_access(s, actor, job_id)
        if not can_cancel(actor, job, role):
            raise Forbidden(f"{actor.name} may not cancel job {job_id} (only members of team "
                            f"{team.name} may)")
    try:
        return service.request_cancel(svc, job_id, by=actor.name)
    except service.JobError as exc:
        raise OpError(str(exc), 409) from None


def rerun_job(svc: Services, actor: Actor, job_id: int) -> tuple[int, str]:
    """``jobs.rerun.rerun_job`` with its refusals as OpError (web, API and CLI)."""
    from ..jobs import rerun

    try:
        return rerun.rerun_job(svc, actor, job_id)
    except rerun.RerunError as exc:
        raise OpError(str(exc), exc.status) from None


def can_delete_job(actor: Actor, job: Job, role: str | None) -> bool:
    """Team administrators/owners and cluster admins delete an ENDED job (``jobs.delete``)."""
    return job.state in states.TERMINAL and (actor.is_cluster_admin or role in ROLE_ADMIN)


def delete_job(svc: Services, actor: Actor, job_id: int, confirm: str):
    """``jobs.delete.delete_job`` with its refusals as OpError (web, API and CLI)."""
    from ..jobs import delete

    try:
        return delete.delete_job(svc, actor, job_id, confirm)
    except delete.JobDeleteError as exc:
        raise OpError(str(exc), exc.status) from None


def create_token(svc: Services, actor: Actor, name: str) -> tuple[int, str]:
    name = (name or "").strip() or "default"
    if len(name) > 128:
        raise OpError("token name is too long (128 characters at most)")
    with svc.db.transaction() as s:
        user = s.get(User, actor.id)
        tok = tokens_mod.create_token(s, user, name, now=svc.now())
        s.flush()
        tid = s.scalar(select(AccessToken.id).where(AccessToken.token_hash == tokens_mod._hash(tok)))
    return tid, tok


def list_tokens(s: Session, actor: Actor, user_name: str | None = None) -> list[AccessToken]:
    """The actor's tokens; with ``user_name`` another user's (cluster administrators only)."""
    user_id = actor.id
    if user_name and user_name != actor.name:
        if not actor.is_cluster_admin:
            raise Forbidden(f"{actor.name} may not see {user_name}'s tokens (only cluster administrators may)")
        user_id = s.scalar(select(User.id).where(User.name == user_name))
        if user_id is None:
            raise NotFound(f"there is no user {user_name!r}")
    return list(s.scalars(select(AccessToken).where(AccessToken.user_id == user_id)
                          .order_by(AccessToken.revoked_at.is_not(None), AccessToken.id.desc())))


def revoke_token(svc: Services, actor: Actor, token_id: int) -> None:
    """A user revokes their own tokens; a cluster administrator anyone's."""
    with svc.db.transaction() as s:
        mine = () if actor.is_cluster_admin else (AccessToken.user_id == actor.id,)
        tok = s.scalar(select(AccessToken).where(AccessToken.id == token_id, *mine))
        if tok is None:
            raise NotFound(f"there is no token {token_id}")
        if tok.revoked_at is None:
            tok.revoked_at = svc.now()


def user_by_bearer(s: Session, token: str, *, now: datetime | None = None) -> User | None:
    """The active user owning live access token ``token`` (``Authorization: Bearer``). Uses the
    same storage as ``portal.auth.verify_token`` (prefix lookup, constant-time sha256 compare)."""
    import hmac

    if not token or len(token) < tokens_mod.PREFIX_LEN:
        return None
    digest = tokens_mod._hash(token)
    rows = s.execute(select(AccessToken, User).join(User, AccessToken.user_id == User.id).where(
        AccessToken.prefix == token[:tokens_mod.PREFIX_LEN], AccessToken.revoked_at.is_(None))).all()
    for tok, user in rows:
        if hmac.compare_digest(tok.token_hash, digest) and user.active:
            if now is not None:
                tok.last_used_at = now
            return user
    return None

