"""Users' notifications (docs/MONITORING.md): mail when a job ends (``job_ended``), fails
(``job_failed``) or is cancelled (``job_cancelled``), the workspace idle reminder
(``workspace_idle``) and a team's low balance (``low_balance``). Each user turns each kind on or
off (``notify_settings``; all on by default); a user without an address, or a Slipway without
mail (``smtp_host`` ""), gets nothing and nothing fails.

``after_tick`` runs once per reconciler tick (``jobs/reconciler/monitor.py``): it decides the
mails of the jobs that ended (``notify_jobs``) and of the teams that went under the threshold
(``notify_balance``), each exactly once (the outbox, ``notify_outbox``), then sends what is due.
``workspace_mail`` is the idle policy's way in (``workspaces/idle.py``)."""
from __future__ import annotations

from datetime import datetime

from ..db import Job
from ..services import Services, log
from . import notify_balance, notify_jobs, notify_outbox
from .notify_outbox import Notice

__all__ = ["after_tick", "workspace_mail"]


def after_tick(svc: Services, now: datetime, report) -> None:
    """Users' notifications for this tick; a failing step goes in ``report.errors``."""
    errors = getattr(report, "errors", None)
    for name, step in (("job ends", lambda s: notify_jobs.collect(s, svc, now, report)),
                       ("low balance", lambda s: notify_balance.collect(s, svc, now))):
        try:
            with svc.db.transaction() as s:
                step(s)
        except Exception as exc:  # noqa: BLE001 — one step's trouble never stops the others
            log.exception("notifications: %s failed", name)
            if errors is not None:
                errors.append(f"notifications ({name}): {exc}")
    sent = notify_outbox.flush(svc)
    if sent.deferred and errors is not None:
        errors.append("notifications: the mail server did not take a message; retried later")
    notify_outbox.prune(svc, now)


def workspace_mail(svc: Services, job_id: int, event: str, subject: str, body: str,
                   at: datetime | None = None) -> bool:
    """The idle policy's mail about workspace ``job_id`` to its user: ``event`` "reminded" (one
    per reminder: ``at`` is when) or "stopped" (once; the job's own "cancelled" mail is then
    not sent). Sent now when mail is on and the user wants ``workspace_idle``; True if sent."""
    key = f"{job_id}:stopped" if event == "stopped" else \
        f"{job_id}:{event}:{(at or svc.now()):%Y%m%dT%H%M%S}"
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or job.pusher_id is None:
            return False
        ids = notify_outbox.enqueue(s, svc, [Notice(
            "workspace_idle", key, job.pusher_id, subject,
            body.rstrip("\n") + "\n" + notify_outbox.footer(svc))])
    return bool(ids) and notify_outbox.flush(svc, ids=ids).sent > 0
