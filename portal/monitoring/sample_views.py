"""The cluster dashboard's numbers, read from the database only (cluster administrators): the
latest sample ("now": exactly what that tick's sinfo and squeue said), the node table, and the
series of the last hour or day (minute rows) or week or month (hourly rows, plus the hours
since the last downsampling folded on the fly). The series are cached per process until a new
sample arrives (``usage_cache``)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import func, select

from ..db.monitoring_models import STEP_HOUR, STEP_MINUTE, ClusterNode, ClusterSample
from ..services import Services
from ..teams.access import Actor, Forbidden, OpError
from . import usage_cache
from .sample_math import epoch_minute, fold
from .sample_retention import MINUTE_COLUMNS, hours_of, minute_rows

RANGES = {"hour": (timedelta(hours=1), STEP_MINUTE), "day": (timedelta(days=1), STEP_MINUTE),
          "week": (timedelta(days=7), STEP_HOUR), "month": (timedelta(days=30), STEP_HOUR)}
MB_PER_GB = 1024
BYTES_PER_GB = 10 ** 9


def require_admin(actor: Actor) -> None:
    if not actor.is_cluster_admin:
        raise Forbidden("only cluster administrators may see the cluster dashboard")


def parse_range(text: str | None) -> str:
    name = (text or "day").strip()
    if name not in RANGES:
        raise OpError(f"range must be one of {', '.join(RANGES)}, got {name[:40]!r}")
    return name


def dashboard(svc: Services, actor: Actor, range_name: str | None = None) -> dict:
    """{"now", "nodes", "range", "series"} (the page, ``GET /api/cluster`` and the CLI)."""
    require_admin(actor)
    name = parse_range(range_name)
    with svc.db.session() as s:
        latest = s.scalars(select(ClusterSample).where(ClusterSample.step == STEP_MINUTE)
                           .order_by(ClusterSample.bucket.desc()).limit(1)).first()
        nodes = [node_dict(n) for n in s.scalars(select(ClusterNode).order_by(ClusterNode.name))]
        last_hour = s.scalar(select(func.max(ClusterSample.bucket))
                             .where(ClusterSample.step == STEP_HOUR))
        now = svc.now()
        key = ("cluster-series", name, epoch_minute(now))
        ver = (latest.bucket if latest else None, last_hour)
        data = usage_cache.get(svc, key, ver)
        if data is None:
            data = series(s, name, now)
            usage_cache.put(svc, key, ver, data)
    return {"now": sample_dict(latest) if latest else None, "nodes": nodes, "range": name,
            "series": data}


def sample_dict(row: ClusterSample) -> dict:
    return {"at": row.at.isoformat(), "jobs_running": _num(row.jobs_running),
            "jobs_pending": _num(row.jobs_pending), "cpus_alloc": _num(row.cpus_alloc),
            "cpus_total": row.cpus_total, "mem_alloc_mb": _num(row.mem_alloc_mb),
            "mem_total_mb": row.mem_total_mb, "nodes_total": row.nodes_total,
            "nodes_down": row.nodes_down, "storage_bytes": row.storage_bytes,
            "gpus": json.loads(row.gpus) if row.gpus else None, "note": row.note}


def node_dict(n: ClusterNode) -> dict:
    gpus = {t: {"used": used, "total": total} for t, (used, total) in json.loads(n.gpus).items()}
    real_gpus = {t: g for t, g in gpus.items() if t != "shard"}
    return {"name": n.name, "state": n.state, "flags": [f for f in n.flags.split(",") if f],
            "reason": n.reason, "partitions": [p for p in n.partitions.split(",") if p],
            "available": n.available, "gpus": gpus,
            "gpus_used": sum(g["used"] for g in real_gpus.values()),
            "gpus_total": sum(g["total"] for g in real_gpus.values()),
            "cpus": n.cpus, "alloc_cpus": n.alloc_cpus, "cpu_load": n.cpu_load,
            "real_memory_mb": n.real_memory_mb, "alloc_memory_mb": n.alloc_memory_mb,
            "last_heard": _iso(n.last_heard), "responding_at": _iso(n.responding_at),
            "seen_at": _iso(n.seen_at)}


def series(s, name: str, now: datetime) -> dict:
    span, step = RANGES[name]
    start = epoch_minute(now - span)
    if step == STEP_MINUTE:
        rows = minute_rows(s, start)
    else:
        cols = [getattr(ClusterSample, c) for c in MINUTE_COLUMNS]
        rows = [dict(r._mapping) for r in s.execute(
            select(*cols).where(ClusterSample.step == STEP_HOUR, ClusterSample.bucket >= start)
            .order_by(ClusterSample.bucket))]
        after = rows[-1]["bucket"] + 60 if rows else start - start % 60
        for hour, minutes in sorted(hours_of(minute_rows(s, after)).items()):
            rows.append({"bucket": hour, **fold(minutes)})
    return columns(rows, step)


def columns(rows: list[dict], step: int) -> dict:
    """Rows -> uPlot's columns: x (epoch seconds) and one list per series; a missing stretch
    (no sample: the reconciler was not running) becomes a null point, drawn as a gap."""
    gap = step // 60 * 2
    filled: list[dict | None] = []
    for r in rows:
        if filled and filled[-1] is not None and r["bucket"] - filled[-1]["bucket"] > gap:
            filled.append(None)
        filled.append(r)
    x, out = [], {k: [] for k in ("jobs_running", "jobs_running_max", "jobs_pending",
                                  "jobs_pending_max", "cpus_alloc", "cpus_alloc_max",
                                  "cpus_total", "mem_alloc_gb", "mem_total_gb", "storage_gb")}
    gpus: dict[str, dict[str, list]] = {}
    prev = None
    for r in filled:
        if r is None:
            x.append((prev + step // 60) * 60)
            for v in out.values():
                v.append(None)
            for g in gpus.values():
                for v in g.values():
                    v.append(None)
            continue
        prev = r["bucket"]
        x.append(r["bucket"] * 60)
        for k in ("jobs_running", "jobs_running_max", "jobs_pending", "jobs_pending_max",
                  "cpus_alloc", "cpus_alloc_max", "cpus_total"):
            out[k].append(_num(r[k]))
        out["mem_alloc_gb"].append(_gb(r["mem_alloc_mb"], MB_PER_GB))
        out["mem_total_gb"].append(_gb(r["mem_total_mb"], MB_PER_GB))
        out["storage_gb"].append(_gb(r["storage_bytes"], BYTES_PER_GB))
        parsed = json.loads(r["gpus"]) if r["gpus"] else {}
        for t in parsed:
            if t not in gpus:
                gpus[t] = {k: [None] * (len(x) - 1) for k in ("alloc", "alloc_max", "idle",
                                                              "down", "total")}
        for t, g in gpus.items():
            d = parsed.get(t)
            for k in g:
                g[k].append(None if d is None else _num(d.get(k, d.get("alloc"))))
    return {"step": step, "x": x, **out, "gpus": dict(sorted(gpus.items()))}


def _num(v):
    if v is None:
        return None
    return int(v) if float(v).is_integer() else round(float(v), 2)


def _gb(v, unit: int):
    return None if v is None else round(v / unit, 3)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None

