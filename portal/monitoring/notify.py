"""notifications (docs/MONITORING.md): being built."""
from __future__ import annotations


def after_tick(svc, now, report) -> None:
    """Users' notifications for this tick (docs/MONITORING.md)."""
    return None
