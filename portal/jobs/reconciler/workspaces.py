"""The reconciler's workspace step: the idle policy (``portal.workspaces.idle``)."""
from __future__ import annotations

from ...services import Services
from ...workspaces import idle
from .report import TickReport


def idle_policy(svc: Services, report: TickReport) -> None:
    try:
        idle.check_idle(svc, report)
    except Exception as exc:  # noqa: BLE001 — the tick goes on
        report.errors.append(f"workspace idle policy: {exc}")
