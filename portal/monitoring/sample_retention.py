"""Downsampling and retention of the cluster samples, run from the tick at most once an hour
(docs/MONITORING.md): every complete hour's minute rows become one hourly row (averages, and
maxima where a peak matters: ``sample_math.fold``); minute rows older than
``sample_minutes_days`` and hourly rows older than ``sample_hours_days`` are deleted. The same
pass checks the jobs rollup against the jobs table (``usage_rollup.catch_up_jobs``: jobs that
ended outside a tick, e.g. cancelled before they reached Slurm)."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from ..db import ReconcilerState
from ..db.monitoring_models import STEP_HOUR, STEP_MINUTE, ClusterSample
from ..services import Services
from . import usage_rollup
from .sample_math import epoch_minute, fold

LAST_RUN_KEY = "monitoring_retention_at"
INTERVAL_S = 3600
# minute-row columns an hourly row is folded from
MINUTE_COLUMNS = ("bucket", "at", "jobs_running", "jobs_running_max", "jobs_pending",
                  "jobs_pending_max", "cpus_alloc", "cpus_alloc_max", "cpus_total", "mem_alloc_mb",
                  "mem_alloc_max_mb", "mem_total_mb", "nodes_total", "nodes_down", "storage_bytes",
                  "gpus", "note")


def maybe_run(svc: Services, now: datetime, *, force: bool = False) -> dict | None:
    """Run the pass when the last one is an hour old (or ``force``); what it did, else None."""
    with svc.db.session() as s:
        row = s.get(ReconcilerState, LAST_RUN_KEY)
        if not force and row is not None and \
                (now - datetime.fromisoformat(row.value)).total_seconds() < INTERVAL_S:
            return None
    done = {"hours": downsample(svc, now)}
    done.update(prune(svc, now))
    done["jobs"] = usage_rollup.catch_up_jobs(svc, now)
    with svc.db.transaction() as s:
        row = s.get(ReconcilerState, LAST_RUN_KEY)
        if row is None:
            s.add(ReconcilerState(key=LAST_RUN_KEY, value=now.isoformat(), updated_at=now))
        else:
            row.value, row.updated_at = now.isoformat(), now
    return done


def minute_rows(s, start_minute: int, end_minute: int | None = None) -> list[dict]:
    """Minute rows with ``start_minute <= bucket < end_minute`` as dicts, oldest first."""
    cols = [getattr(ClusterSample, c) for c in MINUTE_COLUMNS]
    stmt = select(*cols).where(ClusterSample.step == STEP_MINUTE,
                               ClusterSample.bucket >= start_minute)
    if end_minute is not None:
        stmt = stmt.where(ClusterSample.bucket < end_minute)
    return [dict(r._mapping) for r in s.execute(stmt.order_by(ClusterSample.bucket))]


def hours_of(rows: list[dict]) -> dict[int, list[dict]]:
    """Minute rows grouped by the first minute of their hour."""
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["bucket"] - r["bucket"] % 60, []).append(r)
    return out


def downsample(svc: Services, now: datetime) -> int:
    """Hourly rows for every complete hour after the last hourly row; how many were written."""
    this_hour = epoch_minute(now) - epoch_minute(now) % 60
    with svc.db.transaction() as s:
        last = s.scalar(select(func.max(ClusterSample.bucket))
                        .where(ClusterSample.step == STEP_HOUR))
        start = 0 if last is None else last + 60
        written = 0
        for hour, rows in sorted(hours_of(minute_rows(s, start, this_hour)).items()):
            values = fold(rows)
            s.add(ClusterSample(step=STEP_HOUR, bucket=hour, **values))
            written += 1
        return written


def prune(svc: Services, now: datetime) -> dict:
    cfg = svc.config
    minute_cut = epoch_minute(now - timedelta(days=cfg.sample_minutes_days))
    hour_cut = epoch_minute(now - timedelta(days=cfg.sample_hours_days))
    with svc.db.transaction() as s:
        minutes = s.execute(delete(ClusterSample).where(ClusterSample.step == STEP_MINUTE,
                                                        ClusterSample.bucket < minute_cut)).rowcount
        hours = s.execute(delete(ClusterSample).where(ClusterSample.step == STEP_HOUR,
                                                      ClusterSample.bucket < hour_cut)).rowcount
    return {"pruned_minutes": minutes or 0, "pruned_hours": hours or 0}
