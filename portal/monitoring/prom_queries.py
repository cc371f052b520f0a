"""The database reads behind ``/metrics`` (portal/monitoring/prom_collector.py): a few
aggregate queries per scrape, no Slurm call, no row loaded one by one."""
from __future__ import annotations

from sqlalchemy import Float, and_, case, cast, func, literal, select
from sqlalchemy.orm import Session

from ..db import Job, Project, Team, TeamBalance
from ..db.models import ALL_STATES, MICROS
from ..db.parts_models import JobPart

# seconds from submission to start (the queue wait)
QUEUE_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
# seconds from the push (the job's reservation) to its submission (pending in Slurm)
PUSH_TO_PENDING_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
ALLOCATED = ("running", "finishing")   # states whose GPUs are held
NOT_GPUS = ("cpu",)                     # gpu_type of CPU-only jobs (gpu_count = cores)


def jobs_by_team_state(s: Session) -> dict[tuple[str, str], int]:
    """(team, state) -> jobs, every state of every team (0 where none)."""
    out = {(name, state): 0 for (name,) in s.execute(select(Team.name)) for state in ALL_STATES}
    rows = s.execute(select(Team.name, Job.state, func.count())
                     .select_from(Job).join(Project, Project.id == Job.project_id)
                     .join(Team, Team.id == Project.team_id)
                     .group_by(Team.name, Job.state))
    for team, state, n in rows:
        out[(team, state)] = int(n)
    return out


def gpus_allocated(s: Session) -> dict[str, int]:
    """GPU type (a shared type's shards: ``a6000-shard``) -> GPUs held by running jobs: a job's
    ``gpu_count`` per node times its nodes, a sweep's per running task."""
    out: dict[str, int] = {}
    single = s.execute(select(Job.gpu_type, func.sum(Job.gpu_count * func.coalesce(Job.nodes, 1)))
                       .where(Job.state.in_(ALLOCATED), Job.task_count.is_(None),
                              Job.gpu_type.not_in(NOT_GPUS))
                       .group_by(Job.gpu_type))
    tasks = s.execute(select(Job.gpu_type, func.sum(Job.gpu_count))
                      .select_from(JobPart).join(Job, Job.id == JobPart.job_id)
                      .where(JobPart.kind == "task", JobPart.state == "running",
                             Job.task_count.is_not(None), Job.gpu_type.not_in(NOT_GPUS))
                      .group_by(Job.gpu_type))
    for gpu_type, n in list(single) + list(tasks):
        out[gpu_type] = out.get(gpu_type, 0) + int(n or 0)
    return out


def team_balances(s: Session) -> dict[str, float]:
    """team -> balance in dollars (0 for a team without ledger entries)."""
    rows = s.execute(select(Team.name, func.coalesce(TeamBalance.balance_micros, 0))
                     .select_from(Team).outerjoin(TeamBalance, TeamBalance.team_id == Team.id))
    return {name: int(micros) / float(MICROS) for name, micros in rows}


def _seconds_between(s: Session, start, end):
    """SQL for ``end - start`` in seconds, on SQLite (text times: julianday, exact to some
    tens of microseconds) and PostgreSQL (intervals: exact)."""
    if s.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * literal(86400.0)


def duration_histogram(s: Session, start, end, bounds) -> tuple[list[tuple[str, float]], float]:
    """Prometheus buckets ((upper bound, cumulative count) ending with +Inf) and the sum of
    ``end - start`` over jobs that have both (negative spans, clock trouble, are left out)."""
    seconds = _seconds_between(s, start, end)
    inner = (select(cast(seconds, Float).label("w"))
             .where(and_(start.is_not(None), end.is_not(None))).subquery())
    w = inner.c.w
    columns = [func.count(), func.coalesce(func.sum(w), 0.0)]
    columns += [func.coalesce(func.sum(case((w <= b, 1), else_=0)), 0) for b in bounds]
    row = s.execute(select(*columns).where(w >= 0)).one()
    count, total, cumulative = int(row[0]), float(row[1]), row[2:]
    buckets = [(repr(float(b)), float(c)) for b, c in zip(bounds, cumulative)]
    buckets.append(("+Inf", float(count)))
    return buckets, total


def queue_wait(s: Session):
    return duration_histogram(s, Job.submitted_at, Job.started_at, QUEUE_WAIT_BUCKETS)


def push_to_pending(s: Session):
    return duration_histogram(s, Job.created_at, Job.submitted_at, PUSH_TO_PENDING_BUCKETS)
