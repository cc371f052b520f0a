"""The reconciler's data steps: keep (seal) the /output of jobs that ended, and keep the data
gates on disk in step with teams, memberships and shares, and give up uploads left open
for a week (``portal.data``)."""
from __future__ import annotations

from ...data import gates, outputs, uploads
from ...services import Services
from .report import TickReport


def keep_outputs(svc: Services, report: TickReport) -> None:
    try:
        outputs.keep_ended(svc, report)
    except Exception as exc:  # noqa: BLE001 — the tick goes on
        report.errors.append(f"keeping job outputs: {exc}")


def sync_gates(svc: Services, report: TickReport) -> None:
    try:
        gates.sync_all(svc)
    except Exception as exc:  # noqa: BLE001
        report.errors.append(f"data gates: {exc}")
    try:
        uploads.expire_stale(svc)
    except Exception as exc:  # noqa: BLE001
        report.errors.append(f"stale uploads: {exc}")
