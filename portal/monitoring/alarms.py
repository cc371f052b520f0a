"""alarms (docs/MONITORING.md): being built."""
from __future__ import annotations


def evaluate(svc, now, queue, nodes, report) -> None:
    """Open and resolve alarms (docs/MONITORING.md)."""
    return None
