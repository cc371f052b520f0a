"""The cluster sampler (docs/MONITORING.md), called once per reconciler tick with the tick's own
squeue and sinfo answers (never a Slurm call of its own):

* at most one ``cluster_samples`` row per minute, with exactly what those answers said
  (``sample_math.snapshot``) and the storage in use (the biller's latest storage round);
* ``cluster_nodes``: every node as that same sinfo answer saw it;
* the usage rollups (``usage_rollup``: the ledger's new charges, jobs that started or ended);
* at most once an hour (``sample_retention``): minute rows folded into hourly rows, old rows
  pruned, and the jobs rollup checked against the jobs table.

Each part is wrapped on its own: a failure goes in the tick's report, never stops the others.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable

from sqlalchemy import func, select

from ..billing.ledger import KIND_STORAGE
from ..db import LedgerEntry, ReconcilerState
from ..db.monitoring_models import STEP_MINUTE, ClusterNode, ClusterSample
from ..services import Services, log
from . import sample_retention, usage_rollup
from .sample_math import Snapshot, epoch_minute, gpus_json, snapshot

STORAGE_KEY = "monitoring_storage"          # {"billed_at", "minute", "after_id", "bytes"}
NOT_RESPONDING = "NOT_RESPONDING"


def record(svc: Services, now: datetime, queue, nodes, report) -> None:
    """One tick's cluster sample, the usage rollups and (hourly) the retention pass."""
    for name, step in (("cluster sample", lambda: take(svc, now, queue, nodes, report)),
                       ("usage", lambda: usage_rollup.fold(svc, now, report)),
                       ("retention", lambda: sample_retention.maybe_run(svc, now))):
        _guarded(name, step, report)


def _guarded(name: str, step: Callable[[], Any], report) -> None:
    try:
        step()
    except Exception as exc:  # noqa: BLE001 — one part failing never stops the others
        log.exception("monitoring %s failed", name)
        report.errors.append(f"monitoring {name}: {exc}")


def take(svc: Services, now: datetime, queue, nodes, report) -> ClusterSample | None:
    """Write this minute's sample (and the node table) unless the minute has one already."""
    minute = epoch_minute(now)
    with svc.db.transaction() as s:
        last = s.scalar(select(func.max(ClusterSample.bucket))
                        .where(ClusterSample.step == STEP_MINUTE))
        if last is not None and last >= minute:
            return None
        notes = []
        if queue is None:
            notes.append(next((e for e in report.errors if e.startswith("poll failed")),
                              "squeue did not answer"))
        if nodes is None:
            notes.append(f"sinfo: {report.nodes_error}" if report.nodes_error
                         else "sinfo was not asked (squeue did not answer)")
        snap = snapshot(queue, nodes, notes)
        row = _sample_row(snap, minute, now, storage_used(s))
        s.add(row)
        if nodes is not None:
            store_nodes(s, nodes, now)
        return row


def _sample_row(snap: Snapshot, minute: int, now: datetime, storage: int | None) -> ClusterSample:
    return ClusterSample(
        step=STEP_MINUTE, bucket=minute, at=now, samples=1,
        jobs_running=snap.jobs_running, jobs_running_max=snap.jobs_running,
        jobs_pending=snap.jobs_pending, jobs_pending_max=snap.jobs_pending,
        cpus_alloc=snap.cpus_alloc, cpus_alloc_max=snap.cpus_alloc, cpus_total=snap.cpus_total,
        mem_alloc_mb=snap.mem_alloc_mb, mem_alloc_max_mb=snap.mem_alloc_mb,
        mem_total_mb=snap.mem_total_mb, nodes_total=snap.nodes_total, nodes_down=snap.nodes_down,
        storage_bytes=storage, gpus=gpus_json(snap.gpus),
        note="; ".join(snap.notes)[:2000] if snap.notes else None)


def responding(node) -> bool:
    """slurmctld hears from the node's slurmd (no NOT_RESPONDING flag, not down for it)."""
    flags = {f.upper() for f in node.flags}
    if NOT_RESPONDING in flags:
        return False
    return not (node.state.upper() == "DOWN" and node.reason.lower().startswith("not responding"))


def store_nodes(s, nodes: list, now: datetime) -> None:
    """The node table follows this sinfo answer: rows updated, new nodes added, gone ones removed."""
    rows = {r.name: r for r in s.scalars(select(ClusterNode))}
    for n in nodes:
        row = rows.pop(n.name, None)
        if row is None:
            row = ClusterNode(name=n.name)
            s.add(row)
        row.state, row.flags, row.reason = n.state, ",".join(n.flags), n.reason or ""
        row.partitions, row.available = ",".join(n.partitions), bool(n.available)
        row.gpus = json.dumps({t: [c.allocated, c.total] for t, c in sorted(n.gpus.items())})
        row.cpus, row.alloc_cpus, row.cpu_load = n.cpus, n.alloc_cpus, n.cpu_load
        row.real_memory_mb, row.alloc_memory_mb = n.real_memory_mb, n.alloc_memory_mb
        row.last_heard, row.seen_at = n.last_heard, now
        if responding(n):
            row.responding_at = now
        elif row.responding_at is None:
            row.responding_at = n.last_heard
    for gone in rows.values():
        s.delete(gone)


def storage_used(s) -> int | None:
    """Bytes in the biller's latest storage round (every sampled resource is charged up to that
    round's minute, so its entries are the ones ending at it); None before the first round.

    Remembered per round (``STORAGE_KEY``): a new round is summed over the ledger entries
    written since the previous one (ids above it), so a tick never scans the whole ledger."""
    billed = s.get(ReconcilerState, "storage_billed_at")
    if billed is None:
        return None
    mine = s.get(ReconcilerState, STORAGE_KEY)
    state = json.loads(mine.value) if mine is not None else {}
    if state.get("billed_at") == billed.value:
        return state.get("bytes")
    minute = epoch_minute(datetime.fromisoformat(billed.value))
    after = int(state.get("after_id") or 0)
    top = s.scalar(select(func.max(LedgerEntry.id))) or 0
    if state.get("minute") == minute:   # a second round within the same minute: nothing new
        total = state.get("bytes")
    else:
        total = int(s.scalar(select(func.coalesce(func.sum(LedgerEntry.bytes), 0)).where(
            LedgerEntry.id > after, LedgerEntry.id <= top, LedgerEntry.kind == KIND_STORAGE,
            LedgerEntry.to_minute == minute)) or 0)
    value = json.dumps({"billed_at": billed.value, "minute": minute, "after_id": top,
                        "bytes": total})
    if mine is None:
        s.add(ReconcilerState(key=STORAGE_KEY, value=value, updated_at=billed.updated_at))
    else:
        mine.value = value
    return total

