"""A job's shape in words (docs/SHARING.md): single, a sweep of tasks, or one job over nodes,
and what compute it holds — ``2/8 of an a6000``, ``2 nodes × 4 a4000``, ``6 tasks (at most 2 at
once), each 1 a4000``.

Pure functions of a job row's fields and ``Config.shards_of`` (passed in, may be None): no
database, no Flask, nothing of portal but the config's constant, so the presenters, the service
queries and the front doors can all use it without an import cycle."""
from __future__ import annotations

from typing import Any, Callable

from ..config import SHARD_SUFFIX   # a derived GPU type "a6000-shard": a share of one GPU

SINGLE, SWEEP, MULTI_NODE = "single", "sweep", "multi-node"
_CPU_TYPES = ("cpu", "none")

ShardsOf = Callable[[str], "tuple[str, int] | None"]


def _article(name: str) -> str:
    """``an a6000``, ``an h100`` (said "aitch"), ``a v100``, ``a t4``."""
    first = name[:1].lower()
    if first in "aeiou":
        return "an"
    spelled = len(name) > 1 and name[1].isdigit()   # an initial read out as a letter
    return "an" if spelled and first in "fhlmnrsx" else "a"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def unit_text(gpu_type: str, gpu_count: int, shards_of: ShardsOf | None = None) -> str:
    """What one task (or one node, or the job) holds: ``4 a4000``, ``2/8 of an a6000``,
    ``4 CPU cores``."""
    n = int(gpu_count or 0)
    if gpu_type in _CPU_TYPES:
        return _plural(n, "CPU core")
    shares = shards_of(gpu_type) if shards_of is not None else None
    if shares is not None:
        base, per_gpu = shares
        return f"{n}/{per_gpu} of {_article(base)} {base}"
    if gpu_type.endswith(SHARD_SUFFIX):   # no config at hand: the share without its size
        base = gpu_type[: -len(SHARD_SUFFIX)]
        return f"{_plural(n, 'shard')} of {_article(base)} {base}"
    return f"{n} {gpu_type}"


def kind_of(task_count: int | None, nodes: int | None) -> str:
    if task_count:
        return SWEEP
    return MULTI_NODE if (nodes or 1) > 1 else SINGLE


def compute_text(gpu_type: str, gpu_count: int, *, task_count: int | None = None,
                 max_parallel: int | None = None, nodes: int | None = 1,
                 shards_of: ShardsOf | None = None) -> str:
    """The job's compute in words: ``2/8 of an a6000``; ``2 nodes × 4 a4000``; ``6 tasks (at
    most 2 at once), each 1 a4000``."""
    unit = unit_text(gpu_type, gpu_count, shards_of)
    kind = kind_of(task_count, nodes)
    if kind == MULTI_NODE:
        return f"{nodes} nodes × {unit}"
    if kind == SWEEP:
        n = int(task_count or 0)
        throttle = f" (at most {max_parallel} at once)" if max_parallel and max_parallel < n else ""
        return f"{_plural(n, 'task')}{throttle}, each {unit}"
    return unit


def shape_of(job: Any, shards_of: ShardsOf | None = None) -> dict:
    """``{"kind", "tasks", "max_parallel", "nodes", "compute"}`` of a job row (or anything with
    its fields); ``tasks`` is None for a job that is not a sweep."""
    task_count = getattr(job, "task_count", None) or None
    nodes = getattr(job, "nodes", None) or 1
    max_parallel = getattr(job, "max_parallel", None) if task_count else None
    return {"kind": kind_of(task_count, nodes), "tasks": task_count, "max_parallel": max_parallel,
            "nodes": nodes,
            "compute": compute_text(job.gpu_type, job.gpu_count, task_count=task_count,
                                    max_parallel=max_parallel, nodes=nodes, shards_of=shards_of)}
