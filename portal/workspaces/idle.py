"""The idle policy at work (a reconciler step): remind, then stop, workspaces nobody uses.

Idle since = the latest of the workspace's start, the gateway's last proxied request
(``jobs.last_activity_at``), and every kernel's and terminal's ``last_activity`` as its Jupyter
server reports them (``GET api/kernels``, ``GET api/terminals`` on the node, with the
credential); a kernel that is ``busy`` (a long computation nobody watches) means not idle. A
server that does not answer is not judged (it may be starting): only the gateway's activity and
the start count then. Idle for ``idle - remind`` seconds: one reminder (``jobs.reminded_at``; the
portal's banner shows it, and a mail goes to the user when mail is configured). Idle for ``idle``
seconds: stopped when the policy says so (cancelled like a user's stop: /work committed back,
/output kept), with the reason on its page. Activity after a reminder clears it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import requests
from sqlalchemy import select

from ..db import Job, Project, User
from ..jobs import service as jobs_service, states
from ..monitoring import notify
from ..services import Services, log
from . import credential, policy

KIND = "workspace"
TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Activity:
    last: datetime | None          # the newest activity the Jupyter server reports
    busy: bool                     # a kernel is computing
    answered: bool                 # the server answered at all


def _parse_time(text) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def jupyter_activity(host: str, port: int, job_id: int, token: str, get=requests.get) -> Activity:
    """Ask the workspace's Jupyter server what its kernels and terminals last did."""
    base = f"http://{host}:{port}/workspaces/{job_id}/lab/api"
    headers = {"Authorization": f"token {token}"}
    times, busy = [], False
    try:
        kernels = get(f"{base}/kernels", headers=headers, timeout=TIMEOUT_S)
        kernels.raise_for_status()
        for k in kernels.json():
            busy = busy or k.get("execution_state") == "busy"
            times.append(_parse_time(k.get("last_activity")))
        terms = get(f"{base}/terminals", headers=headers, timeout=TIMEOUT_S)
        if terms.ok:
            times += [_parse_time(t.get("last_activity")) for t in terms.json()]
    except (requests.RequestException, ValueError, TypeError, AttributeError):
        return Activity(None, False, False)
    known = [t for t in times if t is not None]
    return Activity(max(known) if known else None, busy, True)


def idle_since(job: Job, act: Activity) -> datetime | None:
    """When the workspace became idle (None: it is busy now)."""
    if act.busy:
        return None
    candidates = [t for t in (job.started_at, job.last_activity_at, act.last) if t is not None]
    return max(candidates) if candidates else None


def _mail(svc: Services, job_id: int, event: str, subject: str, body: str, at=None) -> None:
    """To the workspace's user, once, if they want ``workspace_idle`` mail (monitoring.notify)."""
    try:
        notify.workspace_mail(svc, job_id, event, subject, body, at=at)
    except Exception as exc:  # noqa: BLE001 — a mail problem never stops the policy
        log.warning("workspace %s: %s mail failed: %s", job_id, event, exc)


def _minutes(seconds: int) -> str:
    """120 → "2 minutes", 90 → "90 seconds"."""
    return f"{seconds // 60} minutes" if seconds >= 120 else f"{seconds} seconds"


def check_idle(svc: Services, report=None, activity=jupyter_activity) -> list[tuple[int, str]]:
    """One pass over the running workspaces; returns [(job id, "reminded"|"stopped"|"active")]."""
    now = svc.now()
    with svc.db.session() as s:
        rows = s.execute(select(Job, Project.team_id, User.email).join(
            Project, Job.project_id == Project.id).outerjoin(User, User.id == Job.pusher_id).where(
            Job.kind == KIND, Job.state == states.RUNNING,
            Job.cancel_requested_at.is_(None))).all()
        work = [(job.id, job.node, job.port, team_id, email, policy.effective(s, team_id))
                for job, team_id, email in rows]
    out = []
    for job_id, node, port, _team_id, email, pol in work:
        act = activity(svc.node_address(node), port, job_id,
                       credential.token(svc.config.secret_key, job_id)) if node and port \
            else Activity(None, False, False)
        with svc.db.transaction() as s:
            job = s.get(Job, job_id)
            if job is None or job.state != states.RUNNING or job.cancel_requested_at is not None:
                continue
            since = idle_since(job, act)
            idle_s = 0 if since is None else max(0, int((now - since).total_seconds()))
            if idle_s < pol.remind_at_seconds:
                job.reminded_at = None
                out.append((job_id, "active"))
                continue
            stop = idle_s >= pol.idle_seconds and pol.auto_stop
            remind = not stop and job.reminded_at is None
            if remind:
                job.reminded_at = now
        if stop:
            why = f"stopped after {_minutes(pol.idle_seconds)} idle (the workspace policy)"
            try:
                jobs_service.request_cancel(svc, job_id, by="slipway", reason=why)
            except Exception as exc:  # noqa: BLE001 — retried at the next tick
                if report is not None:
                    report.errors.append(f"stopping idle workspace {job_id}: {exc}")
                continue
            _mail(svc, job_id, "stopped", f"Slipway: workspace {job_id} was stopped",
                  f"Your workspace {job_id} was {why}. Its files were committed back to its "
                  f"branch and its /output is kept; restart it from its page.")
            out.append((job_id, "stopped"))
        elif remind:
            left = pol.idle_seconds - idle_s
            what = "stopped" if pol.auto_stop else "reported idle"
            _mail(svc, job_id, "reminded", f"Slipway: workspace {job_id} is idle",
                  f"Your workspace {job_id} has been idle for {_minutes(idle_s)}"
                  f" and bills while it is open. It will be {what} in about {_minutes(max(left, 0))}"
                  f" unless you use it; stop it from its page when you are done.", at=now)
            out.append((job_id, "reminded"))
        else:
            out.append((job_id, "reminded" if since is not None else "active"))
    return out


def reminders_for(svc: Services, user_id: int) -> list[dict]:
    """The user's workspaces that are idle and were reminded (every page's banner)."""
    with svc.db.session() as s:
        rows = s.execute(select(Job.id, Job.reminded_at).where(
            Job.kind == KIND, Job.pusher_id == user_id, Job.state == states.RUNNING,
            Job.reminded_at.is_not(None))).all()
    return [{"job": jid, "reminded_at": at.isoformat()} for jid, at in rows]
