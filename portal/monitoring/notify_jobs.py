"""Which jobs ended since the last tick, and the mail that tells their pushers.

Ends are found wherever they happened (the reconciler's moves in ``report.changes``, a queued
job cancelled before submission by ``jobs.service.request_cancel``, a failed submission, …)
without scanning the jobs table: the tick keeps a small watch list (``reconciler_state``
``notify.jobs``: the jobs not ended at the last look, and the highest job id seen). Each tick
looks only at those and at newer ids; a watched job found ended is decided once (the outbox's
unique key), and leaves the list."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Job, Project, ReconcilerState, Team
from ..db.notify_models import Notification
from ..jobs import states
from ..services import Services
from .notify_outbox import Notice, enqueue, footer

STATE_KEY = "notify.jobs"
CHUNK = 900                       # ids per IN list
MARGIN = 20                       # ids just under the highest seen are looked at again
RESULTS_WAIT_S = 60               # a job that ran: wait this long for its runner's results report
FIRST_LOOKBACK = timedelta(hours=1)   # the very first look: ends of the last hour are told
KIND_OF = {states.SUCCEEDED: "job_ended", states.FAILED: "job_failed",
           states.CANCELLED: "job_cancelled"}
JOB_KINDS = tuple(KIND_OF.values())
VERB = {states.SUCCEEDED: "succeeded", states.FAILED: "failed", states.CANCELLED: "was cancelled"}


def _load(s: Session) -> tuple[int, set[int]] | None:
    row = s.get(ReconcilerState, STATE_KEY)
    if row is None:
        return None
    try:
        data = json.loads(row.value)
        return int(data["max_id"]), {int(j) for j in data["watch"]}
    except (ValueError, TypeError, KeyError):
        return None


def _save(s: Session, now: datetime, max_id: int, watch: set[int]) -> None:
    value = json.dumps({"max_id": max_id, "watch": sorted(watch)})
    row = s.get(ReconcilerState, STATE_KEY)
    if row is None:
        s.add(ReconcilerState(key=STATE_KEY, value=value, updated_at=now))
    else:
        row.value, row.updated_at = value, now


def _first_look(s: Session, now: datetime) -> tuple[int, set[int]]:
    """No watch list yet: the jobs not ended, and those that ended within FIRST_LOOKBACK (not
    the whole history of a Slipway that just got notifications)."""
    max_id = s.scalar(select(func.max(Job.id))) or 0
    watch = set(s.scalars(select(Job.id).where(Job.state.in_(states.ACTIVE))))
    watch |= set(s.scalars(select(Job.id).where(
        Job.id > max_id - 1000, Job.state.in_(states.TERMINAL),
        Job.state_changed_at >= now - FIRST_LOOKBACK)))
    return max_id, watch


def _awaits_results(job: Job, now: datetime) -> bool:
    """It ran, and its runner has not said where its results went yet: wait a little."""
    if job.started_at is None or job.results_sha or job.results_ref:
        return False
    since = job.state_changed_at or job.ended_at or now
    return (now - since).total_seconds() < RESULTS_WAIT_S


def _minutes(a: datetime, b: datetime) -> str:
    s = max(0, int((b - a).total_seconds()))
    return f"{s // 3600} h {s % 3600 // 60} min" if s >= 3600 else \
        f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def _results(job: Job) -> str:
    if job.results_sha:
        where = job.results_ref or job.branch
        text = f"{where} at {job.results_sha[:12]}"
        if job.branch_updated:
            text += f"; branch {job.branch} updated (git pull)"
        elif job.branch_updated is False:
            text += f"; branch {job.branch} was not updated"
    elif job.results_ref:
        text = job.results_ref
    else:
        text = "none pushed" if job.started_at else "none (it never started)"
    if job.results_message:
        text += f"\n          {job.results_message}"
    return text


def compose(svc: Services, job: Job, project: str, team: str) -> Notice:
    """The mail for ``job``'s end: state, reason, cost, results, the job page."""
    base = svc.config.base_url
    what = "workspace" if job.kind == "workspace" else "job"
    verb = VERB[job.state]
    title = f"Slipway: {what} {job.id} {verb} ({team}/{project} {job.branch})"
    cost = job.cost
    cost_text = ig.format_usd(cost)
    if cost.quantize(Decimal("0.001")) != cost:   # the shown tenth of a cent is rounded
        cost_text += f" (exactly {cost} USD)"
    lines = [f"Your {what} {job.id} in {team}/{project} (branch {job.branch}, commit "
             f"{job.commit_sha[:12]}) {verb}.", "",
             f"State:    {job.state}"]
    reason = job.cancel_reason if job.state == states.CANCELLED and not job.reason else job.reason
    if reason:
        lines.append(f"Reason:   {reason}")
    if job.exit_code is not None:
        lines.append(f"Exit code: {job.exit_code}")
    if job.started_at:
        end = job.ended_at or job.state_changed_at or svc.now()
        ran = f"Ran:      {job.started_at:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC " \
              f"({_minutes(job.started_at, end)})"
        lines.append(ran + (f" on {job.node}" if job.node else ""))
    lines += [f"Cost:     {cost_text}", f"Results:  {_results(job)}",
              f"Job page: {base}/jobs/{job.id}"]
    return Notice(KIND_OF[job.state], str(job.id), job.pusher_id, title,
                  "\n".join(lines) + "\n" + footer(svc))


def collect(s: Session, svc: Services, now: datetime, report) -> list[int]:
    """Decide the mails of the jobs that ended since the last look (in ``s``, the caller's
    transaction); the ids of the outbox rows to send."""
    found = _load(s)
    max_id, watch = found if found is not None else _first_look(s, now)
    # newer jobs, and a few just under the highest seen (an id taken before a higher one but
    # committed after it); the very first look has its list of the jobs it wants already
    newer = max_id - MARGIN if found is not None else max_id
    watch |= {jid for jid, _old, new in getattr(report, "changes", ()) if new in states.TERMINAL}
    ids = sorted(watch)
    pairs = s.execute(select(Job.id, Job.state).where(Job.id > newer)).all()
    for i in range(0, len(ids), CHUNK):   # bounded IN lists, however long the queue
        pairs += s.execute(select(Job.id, Job.state).where(
            Job.id.in_(ids[i:i + CHUNK]), Job.id <= newer)).all()
    new_max = max([max_id, *(jid for jid, _ in pairs)])
    keep = {jid for jid, state in pairs if state not in states.TERMINAL}
    ended = [jid for jid, state in pairs if state in states.TERMINAL]
    notices: list[Notice] = []
    if ended:
        keys = [str(j) for j in ended]
        told = {int(x) for x in s.scalars(select(Notification.subject).where(
            Notification.kind.in_(JOB_KINDS), Notification.subject.in_(keys)))}
        stopped = {int(x.split(":")[0]) for x in s.scalars(select(Notification.subject).where(
            Notification.kind == "workspace_idle",
            Notification.subject.in_([f"{j}:stopped" for j in ended]),
            Notification.status.in_(("queued", "sending", "sent"))))}
        rows = s.execute(select(Job, Project.name, Team.name)
                         .join(Project, Project.id == Job.project_id)
                         .join(Team, Team.id == Project.team_id)
                         .where(Job.id.in_([j for j in ended if j not in told]))).all()
        for job, project, team in rows:
            if job.pusher_id is None:
                continue
            if _awaits_results(job, now):
                keep.add(job.id)
                continue
            n = compose(svc, job, project, team)
            if job.id in stopped:   # the idle policy's stop mail told them already
                n = Notice(n.kind, n.subject, n.user_id, n.title, "")
                enqueue_told(s, svc, n)
                continue
            notices.append(n)
    queued = enqueue(s, svc, notices)
    _save(s, now, new_max, keep)
    return queued


def enqueue_told(s: Session, svc: Services, n: Notice) -> None:
    """Record ``n`` as decided without a mail (the user was told another way)."""
    s.add(Notification(kind=n.kind, subject=n.subject, user_id=n.user_id, title=n.title[:255],
                       body="", status="skipped", attempts=0, created_at=svc.now(),
                       detail="the workspace's idle-stop mail told the user"))
