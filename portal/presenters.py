"""The JSON shapes of Slipway's objects — what ``/api/`` answers and what ``slipway`` prints from
(and what the service layer's queries return, e.g. ``billing.queries``).

Plain functions of ORM rows and config values (no Flask, no request): the API and the CLI's
local mode both call them, so ``slipway --url …`` (through the API) and ``slipway`` on the server
(the database) print the same thing from the same dictionaries.
"""
from __future__ import annotations

import json

from .db import Job, LedgerEntry, Project
from .jobs.job_shape import ShardsOf, shape_of

TERMINAL = ("succeeded", "failed", "cancelled")


def iso(t):
    return t.isoformat() if t else None


def job_dict(j: Job, project: str, team: str, *, pusher: str | None, log: str | None,
             shards_of: ShardsOf | None = None) -> dict:
    """A job; ``shape`` says whether it is a sweep or runs on several nodes and its compute in
    words (``shards_of``: ``Config.shards_of``, for "2/8 of an a6000" rather than "2 shards of
    an a6000"). A job's own page adds its tasks and nodes (``jobs.part_queries``)."""
    return {"id": j.id, "team": team, "project": project, "branch": j.branch, "commit": j.commit_sha,
            "pusher": pusher, "state": j.state, "previous_state": j.previous_state, "reason": j.reason,
            "gpu_type": j.gpu_type, "gpu_count": j.gpu_count, "image": j.image,
            "time_limit_min": j.time_limit_min, "slurm_job_id": j.slurm_job_id, "node": j.node,
            "port": j.port, "exit_code": j.exit_code, "cost": str(j.cost),
            "created_at": iso(j.created_at), "submitted_at": iso(j.submitted_at),
            "started_at": iso(j.started_at), "ended_at": iso(j.ended_at),
            "cancel_requested": j.cancel_requested, "cancel_reason": j.cancel_reason,
            "results_ref": j.results_ref, "results_sha": j.results_sha,
            "branch_updated": j.branch_updated, "log": log, "url": f"/jobs/{j.id}",
            "output_state": j.output_state, "output_bytes": j.output_bytes,
            "continue_from": j.continue_from,
            # policy (docs/POLICY.md): compute type, what was asked when adjusted down, QOS,
            # partition, Slurm's priority and expected start while pending, preemptions
            "compute_type": j.compute_type, "asked": j.asked, "qos": j.qos or "normal",
            "emergency": (j.qos or "") == "emergency", "partition": j.partition,
            "priority": j.priority, "expected_start_at": iso(j.expected_start_at),
            "preempted_count": j.preempted_count or 0, "attempt": j.attempt or 0,
            "proxy_url": f"/jobs/{j.id}/proxy/" if j.state == "running" and j.port else None,
            # shapes (docs/SHARING.md): single, sweep or multi-node, and the compute in words
            "shape": shape_of(j, shards_of)}


def _inputs(p) -> dict:
    """A project's default input bindings (rows of the paged list carry no ``inputs``)."""
    raw = getattr(p, "inputs", None)
    return json.loads(raw) if raw else {}


def project_dict(p: Project, team_name: str, remote_url: str, stats: dict | None = None) -> dict:
    d = {"team": team_name, "name": p.name, "gpu_type": p.gpu_type, "gpu_count": p.gpu_count,
         "image": p.image, "time_limit_min": p.time_limit_min, "remote_url": remote_url,
         "created_at": iso(p.created_at), "inputs": _inputs(p),
         "compute_type": getattr(p, "compute_type", None)}
    if stats is not None:
        d.update(jobs=stats.get("jobs", 0), active_jobs=stats.get("active", 0))
    return d


def entry_dict(e: LedgerEntry, description: str) -> dict:
    return {"id": e.id, "created_at": iso(e.created_at), "kind": e.kind, "amount": str(e.amount),
            "job": e.job_id, "attempt": e.attempt, "from_minute": e.from_minute,
            "to_minute": e.to_minute, "gpu_type": e.gpu_type, "gpu_count": e.gpu_count,
            "rate": str(e.rate) if e.rate is not None else None, "resource": e.resource,
            "bytes": e.bytes, "created_by": e.created_by, "note": e.note, "key": e.idempotency_key,
            "description": description}


def token_dict(t) -> dict:
    """An access token as listed: never its secret (only the prefix is stored in clear)."""
    return {"id": t.id, "name": t.name, "prefix": t.prefix, "created_at": iso(t.created_at),
            "last_used_at": iso(t.last_used_at), "revoked_at": iso(t.revoked_at)}
