"""What one tick's squeue and sinfo answers say about the cluster (pure functions, no database):
jobs running and pending, GPUs of each type allocated / idle / down, CPU cores and memory
allocated of the total, nodes down; and the hourly fold of minute samples (averages, maxima).

GPUs: ``allocated`` is what sinfo says is in use on every node (a draining node's running jobs
still hold theirs); the rest of a node's GPUs are ``idle`` when the node takes jobs
(``NodeRecord.available``) and ``down`` when it does not (down, drained, not responding, …).
So allocated + idle + down = total, per type. Jobs: ``RUNNING`` records are running; a
``PENDING`` record is one pending job, or for a job array's record of tasks that have not
started (``2-5%2``), one per task (as ``squeue -r`` lists them)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from ..jobs.parts import pending_tasks

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_minute(t: datetime) -> int:
    return int((t - EPOCH).total_seconds()) // 60


def epoch_day(t: datetime) -> int:
    return epoch_minute(t) // 1440


def minute_time(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, timezone.utc)


@dataclass(frozen=True)
class GpuState:
    total: int = 0
    alloc: int = 0
    idle: int = 0
    down: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The cluster at one tick; None where Slurm did not answer (squeue: jobs; sinfo: the rest)."""

    jobs_running: int | None = None
    jobs_pending: int | None = None
    gpus: Mapping[str, GpuState] | None = None
    cpus_alloc: int | None = None
    cpus_total: int | None = None
    mem_alloc_mb: int | None = None
    mem_total_mb: int | None = None
    nodes_total: int | None = None
    nodes_down: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def count_jobs(queue: Mapping[int, Any]) -> tuple[int, int]:
    """(running, pending) over squeue's records."""
    running = pending = 0
    for rec in queue.values():
        if rec.state == "RUNNING":
            running += 1
        elif rec.state == "PENDING":
            tasks = getattr(rec, "array_tasks", "")
            pending += (len(pending_tasks(tasks)) or 1) if tasks else 1
    return running, pending


def gpu_states(nodes: Iterable[Any]) -> dict[str, GpuState]:
    out: dict[str, list[int]] = {}
    for node in nodes:
        up = node.available
        for gpu_type, count in node.gpus.items():
            acc = out.setdefault(gpu_type, [0, 0, 0, 0])
            used = min(count.allocated, count.total)
            acc[0] += count.total
            acc[1] += used
            acc[2 if up else 3] += count.total - used
    return {t: GpuState(*v) for t, v in sorted(out.items())}


def snapshot(queue: Mapping[int, Any] | None, nodes: list | None,
             notes: Iterable[str] = ()) -> Snapshot:
    running = pending = None
    if queue is not None:
        running, pending = count_jobs(queue)
    if nodes is None:
        return Snapshot(running, pending, notes=tuple(notes))
    return Snapshot(
        jobs_running=running, jobs_pending=pending, gpus=gpu_states(nodes),
        cpus_alloc=sum(n.alloc_cpus for n in nodes), cpus_total=sum(n.cpus for n in nodes),
        mem_alloc_mb=sum(getattr(n, "alloc_memory_mb", 0) for n in nodes),
        mem_total_mb=sum(getattr(n, "real_memory_mb", 0) for n in nodes),
        nodes_total=len(nodes), nodes_down=sum(1 for n in nodes if not n.available),
        notes=tuple(notes))


def gpus_json(gpus: Mapping[str, GpuState] | None) -> str | None:
    if gpus is None:
        return None
    return json.dumps({t: {"total": g.total, "alloc": g.alloc, "idle": g.idle, "down": g.down}
                       for t, g in gpus.items()}, sort_keys=True)


# ------------------------------------------------------------------------------ hourly fold

# (column, how the hour keeps it): "avg" columns keep their mean and, with a "*_max" partner,
# the peak; "max" keeps the largest value; "last" the latest one.
FOLD = (("jobs_running", "avg", "jobs_running_max"), ("jobs_pending", "avg", "jobs_pending_max"),
        ("cpus_alloc", "avg", "cpus_alloc_max"), ("mem_alloc_mb", "avg", "mem_alloc_max_mb"),
        ("cpus_total", "max", None), ("mem_total_mb", "max", None), ("nodes_total", "max", None),
        ("nodes_down", "max", None), ("storage_bytes", "last", None))


def fold(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Minute rows (mappings of the columns, oldest first) -> the values of one hourly row."""
    out: dict[str, Any] = {"samples": len(rows), "at": rows[-1]["at"] if rows else None}
    for col, how, peak in FOLD:
        values = [r[col] for r in rows if r[col] is not None]
        if not values:
            out[col] = None
            if peak:
                out[peak] = None
            continue
        if how == "avg":
            out[col] = sum(values) / len(values)
            if peak:
                out[peak] = max(int(round(v)) for v in
                                (r[peak] if r.get(peak) is not None else r[col]
                                 for r in rows if r[col] is not None))
        elif how == "max":
            out[col] = max(values)
        else:
            out[col] = values[-1]
    out["gpus"] = fold_gpus([r["gpus"] for r in rows])
    notes = sorted({r["note"] for r in rows if r.get("note")})
    out["note"] = "; ".join(notes)[:2000] if notes else None
    return out


def fold_gpus(texts: list[str | None]) -> str | None:
    parsed = [json.loads(t) for t in texts if t]
    if not parsed:
        return None
    types = sorted({k for d in parsed for k in d})
    out = {}
    for t in types:
        present = [d[t] for d in parsed if t in d]
        n = len(present)
        out[t] = {k: sum(p[k] for p in present) / n for k in ("total", "alloc", "idle", "down")}
        out[t]["alloc_max"] = max(p.get("alloc_max", p["alloc"]) for p in present)
    return json.dumps(out, sort_keys=True)
