"""Resource groups: the cluster's partitions as a site's resource plan (group, GPU type,
count, sharing, what uses it now, who may use it, quotas). Slurm's view of the partitions is
sampled by the reconciler at each account sync (``sample``) into ``reconciler_state``; the
table (``plan``) reads only the database."""
from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import func, select

from .. import integrations as ig
from ..db import Job, ReconcilerState
from ..jobs import states
from ..services import Services
from ..teams.access import Actor
from .common import require_cluster_admin
from .quotas import all_quotas, describe

KEY = "policy.partitions"


def sample(svc: Services, now: datetime) -> int:
    """Store Slurm's partitions (``svc.backend.partitions()``); returns how many."""
    parts = svc.backend.partitions()
    rows = [{"name": p.name, "nodes": p.nodes, "default": bool(p.default),
             "max_time_min": p.max_time_min, "state": p.state,
             "allow_accounts": list(p.allow_accounts or ()), "allow_qos": list(p.allow_qos or ()),
             "oversubscribe": p.oversubscribe, "cpus": p.cpus, "gpus": dict(p.gpus)}
            for p in parts]
    value = json.dumps({"at": now.isoformat(), "partitions": rows})
    with svc.db.transaction() as s:
        row = s.get(ReconcilerState, KEY)
        if row is None:
            s.add(ReconcilerState(key=KEY, value=value))
        else:
            row.value = value
    return len(rows)


def sampled(svc: Services) -> tuple[str | None, list[dict]]:
    with svc.db.session() as s:
        row = s.get(ReconcilerState, KEY)
        if row is None:
            return None, []
        data = json.loads(row.value)
        return data.get("at"), data.get("partitions", [])


def _who(allow: object, cfg) -> str:
    items = [a for a in (allow if isinstance(allow, (list, tuple)) else str(allow or "").split(","))
             if a and a.upper() != "ALL"]
    if not items:
        return "all teams"
    prefix = cfg.slurm_account_prefix
    return ", ".join(a[len(prefix):] if a.startswith(prefix) else a for a in items)


def plan(svc: Services, actor: Actor) -> dict:
    """The resource-plan table: one row per (partition, GPU type)."""
    require_cluster_admin(actor, "only cluster administrators see the resource plan")
    at, parts = sampled(svc)
    cfg = svc.config
    with svc.db.session() as s:
        uses: dict[tuple[str, str], int] = {}
        for part, gpu_type, n in s.execute(
                select(Job.partition, Job.gpu_type, func.sum(Job.gpu_count))
                .where(Job.state.in_((states.RUNNING, states.FINISHING)))
                .group_by(Job.partition, Job.gpu_type)):
            uses[(part or cfg.partition, gpu_type)] = int(n or 0)
        quota_rows = all_quotas(s)
    rows = []
    for p in parts:
        gpus = p.get("gpus") or {}
        kinds = sorted(gpus) or [ig.CPU]
        for gpu_type in kinds:
            shared = gpu_type == "shard"
            quota_text = "; ".join(
                f"{q.team}{'/' + q.user if q.user else ''}: {describe(q.resource, q.value)}"
                for q in quota_rows if q.resource == f"gpu:{gpu_type}") or "none"
            rows.append({
                "group": p["name"], "default": p.get("default", False),
                "gpu_type": gpu_type, "count": gpus.get(gpu_type, p.get("cpus", 0)),
                "sharing": "shared (shards, no isolation)" if shared else
                           ("cores" if gpu_type == ig.CPU else "whole GPUs"),
                "uses": uses.get((p["name"], gpu_type), 0),
                "who": _who(p.get("allow_accounts"), cfg),
                "time_limit": (f"{p['max_time_min']} min" if p.get("max_time_min")
                               else "none"),
                "state": p.get("state", ""), "quota": quota_text})
    return {"sampled_at": at, "rows": rows}


def nodes_with(svc: Services, gpu_type: str) -> int | None:
    """How many nodes one job of ``gpu_type`` may span, from the sampled partitions (None: none
    sampled yet). A GPU type's nodes: its GPUs on the largest partition ÷ the most one node has
    (``gpu_limits``); a CPU-only job: the largest partition's nodes."""
    _at, parts = sampled(svc)
    if not parts:
        return None
    if gpu_type == ig.CPU:
        return max(len(p.get("nodes") or ()) for p in parts)
    per_node = svc.config.gpu_limits.get(gpu_type) or 0
    if per_node <= 0:
        return 0
    return max((int((p.get("gpus") or {}).get(gpu_type, 0)) // per_node for p in parts), default=0)
