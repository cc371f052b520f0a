"""What to tell a user whose GPU request Slurm could not place: the GPUs (and shards) one node
of the cluster offers, from ``sinfo``, against what the job asked for."""
from __future__ import annotations

from typing import Iterable, Mapping

from .records import NodeRecord
from .request import SHARD, GpuRequest

__all__ = ["GresInventory", "gres_inventory", "gres_refusal_message"]

GresInventory = Mapping[str, int]
"""GPU type (or "shard") -> the most units one node has, e.g. {"a4000": 4, "a6000": 2, "shard": 8}."""


def gres_inventory(nodes: Iterable[NodeRecord]) -> dict[str, int]:
    """The most of each GPU type (and shards) one node has, from ``nodes()``."""
    out: dict[str, int] = {}
    for node in nodes:
        for gpu_type, count in node.gpus.items():
            out[gpu_type] = max(out.get(gpu_type, 0), count.total)
    return out


def _units(gpu_type: str, n: int) -> str:
    unit = "shard" if gpu_type == SHARD else "GPU"
    return f"{n} {unit}" + ("" if n == 1 else "s")


def gres_refusal_message(gpus: GpuRequest, offered: GresInventory | None,
                         slurm_message: str) -> str:
    """What to tell a user whose GPU request Slurm could not place.

    ``offered``: GPU type -> most units per node (None or empty: unknown, Slurm's text only).
    """
    asked = f"--gres={gpus.gres}"
    key = SHARD if gpus.is_shard else gpus.type  # "a6000-shard" asks for Slurm's "shard"
    if offered:
        menu = ", ".join(f"{t} (at most {_units(t, n)} per node)" for t, n in sorted(offered.items()))
        if key not in offered:
            head = (f"no node has {key} GPUs" if key != SHARD else "no node has shards")
            why = f"{head} (you asked for {gpus}, {asked})"
        elif gpus.count > offered[key]:
            why = (f"no node has {_units(key, gpus.count)} of type {key}: the most one "
                   f"node has is {offered[key]} (you asked for {gpus}, {asked})")
        else:  # the GPUs exist: CPUs, memory or the partition cannot be met with them
            why = (f"no node can run {asked} together with the CPUs and memory asked for")
        return f"Slurm refused the job: {why}. This cluster offers {menu}. (Slurm: {slurm_message})"
    return (f"Slurm refused the job's GPU request {asked} ({gpus}): {slurm_message}; "
            "ask for a GPU type and count one node of the cluster has")
