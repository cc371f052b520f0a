"""per-job usage (docs/MONITORING.md): being built."""
from __future__ import annotations


def sample(svc, now, queue, report) -> None:
    """Running jobs' CPU and memory (docs/MONITORING.md)."""
    return None
