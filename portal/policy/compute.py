"""Compute types: named job shapes administrators offer (``a4000x2``: 2 a4000 GPUs, 8 cores,
32G, partition train). Projects pick a default; a push picks one (``-o compute=NAME``)."""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session


from .. import integrations as ig
from ..db import ComputeType, Project
from ..services import Services
from ..teams.access import Actor, NotFound, OpError
from . import events
from .common import require_cluster_admin, whole_number

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_PARTITION = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,63}$")


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise OpError(f"compute type name {str(name)[:70]!r} is not allowed: use lowercase letters, "
                      f"digits, . _ - (at most 64, starting with a letter or digit)")
    return name


def get(s: Session, name: str) -> ComputeType | None:
    return s.scalar(select(ComputeType).where(ComputeType.name == name))


def names(s: Session) -> list[str]:
    return list(s.scalars(select(ComputeType.name).order_by(ComputeType.name)))


def unknown_message(s: Session, name: str) -> str:
    known = names(s)
    return (f"unknown compute type {name[:64]!r}; "
            + (f"known types: {', '.join(known)}" if known else "no compute types are defined yet"))


def hourly_rate(svc: Services, ct: Any) -> Decimal:
    """What one hour of this compute type costs: its GPUs' (or cores') rate, which bill it."""
    if ct.gpu_type == ig.CPU:
        return svc.config.cpu_rate * ct.gpu_count
    return svc.config.gpu_rates.get(ct.gpu_type, Decimal(0)) * ct.gpu_count


def to_dict(svc: Services, ct: ComputeType) -> dict:
    cpu_only = ct.gpu_type == ig.CPU
    return {"name": ct.name, "gpus": "none" if cpu_only else f"{ct.gpu_type}:{ct.gpu_count}",
            "gpu_type": None if cpu_only else ct.gpu_type,
            "gpu_count": 0 if cpu_only else ct.gpu_count,
            "cpus": ct.gpu_count if cpu_only else ct.cpus, "mem_mb": ct.mem_mb,
            "partition": ct.partition or svc.config.partition or None,
            "hourly_rate": str(hourly_rate(svc, ct)),
            "billed_per": "core-hour" if cpu_only else "GPU-hour",
            "description": ct.description}


def list_types(svc: Services) -> list[dict]:
    with svc.db.session() as s:
        return [to_dict(svc, ct) for ct in s.scalars(select(ComputeType).order_by(ComputeType.name))]


def _fields(svc: Services, gpus: str, cpus: Any, mem: Any, partition: Any) -> dict:
    cfg = svc.config
    try:
        gpu_type, count = ig.parse_gpus(str(gpus), cfg.gpu_limits)
    except ig.InvalidRequest as exc:
        raise OpError(f"gpus: {exc}") from None
    cores = whole_number(cpus if cpus is not None else 1, "cpus", 1, cfg.cpu_limit)
    if gpu_type == ig.CPU:
        count = cores
    elif gpu_type not in cfg.gpu_limits:
        raise OpError(f"gpus: unknown GPU type {gpu_type!r}; known types: "
                      f"{', '.join(sorted(cfg.gpu_limits))}")
    elif count < 1:
        raise OpError("gpus: a compute type has at least 1 GPU (or gpus=none)")
    elif count > cfg.gpu_limits[gpu_type]:
        raise OpError(f"gpus: nodes have at most {cfg.gpu_limits[gpu_type]} {gpu_type} GPUs; "
                      f"a compute type cannot ask for {count}")
    mem_mb = None
    if mem not in (None, ""):
        try:
            mem_mb = ig.parse_mem(str(mem))
        except ig.InvalidRequest as exc:
            raise OpError(f"mem: {exc}") from None
        if mem_mb > cfg.mem_limit_mb:
            raise OpError(f"mem: at most {cfg.mem_limit_mb}M per job; {mem_mb}M is too much")
    part = None
    if partition not in (None, ""):
        if not isinstance(partition, str) or not _PARTITION.match(partition):
            raise OpError(f"partition {str(partition)[:70]!r} is not a valid Slurm partition name")
        part = partition
    return {"gpu_type": gpu_type, "gpu_count": count, "cpus": cores, "mem_mb": mem_mb,
            "partition": part}


def define(svc: Services, actor: Actor, name: str, *, gpus: str, cpus: Any = None, mem: Any = None,
           partition: str | None = None, description: str = "") -> dict:
    """Create or replace the compute type ``name`` (cluster administrators)."""
    require_cluster_admin(actor)
    check_name(name)
    if not isinstance(description, str) or len(description) > 500:
        raise OpError("description must be text of at most 500 characters")
    fields = _fields(svc, gpus, cpus, mem, partition)
    with svc.db.transaction() as s:
        ct = get(s, name)
        created = ct is None
        if created:
            ct = ComputeType(name=name)
            s.add(ct)
        for k, v in fields.items():
            setattr(ct, k, v)
        ct.description, ct.updated_by = description, actor.name
        try:
            s.flush()
        except IntegrityError:
            raise OpError(f"compute type {name} was defined just now; try again", 409) from None
        out = to_dict(svc, ct)
        events.record(s, actor.name, "compute-type", name,
                      f"{'defined' if created else 'changed'}: {out['gpus']}, {out['cpus']} cores, "
                      f"mem {out['mem_mb'] or 'default'}, partition {out['partition']}, "
                      f"${out['hourly_rate']}/h", at=svc.now())
    return out


def remove(svc: Services, actor: Actor, name: str) -> list[str]:
    """Delete a compute type; projects that used it as their default fall back to their own
    GPU settings (returned: those projects). Jobs keep the name they ran with."""
    require_cluster_admin(actor)
    with svc.db.transaction() as s:
        ct = get(s, check_name(name))
        if ct is None:
            raise NotFound(unknown_message(s, name))
        users = [f"{p.team.name}/{p.name}" for p in
                 s.scalars(select(Project).where(Project.compute_type == name))]
        s.execute(update(Project).where(Project.compute_type == name).values(compute_type=None))
        s.delete(ct)
        events.record(s, actor.name, "compute-type", name, "removed", at=svc.now())
    return users
