"""the cluster sampler (docs/MONITORING.md): being built."""
from __future__ import annotations


def record(svc, now, queue, nodes, report) -> None:
    """One tick's cluster sample (docs/MONITORING.md)."""
    return None
