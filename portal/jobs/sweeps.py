"""Sweeps and multi-node shapes of a job (docs/SHARING.md): reading ``-o sweep=``, the task
list, Slurm's ``--array`` spec, and the checks every front door shares.

``parse_sweep("lr=0.1,0.01;bs=32,64", 100)`` → one dict per task, every combination, the last
name varying fastest: ``[{"LR": "0.1", "BS": "32"}, {"LR": "0.1", "BS": "64"}, ...]``. Names
become ``SLIPWAY_PARAM_<NAME>`` in the task's environment, so they are upper-cased and must be
environment names; values are plain text (no NUL, no newline, at most 256 characters)."""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from ..teams.access import OpError

PARAM_PREFIX = "SLIPWAY_PARAM_"
MAX_VALUE_CHARS = 256
MAX_PARAMS = 16
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SWEEP_HELP = 'write sweep="lr=0.1,0.01;bs=32,64" (NAME=v1,v2,... separated by ;)'


def parse_sweep(text: str, max_tasks: int) -> list[dict[str, str]]:
    """The tasks of a sweep, or ``OpError`` with what is wrong (nothing is guessed)."""
    text = (text or "").strip().strip("'\"")
    if not text:
        raise OpError(f"sweep is empty; {SWEEP_HELP}")
    axes: list[tuple[str, list[str]]] = []
    for i, part in enumerate(p.strip() for p in text.split(";")):
        if not part:
            if i == len(text.split(";")) - 1:
                continue   # a trailing ';'
            raise OpError(f"sweep has an empty part between ';'; {SWEEP_HELP}")
        name, sep, values = part.partition("=")
        name = name.strip()
        if not sep:
            raise OpError(f"sweep part {part[:40]!r} has no '='; {SWEEP_HELP}")
        if not _NAME.match(name):
            raise OpError(f"sweep name {name[:40]!r} is not allowed: use letters, digits and _ "
                          "(not starting with a digit, at most 64)")
        key = name.upper()
        if any(key == k for k, _ in axes):
            raise OpError(f"sweep names {name!r} twice (names are case-insensitive)")
        vals = [v.strip() for v in values.split(",")]
        if not values.strip() or any(not v for v in vals):
            raise OpError(f"sweep {name}: empty value in {values.strip()[:60]!r}; give one or more "
                          "values separated by commas, e.g. lr=0.1,0.01")
        for v in vals:
            if "\x00" in v or "\n" in v or "\r" in v:
                raise OpError(f"sweep {name}: a value holds a NUL or a newline")
            if len(v) > MAX_VALUE_CHARS:
                raise OpError(f"sweep {name}: a value is {len(v)} characters; at most "
                              f"{MAX_VALUE_CHARS}")
        if len(set(vals)) != len(vals):
            raise OpError(f"sweep {name}: a value is listed twice")
        axes.append((key, vals))
    if not axes:
        raise OpError(f"sweep is empty; {SWEEP_HELP}")
    if len(axes) > MAX_PARAMS:
        raise OpError(f"sweep has {len(axes)} names; at most {MAX_PARAMS}")
    count = 1
    for _, vals in axes:
        count *= len(vals)
    if count > max_tasks:
        shape = " × ".join(f"{len(v)} {k.lower()}" for k, v in axes)
        raise OpError(f"sweep has {count} tasks ({shape}); at most {max_tasks} per job")
    names = [k for k, _ in axes]
    return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in axes))]


def array_spec(count: int, max_parallel: int | None) -> str:
    """``--array`` for ``count`` tasks: ``0-5`` or ``0-5%2``."""
    spec = f"0-{count - 1}" if count > 1 else "0"
    return f"{spec}%{max_parallel}" if max_parallel else spec


def task_env(params: dict[str, str], index: int) -> dict[str, str]:
    """The environment a task's container gets for its combination."""
    return {"SLIPWAY_TASK_ID": str(index), **{PARAM_PREFIX + k: v for k, v in params.items()}}


def describe(params: dict[str, str]) -> str:
    """``lr=0.1 bs=32`` (names lower-case, as the user wrote them in the option)."""
    return " ".join(f"{k.lower()}={v}" for k, v in params.items())


def params_json(tasks: list[dict[str, str]]) -> str:
    return json.dumps(tasks, separators=(",", ":"))


def tasks_of(sweep_json: str | None, task_count: int | None) -> list[dict[str, str]]:
    """A job row's tasks: its stored sweep values, or ``task_count`` empty ones (an array made
    by ``slipway submit --array``: SLURM_ARRAY_TASK_ID only)."""
    if sweep_json:
        data = json.loads(sweep_json)
        if isinstance(data, list):
            return [dict(d) for d in data]
    return [{} for _ in range(task_count or 0)]


@dataclass(frozen=True)
class Shape:
    """What a push asked for beyond the compute: a sweep's tasks, its throttle, nodes."""

    tasks: tuple[dict, ...] = ()
    max_parallel: int | None = None
    nodes: int = 1

    @property
    def sweep(self) -> bool:
        return bool(self.tasks)

    def row_fields(self) -> dict[str, Any]:
        if not self.tasks:
            return {"nodes": self.nodes}
        has_values = any(self.tasks)
        return {"nodes": self.nodes, "task_count": len(self.tasks),
                "max_parallel": self.max_parallel,
                "sweep": params_json(list(self.tasks)) if has_values else None}


def shape_problems(shape: Shape, *, gpu_type: str, shared: bool, nodes_with_type: int | None,
                   max_nodes: int, kind: str = "task") -> list[str]:
    """What cannot be submitted: nodes beyond the cluster, nodes with a sweep or with shards,
    a throttle without a sweep, shapes on a workspace."""
    problems = []
    if kind == "workspace" and (shape.sweep or shape.nodes > 1):
        problems.append("slipway: a workspace runs on one node and is not a sweep")
    if shape.max_parallel is not None and not shape.sweep:
        problems.append("slipway: max-parallel applies to a sweep; add -o sweep=...")
    if shape.nodes > 1:
        if shape.sweep:
            problems.append("slipway: a sweep's tasks run on one node each; nodes= and sweep= "
                            "cannot be combined")
        if shared:
            problems.append(f"slipway: shards ({gpu_type}) are a share of one GPU on one node; "
                            "nodes= needs whole GPUs")
        most = nodes_with_type if nodes_with_type is not None else max_nodes
        what = f"nodes with {gpu_type} GPUs" if nodes_with_type is not None and gpu_type != "cpu" \
            else "nodes" if nodes_with_type is not None else "nodes per job (config max_nodes)"
        if shape.nodes > most:
            problems.append(f"slipway: asked for {shape.nodes} nodes; the cluster has {most} "
                            f"{what}")
    return problems
