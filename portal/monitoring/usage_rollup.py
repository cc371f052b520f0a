"""The usage rollups the statistics pages read (docs/MONITORING.md), kept by the tick:

* ``usage_days`` from the ledger: every GPU, CPU and storage charge written since the last
  fold (a ledger id watermark, ``LEDGER_KEY``), split over the UTC days its minutes fall in.
  A GPU charge covers minutes ``[from, to)`` of one attempt, counted from the attempt's start
  (``accounting.billing``); minute ``k`` begins at ``start + 60 k`` seconds and counts on that
  instant's day. The start is the job's (the sweep task's) start as the reconciler recorded it
  from squeue; the spend of a charge that spans days is split in proportion to its minutes.
  Storage charges carry their own epoch minutes. Each piece is added at three grains (the
  team; its project; the user who pushed the job, with the project) by one upsert per batch.
  Each fold is one transaction with its watermark: a charge is counted once.
* ``usage_jobs`` from the jobs table: a job that started (its queue wait) or ended (its final
  state), from the tick's state changes; ``catch_up_jobs`` (hourly) finds the rest.
"""
from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select

from ..billing.ledger import KIND_GPU, KIND_STORAGE, job_of_resource
from ..db import Job, JobPart, LedgerEntry, Project, ReconcilerState
from ..db.monitoring_models import UsageDay, UsageJob
from ..jobs import states
from ..services import Services
from . import usage_cache
from .sample_math import EPOCH, epoch_day

LEDGER_KEY = "usage_ledger_id"
BATCH = 20_000            # ledger entries folded per transaction
MAX_PER_TICK = 50_000     # a long backlog (an upgrade) is folded over a few ticks
CPU = "cpu"


def fold(svc: Services, now: datetime, report=None) -> dict:
    """Fold the ledger's new charges, then the jobs the tick moved; what was done."""
    done = {"entries": 0, "jobs": 0}
    while done["entries"] < MAX_PER_TICK:
        n = fold_ledger(svc, now)
        done["entries"] += n
        if n < BATCH:
            break
    changed = sorted({job_id for job_id, _old, new in getattr(report, "changes", ()) or ()
                      if new in states.TERMINAL or new in (states.RUNNING, states.FINISHING)})
    if changed:
        done["jobs"] = refresh_jobs(svc, changed, now)
    return done


# ------------------------------------------------------------------------------- ledger

def fold_ledger(svc: Services, now: datetime) -> int:
    """One batch of ledger entries after the watermark into ``usage_days``; how many."""
    with svc.db.transaction() as s:
        mark = s.get(ReconcilerState, LEDGER_KEY)
        after = int(mark.value) if mark is not None else 0
        rows = s.execute(
            select(LedgerEntry.id, LedgerEntry.team_id, LedgerEntry.kind, LedgerEntry.amount_micros,
                   LedgerEntry.job_id, LedgerEntry.resource, LedgerEntry.attempt,
                   LedgerEntry.from_minute, LedgerEntry.to_minute, LedgerEntry.gpu_type,
                   LedgerEntry.gpu_count)
            .where(LedgerEntry.id > after).order_by(LedgerEntry.id).limit(BATCH)).all()
        if not rows:
            return 0
        sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
        starts = _attempt_starts(s, rows)
        owners = _job_owners(s, {r.job_id for r in rows if r.job_id is not None}
                             | {int(r.resource[11:]) for r in rows if r.kind == KIND_STORAGE
                                and (r.resource or "").startswith("output:job/")
                                and r.resource[11:].isdigit()})
        projects = _repo_projects(s, rows)
        for r in rows:
            if r.kind == KIND_GPU and r.from_minute is not None and r.to_minute is not None:
                project, user = owners.get(r.job_id, (0, 0))
                start = starts.get((r.resource, r.attempt)) or \
                    now - timedelta(minutes=r.to_minute)
                kind = CPU if r.gpu_type == CPU else "gpu"
                for day, minutes, micros in split_gpu_charge(start, r.from_minute, r.to_minute,
                                                             -r.amount_micros):
                    _count(sums, day, r.team_id, project, user, kind, r.gpu_type or "",
                           minutes * (r.gpu_count or 1), micros)
            elif r.kind == KIND_STORAGE and r.from_minute is not None and r.to_minute is not None:
                project, user = _storage_owner(r.resource or "", r.team_id, projects, owners)
                for day, minutes, micros in split_minutes(r.from_minute, r.to_minute,
                                                          -r.amount_micros):
                    _count(sums, day, r.team_id, project, user, "storage", "", 0, micros)
        _upsert(s, sums)
        usage_cache.bump(s, now)
        value = str(rows[-1].id)
        if mark is None:
            s.add(ReconcilerState(key=LEDGER_KEY, value=value, updated_at=now))
        else:
            mark.value, mark.updated_at = value, now
        return len(rows)


def split_gpu_charge(start: datetime, first: int, end: int, micros: int) -> list[tuple[int, int, int]]:
    """Minutes ``[first, end)`` of an attempt that started at ``start`` -> [(day, minutes, micros)].
    Minute k begins at ``start + 60 k`` s and counts on that instant's UTC day."""
    s0 = (start - EPOCH).total_seconds()
    pieces, k = [], first
    while k < end:
        day = int((s0 + 60 * k) // 86400)
        next_day_s = (day + 1) * 86400
        k_next = min(end, max(k + 1, math.ceil((next_day_s - s0) / 60)))
        pieces.append((day, k_next - k))
        k = k_next
    return _share(pieces, end - first, micros)


def split_minutes(first: int, end: int, micros: int) -> list[tuple[int, int, int]]:
    """Epoch minutes ``[first, end)`` -> [(day, minutes, micros)]."""
    pieces, m = [], first
    while m < end:
        day = m // 1440
        m_next = min(end, (day + 1) * 1440)
        pieces.append((day, m_next - m))
        m = m_next
    return _share(pieces, end - first, micros)


def _share(pieces: list[tuple[int, int]], total: int, micros: int) -> list[tuple[int, int, int]]:
    """Micros shared by minutes; the last piece takes the remainder, so they sum exactly."""
    out, given = [], 0
    for i, (day, minutes) in enumerate(pieces):
        part = micros - given if i == len(pieces) - 1 else micros * minutes // max(total, 1)
        given += part
        out.append((day, minutes, part))
    return out


def _attempt_starts(s, rows) -> dict[tuple[str, int], datetime]:
    """(resource, attempt) -> the attempt's start, from the jobs (and sweep tasks) table."""
    wanted = [(r.resource, r.attempt, job_of_resource(r.resource))
              for r in rows if r.kind == KIND_GPU and r.resource]
    job_ids = {j for _, _, j in wanted if j is not None}
    jobs = {}
    for ids in _chunks(sorted(job_ids)):
        for j in s.execute(select(Job.id, Job.started_at, Job.attempt_started_at, Job.attempt)
                           .where(Job.id.in_(ids))):
            jobs[j.id] = j
    tasks = {}
    task_jobs = sorted({j for res, _, j in wanted if j is not None and "_" in res})
    for ids in _chunks(task_jobs):
        for p in s.execute(select(JobPart.job_id, JobPart.index, JobPart.started_at)
                           .where(JobPart.job_id.in_(ids), JobPart.kind == "task")):
            tasks[f"{p.job_id}_{p.index}"] = p.started_at
    out = {}
    for res, attempt, job_id in wanted:
        start = tasks.get(res) if "_" in res else None
        job = jobs.get(job_id)
        if start is None and job is not None:
            if job.attempt_started_at is not None and attempt == (job.attempt or 0):
                start = job.attempt_started_at
            else:
                start = job.started_at if attempt == 0 else None
                start = start or job.attempt_started_at or job.started_at
        if start is not None:
            out[(res, attempt)] = start
    return out


def _job_owners(s, job_ids) -> dict[int, tuple[int, int]]:
    out = {}
    for ids in _chunks(sorted(job_ids)):
        for jid, pid, uid in s.execute(select(Job.id, Job.project_id, Job.pusher_id)
                                       .where(Job.id.in_(ids))):
            out[jid] = (pid or 0, uid or 0)
    return out


def _repo_projects(s, rows) -> dict[tuple[int, str], int]:
    """(team id, project name) -> project id, for storage charges of repositories."""
    teams = {r.team_id for r in rows if r.kind == KIND_STORAGE and (r.resource or "")
             .startswith("repo:")}
    if not teams:
        return {}
    return {(t, n): i for i, t, n in s.execute(select(Project.id, Project.team_id, Project.name)
                                                .where(Project.team_id.in_(sorted(teams))))}


def _storage_owner(resource: str, team_id: int, projects, owners) -> tuple[int, int]:
    """A repository's storage is its project's; a kept job output its job's; data: the team's."""
    kind, _, rest = resource.partition(":")
    if kind == "repo" and "/" in rest:
        return projects.get((team_id, rest.split("/", 1)[1]), 0), 0
    if kind == "output" and rest.startswith("job/") and rest[4:].isdigit():
        return owners.get(int(rest[4:]), (0, 0))
    return 0, 0


def _count(sums, day, team, project, user, kind, gpu_type, minutes, micros) -> None:
    """One piece of a charge, at each grain: the team, its project, the user (and project)."""
    keys = [("team", day, team, 0, 0, kind, gpu_type)]
    if project:
        keys.append(("project", day, team, project, 0, kind, gpu_type))
    if user:
        keys.append(("user", day, team, project, user, kind, gpu_type))
    for key in keys:
        acc = sums[key]
        acc[0] += minutes
        acc[1] += micros


KEY = ("grain", "day", "team_id", "project_id", "user_id", "kind", "gpu_type")


def _upsert(s, sums: dict[tuple, list[int]]) -> None:
    """Add the sums to their rows (INSERT … ON CONFLICT DO UPDATE on SQLite and PostgreSQL)."""
    if not sums:
        return
    rows = [dict(zip(KEY, key), minutes=m, micros=c) for key, (m, c) in sums.items()]
    table = UsageDay.__table__
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:   # pragma: no cover — Slipway runs on SQLite or PostgreSQL
        raise RuntimeError(f"usage rollups need SQLite or PostgreSQL, not {dialect}")
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(index_elements=list(KEY), set_={
        "minutes": table.c.minutes + stmt.excluded.minutes,
        "micros": table.c.micros + stmt.excluded.micros})
    for i in range(0, len(rows), 2000):
        s.execute(stmt, rows[i:i + 2000])


def _chunks(items: list, n: int = 500):
    for i in range(0, len(items), n):
        yield items[i:i + n]


# --------------------------------------------------------------------------------- jobs

def refresh_jobs(svc: Services, job_ids: list[int], now: datetime) -> int:
    """Write the usage rows of these jobs as the jobs table has them now; how many."""
    written = 0
    with svc.db.transaction() as s:
        for ids in _chunks(sorted(job_ids)):
            rows = s.execute(select(Job.id, Job.state, Job.pusher_id, Job.project_id,
                                    Job.submitted_at, Job.started_at, Job.ended_at, Project.team_id)
                             .join(Project, Job.project_id == Project.id)
                             .where(Job.id.in_(ids))).all()
            have = {u.job_id: u for u in s.scalars(select(UsageJob).where(UsageJob.job_id.in_(ids)))}
            for j in rows:
                if j.started_at is None and j.state not in states.TERMINAL:
                    continue
                u = have.get(j.id) or UsageJob(job_id=j.id)
                if j.id not in have:
                    s.add(u)
                u.team_id, u.project_id, u.user_id, u.state = j.team_id, j.project_id, \
                    j.pusher_id or 0, j.state
                ended = j.ended_at if j.state in states.TERMINAL else None
                if j.state in states.TERMINAL and ended is None:
                    ended = j.started_at or j.submitted_at
                u.ended_day = epoch_day(ended) if ended else None
                u.started_day = epoch_day(j.started_at) if j.started_at else None
                u.wait_s = (max(0, int((j.started_at - j.submitted_at).total_seconds()))
                            if j.started_at and j.submitted_at else None)
                written += 1
        if written:
            usage_cache.bump(s, now)
    return written


def catch_up_jobs(svc: Services, now: datetime, limit: int = 200_000) -> int:
    """Jobs whose usage row is missing or behind (ended outside a tick); refreshed; how many."""
    with svc.db.session() as s:
        ids = list(s.scalars(
            select(Job.id).outerjoin(UsageJob, UsageJob.job_id == Job.id)
            .where(or_(Job.started_at.is_not(None), Job.state.in_(sorted(states.TERMINAL))),
                   or_(UsageJob.job_id.is_(None),
                       and_(UsageJob.state != Job.state,
                            UsageJob.state.not_in(sorted(states.TERMINAL)))))
            .order_by(Job.id).limit(limit)))
    total = 0
    for i in range(0, len(ids), 5000):
        total += refresh_jobs(svc, ids[i:i + 5000], now)
    return total
