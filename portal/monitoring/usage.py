"""Usage statistics (docs/MONITORING.md) at three levels — the cluster, a team, a user — from the
database only (the rollups ``usage_rollup`` keeps from the ledger and the jobs table):

* GPU-hours by GPU type per day, week or month (the ledger's GPU charges: minutes x GPUs, so
  they equal sacct's elapsed time x allocated GPUs, as billing does); core-hours of CPU-only jobs;
* jobs by final state (the day they ended);
* spend (GPU, CPU and storage charges);
* queue wait, submitted -> started, median and 95th percentile (nearest rank) of the jobs that
  started in each bucket and over the whole window;
* top projects by spend.

``statistics`` answers one dict (the API's JSON, the page's plots and the CSV all read it);
results are cached per process until the rollups change (``usage_cache``)."""
from __future__ import annotations

import csv
import io

from sqlalchemy import case, func, literal, select

from ..db import Project, Team, from_micros
from ..db.monitoring_models import UsageDay, UsageJob
from ..jobs import states
from ..services import Services
from ..teams.access import Actor
from . import usage_cache
from .usage_scope import (Scope, bucket_label, bucket_of, bucket_seconds, bucket_start, day_date,
                          parse_day, parse_period, resolve_scope, window)

FINAL_STATES = tuple(sorted(states.TERMINAL))
TOP_PROJECTS = 10


def statistics(svc: Services, actor: Actor, scope: str | None = None, period: str | None = None,
               start: str | None = None, end: str | None = None) -> dict:
    """The usage of ``scope`` per ``period`` bucket over the window (see ``usage_scope``)."""
    period = parse_period(period)
    first_day, last_day = parse_day(start, "start"), parse_day(end, "end")
    with svc.db.session() as s:
        sc = resolve_scope(s, actor, scope)
        first, last, buckets = window(period, svc.now(), first_day, last_day)
        key = (sc.key, period, first, last)
        version = usage_cache.version(s)
        hit = usage_cache.get(svc, key, version)
        if hit is not None:
            return hit
        out = compute(s, sc, period, first, last, buckets)
    usage_cache.put(svc, key, version, out)
    return out


def compute(s, sc: Scope, period: str, first: int, last: int, buckets: list[int]) -> dict:
    index = {b: i for i, b in enumerate(buckets)}
    n = len(buckets)
    gpu_minutes: dict[str, list[int]] = {}
    cpu_minutes = [0] * n
    spend = {"gpu": [0] * n, "storage": [0] * n}
    rows = s.execute(_scoped(select(UsageDay.day, UsageDay.kind, UsageDay.gpu_type,
                                    func.sum(UsageDay.minutes), func.sum(UsageDay.micros))
                             .where(UsageDay.grain == ("user" if sc.kind == "user" else "team"),
                                    UsageDay.day >= first, UsageDay.day <= last), UsageDay, sc)
                     .group_by(UsageDay.day, UsageDay.kind, UsageDay.gpu_type)).all()
    for day, kind, gpu_type, minutes, micros in rows:
        i = index[bucket_of(period, day)]
        if kind == "gpu":
            gpu_minutes.setdefault(gpu_type, [0] * n)[i] += int(minutes or 0)
        elif kind == "cpu":
            cpu_minutes[i] += int(minutes or 0)
        spend["storage" if kind == "storage" else "gpu"][i] += int(micros or 0)
    jobs = {st: [0] * n for st in FINAL_STATES}
    for day, state, count in s.execute(
            _scoped(select(UsageJob.ended_day, UsageJob.state, func.count())
                    .where(UsageJob.ended_day >= first, UsageJob.ended_day <= last,
                           UsageJob.state.in_(FINAL_STATES)), UsageJob, sc)
            .group_by(UsageJob.ended_day, UsageJob.state)):
        jobs[state][index[bucket_of(period, day)]] += count
    waits = _wait_percentiles(s, sc, period, first, last, index)
    total_micros = sum(spend["gpu"]) + sum(spend["storage"])
    return {
        "scope": sc.key, "label": sc.label, "period": period,
        "start": day_date(first).isoformat(), "end": day_date(last).isoformat(),
        "buckets": [bucket_label(period, b) for b in buckets],
        "x": [bucket_seconds(period, b) for b in buckets],
        "gpu_hours": {t: [round(m / 60, 4) for m in v] for t, v in sorted(gpu_minutes.items())},
        "gpu_minutes": {t: v for t, v in sorted(gpu_minutes.items())},
        "cpu_core_hours": [round(m / 60, 4) for m in cpu_minutes],
        "spend_usd": [str(from_micros(a + b)) for a, b in zip(spend["gpu"], spend["storage"])],
        "spend_gpu_usd": [str(from_micros(v)) for v in spend["gpu"]],
        "spend_storage_usd": [str(from_micros(v)) for v in spend["storage"]],
        "jobs": jobs,
        "wait_median_s": waits["median"], "wait_p95_s": waits["p95"],
        "wait_started": waits["count"],
        "totals": {
            "gpu_hours": {t: round(sum(v) / 60, 4) for t, v in sorted(gpu_minutes.items())},
            "cpu_core_hours": round(sum(cpu_minutes) / 60, 4),
            "spend_usd": str(from_micros(total_micros)),
            "jobs": {st: sum(v) for st, v in jobs.items()},
            "wait_median_s": waits["all_median"], "wait_p95_s": waits["all_p95"],
            "wait_started": sum(waits["count"]),
        },
        "top_projects": _top_projects(s, sc, first, last),
    }


def bucket_expr(period: str, day_column, buckets: list[int]):
    """SQL for the bucket of a day column: the day, its week, or its month (a CASE over the
    window's month boundaries), so the database groups and ranks by bucket itself."""
    if period == "day":
        return day_column
    if period == "week":
        return (day_column + 3) // 7
    if len(buckets) == 1:
        return literal(buckets[0])
    return case(*[(day_column < bucket_start(period, nxt), b)
                  for b, nxt in zip(buckets, buckets[1:])], else_=buckets[-1])


def _scoped(stmt, table, sc: Scope):
    if sc.kind == "team":
        return stmt.where(table.team_id == sc.team_id)
    if sc.kind == "user":
        return stmt.where(table.user_id == sc.user_id)
    return stmt


def _wait_percentiles(s, sc: Scope, period: str, first: int, last: int, index: dict) -> dict:
    """Median and p95 (nearest rank: the ceil(p * n)-th smallest) per bucket and overall, in SQL
    (window functions): only two rows per bucket come back."""
    n = len(index)
    out = {"median": [None] * n, "p95": [None] * n, "count": [0] * n,
           "all_median": None, "all_p95": None}
    bucket = bucket_expr(period, UsageJob.started_day, list(index))
    base = _scoped(select(UsageJob.wait_s.label("w"), bucket.label("b"))
                   .where(UsageJob.started_day >= first, UsageJob.started_day <= last,
                          UsageJob.wait_s.is_not(None)), UsageJob, sc).subquery()
    for partitioned in (True, False):
        part = [base.c.b] if partitioned else None
        ranked = select(base.c.b, base.c.w,
                        func.row_number().over(partition_by=part, order_by=base.c.w).label("rn"),
                        func.count().over(partition_by=part).label("cnt")).subquery()
        median_rank = (ranked.c.cnt + 1) // 2
        p95_rank = (ranked.c.cnt * 95 + 99) // 100
        rows = s.execute(select(ranked.c.b, ranked.c.w, ranked.c.cnt, ranked.c.rn == median_rank,
                                ranked.c.rn == p95_rank)
                         .where((ranked.c.rn == median_rank) | (ranked.c.rn == p95_rank))).all()
        for b, w, cnt, is_median, is_p95 in rows:
            if partitioned:
                i = index.get(int(b))
                if i is None:
                    continue
                out["count"][i] = int(cnt)
                if is_median:
                    out["median"][i] = int(w)
                if is_p95:
                    out["p95"][i] = int(w)
            else:
                if is_median:
                    out["all_median"] = int(w)
                if is_p95:
                    out["all_p95"] = int(w)
    return out


def _top_projects(s, sc: Scope, first: int, last: int) -> list[dict]:
    total = func.sum(UsageDay.micros)
    gpu = func.sum(UsageDay.minutes).filter(UsageDay.kind == "gpu")
    grain = "user" if sc.kind == "user" else "project"
    rows = s.execute(_scoped(select(UsageDay.project_id, UsageDay.team_id, total, gpu)
                             .where(UsageDay.grain == grain, UsageDay.day >= first,
                                    UsageDay.day <= last, UsageDay.project_id != 0), UsageDay, sc)
                     .group_by(UsageDay.project_id, UsageDay.team_id)
                     .order_by(total.desc(), UsageDay.project_id).limit(TOP_PROJECTS)).all()
    ids = [r[0] for r in rows]
    names = {pid: (team, name) for pid, team, name in s.execute(
        select(Project.id, Team.name, Project.name).join(Team, Project.team_id == Team.id)
        .where(Project.id.in_(ids)))} if ids else {}
    teams = {tid: name for tid, name in s.execute(select(Team.id, Team.name).where(
        Team.id.in_(sorted({r[1] for r in rows}))))} if rows else {}
    out = []
    for pid, team_id, micros, minutes in rows:
        team, name = names.get(pid, (teams.get(team_id, "?"), f"(deleted project #{pid})"))
        out.append({"team": team, "project": name, "spend_usd": str(from_micros(micros or 0)),
                    "gpu_hours": round((minutes or 0) / 60, 4)})
    return out


# ----------------------------------------------------------------------------------- CSV

def csv_text(stats: dict) -> str:
    """One row per bucket: GPU-hours per type, core-hours, spend, jobs per final state, waits."""
    types = list(stats["gpu_hours"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["period_start", *[f"gpu_hours_{t}" for t in types], "cpu_core_hours",
                "spend_usd", "spend_gpu_usd", "spend_storage_usd",
                *[f"jobs_{st}" for st in FINAL_STATES], "jobs_started", "wait_median_s",
                "wait_p95_s"])
    for i, label in enumerate(stats["buckets"]):
        w.writerow([label, *[stats["gpu_hours"][t][i] for t in types],
                    stats["cpu_core_hours"][i], stats["spend_usd"][i],
                    stats["spend_gpu_usd"][i], stats["spend_storage_usd"][i],
                    *[stats["jobs"][st][i] for st in FINAL_STATES], stats["wait_started"][i],
                    "" if stats["wait_median_s"][i] is None else stats["wait_median_s"][i],
                    "" if stats["wait_p95_s"][i] is None else stats["wait_p95_s"][i]])
    return buf.getvalue()


def csv_name(stats: dict) -> str:
    scope = stats["scope"].replace(":", "-")
    return f"usage-{scope}-{stats['period']}-{stats['start']}-{stats['end']}.csv"

