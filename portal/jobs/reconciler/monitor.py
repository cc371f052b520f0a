"""Monitoring in the tick (docs/MONITORING.md): the cluster sample, running jobs' usage, alarms
and users' notifications, from what this tick already asked Slurm (``queue``: squeue, ``nodes``:
sinfo; None when that call failed). A failure here never stops the tick: it goes in the report."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ...monitoring import alarms, job_usage, notify, samples
from ...services import Services, log
from .report import TickReport


def observe(svc: Services, now: datetime, queue: dict[int, Any] | None, nodes: list | None,
            report: TickReport) -> None:
    for name, step in (("samples", lambda: samples.record(svc, now, queue, nodes, report)),
                       ("job usage", lambda: job_usage.sample(svc, now, queue, report)),
                       ("alarms", lambda: alarms.evaluate(svc, now, queue, nodes, report)),
                       ("notifications", lambda: notify.after_tick(svc, now, report))):
        try:
            step()
        except Exception as exc:  # noqa: BLE001 — monitoring must never stop billing
            log.exception("monitoring step %s failed", name)
            report.errors.append(f"monitoring {name}: {exc}")
