"""Reading jobs for pages, the API and the CLI: filtered, keyset-paged job lists and the job log."""
from __future__ import annotations

import functools

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..db import Job, Project, Team
from ..services import Services
from ..teams.access import OpError
from . import runner_spec, states

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


def job_log_chunk(svc: Services, job_id: int, offset: int, limit: int = 256 * 1024) -> dict:
    """Bytes of the job's log from ``offset`` (the file the batch script writes; never Slurm)."""
    return read_chunk(runner_spec.log_path(svc, job_id), offset, limit)


def read_chunk(path, offset: int, limit: int) -> dict:
    """Bytes of a log file from ``offset`` (a job's, or a sweep task's)."""
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
