"""Per-job usage (docs/MONITORING.md): running jobs' CPU and memory over time, from Slurm's own
accounting of their steps, and each job's totals and peaks after it ends.

``sample(svc, now, queue, report)`` runs once per reconciler tick (``reconciler.monitor``) with
the tick's squeue answer. For Slipway's jobs RUNNING in it (a sweep's running tasks count for
the sweep) it makes ONE ``svc.backend.step_usage(ids)`` call (``sstat``), at most every
``SAMPLE_EVERY_S`` seconds (the time of the last call is kept in ``reconciler_state``, so a
second reconciler process does not double it), never when nothing runs, never after a failed
poll. It stores a point per job (``job_usage_points``: CPU seconds so far, the cores used since
the point before, resident memory) and keeps the job's totals and peaks in its summary row
(``job_usage_summaries``), closed when the job ends. At most ``MAX_POINTS`` points per job: when
a job has more, every second point of its older half goes (old history gets sparser, the recent
stays fine-grained).

GPU utilisation: Slurm reports it (``gres/gpuutil``) where the nodes read NVIDIA's NVML
(``gpu/nvml``, what ``nvidia-smi`` shows); the bridge passes it on (``StepUsage.
gpu_util_percent``) and it is stored as given. Nodes that do not report it (the local cluster's
fake GPUs) leave it None, and pages say "not reported": never a made-up number.

It also counts the tick for Prometheus (``prom_ticks.observe_tick``), once, whatever happened."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Job, ReconcilerState
from ..db.usage_models import JobUsagePoint, JobUsageSummary
from ..jobs import states
from ..services import Services, log
from . import prom_ticks

SAMPLE_EVERY_S = 30.0   # the default of config usage_sample_interval
MAX_POINTS = 500
LAST_SAMPLE_KEY = "job_usage:last_sample"
MB = float(1 << 20)


def sample(svc: Services, now: datetime, queue: dict[int, Any] | None, report) -> None:
    """Running jobs' CPU and memory (see the module's text); then count the tick."""
    try:
        _sample(svc, now, queue, report)
    finally:
        try:
            prom_ticks.observe_tick(svc, now, report)
        except Exception as exc:  # noqa: BLE001 — a metric must never stop the tick
            log.exception("counting the tick for Prometheus failed")
            report.errors.append(f"monitoring tick metrics: {exc}")


def running_records(queue: dict[int, Any]) -> list[tuple[int, int, int]]:
    """(Slipway's key: the job's or its array's Slurm id, the record's own Slurm id, its
    restart count) of every RUNNING record of ``queue``."""
    out = []
    for rec in queue.values():
        if rec.state != "RUNNING" or getattr(rec, "array_tasks", ""):
            continue
        key = rec.array_job_id if getattr(rec, "array_job_id", 0) else rec.job_id
        out.append((key, rec.job_id, int(getattr(rec, "restart_count", 0) or 0)))
    return out


def _sample(svc: Services, now: datetime, queue: dict[int, Any] | None, report) -> None:
    if queue is None:   # the poll failed: nothing is known to run
        return
    records = running_records(queue)
    with svc.db.session() as s:
        to_close = _ended_summaries(s)
        targets = _targets(s, records) if records else {}
        due = bool(targets) and _due(s, now, svc.config.usage_sample_interval)
    if to_close or due:
        with svc.db.transaction() as s:
            _close(s, to_close, now)
            if due:
                _mark(s, now)
    if not due:
        return
    ids = sorted({slurm_id for recs in targets.values() for slurm_id, _ in recs})
    try:
        usage = svc.backend.step_usage(ids)
    except ig.SlurmBridgeError as exc:
        report.errors.append(f"job usage: sstat failed: {exc}")
        return
    with svc.db.transaction() as s:
        for job_id, recs in targets.items():
            record(s, job_id, [(sid, restart, usage[sid]) for sid, restart in recs if sid in usage],
                   now)


def _targets(s: Session, records: list[tuple[int, int, int]]) -> dict[int, list[tuple[int, int]]]:
    """Slipway job id -> [(Slurm id, restart count)] of its running records."""
    by_key: dict[int, list[tuple[int, int]]] = {}
    for key, slurm_id, restart in records:
        by_key.setdefault(key, []).append((slurm_id, restart))
    rows = s.execute(select(Job.id, Job.slurm_job_id).where(
        Job.slurm_job_id.in_(sorted(by_key)), Job.state.in_(sorted(states.ACTIVE))))
    return {job_id: by_key[slurm_id] for job_id, slurm_id in rows}


def _due(s: Session, now: datetime, every_s: float = SAMPLE_EVERY_S) -> bool:
    row = s.get(ReconcilerState, LAST_SAMPLE_KEY)
    if row is None:
        return True
    try:
        last = datetime.fromisoformat(row.value)
    except ValueError:
        return True
    waited = (now - last).total_seconds()
    return waited >= every_s or waited < 0   # < 0: the clock went back


def _mark(s: Session, now: datetime) -> None:
    row = s.get(ReconcilerState, LAST_SAMPLE_KEY)
    if row is None:
        s.add(ReconcilerState(key=LAST_SAMPLE_KEY, value=now.isoformat(), updated_at=now))
    else:
        row.value, row.updated_at = now.isoformat(), now


def _ended_summaries(s: Session) -> list[int]:
    """Jobs with an open summary that have ended."""
    return list(s.scalars(select(JobUsageSummary.job_id).join(Job, Job.id == JobUsageSummary.job_id)
                          .where(JobUsageSummary.ended_at.is_(None),
                                 Job.state.in_(sorted(states.TERMINAL)))))


def _close(s: Session, job_ids: list[int], now: datetime) -> None:
    for job_id in job_ids:
        summary, job = s.get(JobUsageSummary, job_id), s.get(Job, job_id)
        if summary is not None and summary.ended_at is None:
            summary.ended_at = (job.ended_at if job is not None else None) or now


def record(s: Session, job_id: int, seen: list[tuple[int, int, Any]], now: datetime) -> None:
    """Store one point of job ``job_id`` from ``seen`` ((Slurm id, restart count, JobUsage) of
    its running records that sstat answered for) and update its summary."""
    if not seen:
        return   # no step running yet (or it just ended): no point, never a zero
    summary = s.get(JobUsageSummary, job_id)
    if summary is None:
        summary = JobUsageSummary(job_id=job_id, first_at=now, last_at=now, points=0,
                                  cpu_seconds=0.0, rss_mb=0.0, max_rss_mb=0.0, counters="{}")
        s.add(summary)
    counters = _counters(summary.counters)
    for slurm_id, restart, usage in seen:
        for step in usage.steps:
            key = f"{slurm_id}.{restart}.{step.step}"
            counters[key] = max(counters.get(key, 0.0), float(step.cpu_seconds))
    cpu_total = sum(counters.values())
    rss_mb = sum(u.rss_bytes for _, _, u in seen) / MB
    step_peak_mb = max(u.max_rss_bytes for _, _, u in seen) / MB
    gpus = [u.gpu_util_percent for _, _, u in seen if u.gpu_util_percent is not None]
    gpu = sum(gpus) if gpus else None
    cpu_percent = _cpu_percent(s, job_id, summary, cpu_total, now)
    s.add(JobUsagePoint(job_id=job_id, at=now, cpu_seconds=cpu_total, cpu_percent=cpu_percent,
                        rss_mb=rss_mb, gpu_util_percent=gpu))
    summary.counters = json.dumps(counters, sort_keys=True)
    summary.last_at = now
    summary.cpu_seconds = cpu_total
    summary.rss_mb = rss_mb
    summary.max_rss_mb = max(summary.max_rss_mb or 0.0, rss_mb, step_peak_mb)
    if cpu_percent is not None:
        summary.max_cpu_percent = max(summary.max_cpu_percent or 0.0, cpu_percent)
    if gpu is not None:
        summary.max_gpu_util_percent = max(summary.max_gpu_util_percent or 0.0, gpu)
    summary.points = (summary.points or 0) + 1
    if summary.points > MAX_POINTS:
        s.flush()
        summary.points = thin(s, job_id)


def _counters(text: str | None) -> dict[str, float]:
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _cpu_percent(s: Session, job_id: int, summary: JobUsageSummary, cpu_total: float,
                 now: datetime) -> float | None:
    """Cores kept busy (x100) since the point before; for the first point, since the job
    started. None when there is no interval to divide by."""
    if summary.points:
        since, before = summary.last_at, summary.cpu_seconds or 0.0
    else:
        job = s.get(Job, job_id)
        since = (job.attempt_started_at or job.started_at) if job is not None else None
        before = 0.0
    if since is None:
        return None
    seconds = (now - since).total_seconds()
    if seconds <= 0:
        return None
    return round(max(cpu_total - before, 0.0) / seconds * 100.0, 1)


def thin(s: Session, job_id: int) -> int:
    """Drop every second point of the older half of job ``job_id``'s points when it has more
    than ``MAX_POINTS`` (the first point stays); return how many are left."""
    ids = list(s.scalars(select(JobUsagePoint.id).where(JobUsagePoint.job_id == job_id)
                         .order_by(JobUsagePoint.at, JobUsagePoint.id)))
    if len(ids) <= MAX_POINTS:
        return len(ids)
    drop = ids[:len(ids) // 2][1::2]
    s.execute(delete(JobUsagePoint).where(JobUsagePoint.id.in_(drop)))
    return len(ids) - len(drop)
