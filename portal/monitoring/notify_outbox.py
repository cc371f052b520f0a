"""The notifications outbox: every notification decided is one row, unique per (kind, subject,
user), so whichever tick, reconciler or restart looks at the same event again, it is mailed at
most once. A row is ``skipped`` when it must not go out (kind turned off, no address, mail not
configured, the user gone) and ``queued`` otherwise; ``flush`` hands queued rows to the mailer
(``sending`` first: a crash mid-send never sends again), stops at the first failure and tries
nothing for RETRY_BASE_S after it (a server that is down costs one timeout now and then, not one
per message or per tick), and retries each message with back-off."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ..db import ReconcilerState, User
from ..db.notify_models import Notification
from ..services import Services, log
from . import notify_settings as settings

MAX_ATTEMPTS = 6            # then given up ("failed")
RETRY_BASE_S = 30           # 30 s, 1, 2, 4, 8 min between attempts
FLUSH_LIMIT = 50            # messages per tick at most
KEEP_DAYS = 180             # rows kept this long (what the settings page lists)
STUCK_SENDING = timedelta(days=1)
PRUNE_KEY, PRUNE_EVERY = "notify.pruned_at", timedelta(hours=1)
PAUSE_KEY = "notify.mail_paused_until"   # set after a failed send
MAIL_OFF = "mail is not configured on this Slipway (smtp_host)"


@dataclass(frozen=True)
class Notice:
    kind: str
    subject: str        # what it is about: unique with kind and user (a job id, "7:3", …)
    user_id: int
    title: str
    body: str


def footer(svc: Services) -> str:
    return ("\n-- \nSlipway sent this because this kind of notification is on for you; turn "
            f"it off at {svc.config.base_url}/settings/notifications\n")


def enqueue(s: Session, svc: Services, notices: Iterable[Notice]) -> list[int]:
    """Record each notice once (in the caller's transaction); the ids of the rows to send."""
    notices = list(notices)
    if not notices:
        return []
    now = svc.now()
    users = {u.id: u for u in s.scalars(select(User).where(
        User.id.in_({n.user_id for n in notices})))}
    off = settings.turned_off(s, users)
    queued = []
    for n in notices:
        if s.scalar(select(Notification.id).where(
                Notification.kind == n.kind, Notification.subject == n.subject,
                Notification.user_id == n.user_id)) is not None:
            continue   # decided before: never twice
        user = users.get(n.user_id)
        if user is None:
            continue
        why = (MAIL_OFF if svc.mailer is None
               else "the user is no longer active" if not user.active
               else "no email address" if not user.email
               else "turned off in the notification settings" if (n.user_id, n.kind) in off
               else None)
        row = Notification(kind=n.kind, subject=n.subject[:128], user_id=n.user_id,
                           email=user.email, title=" ".join(n.title.split())[:255], body=n.body,
                           status="skipped" if why else "queued", detail=why, attempts=0,
                           created_at=now, next_attempt_at=None if why else now)
        s.add(row)
        s.flush()
        if why is None:
            queued.append(row.id)
        else:
            _count(svc, n.kind, "skipped")
    return queued


def _count(svc: Services, kind: str, outcome: str) -> None:
    try:
        svc.metrics.inc("slipway_notifications_total", labels={"kind": kind, "outcome": outcome})
    except Exception:  # noqa: BLE001 — counting never stops mail
        log.debug("notification metric not counted", exc_info=True)


def _send(mailer, to: str, title: str, body: str) -> str | None:
    """None when the mailer took it, else why not. The SMTP adapter answers False (it logged
    why); a mailer that raises counts as refusing too."""
    try:
        taken = mailer.send(to, title, body)
    except Exception as exc:  # noqa: BLE001 — whatever the mailer does, the tick goes on
        return f"{type(exc).__name__}: {exc}"
    if taken is False:
        return "the mail server did not take it (down, or it refused; the reason is in the log)"
    return None


@dataclass
class Flushed:
    sent: int = 0
    failed: int = 0
    deferred: bool = False      # stopped early: the mail server failed


def _state(s: Session, key: str) -> datetime | None:
    row = s.get(ReconcilerState, key)
    try:
        return datetime.fromisoformat(json.loads(row.value)) if row is not None else None
    except (ValueError, TypeError):
        return None


def _set_state(s: Session, key: str, when: datetime, now: datetime) -> None:
    row = s.get(ReconcilerState, key)
    if row is None:
        s.add(ReconcilerState(key=key, value=json.dumps(when.isoformat()), updated_at=now))
    else:
        row.value, row.updated_at = json.dumps(when.isoformat()), now


def flush(svc: Services, ids: list[int] | None = None, limit: int = FLUSH_LIMIT) -> Flushed:
    """Send queued notifications that are due (only ``ids`` when given), oldest first. After a
    failure nothing is tried for RETRY_BASE_S (the server is most likely down)."""
    out, now = Flushed(), svc.now()
    with svc.db.session() as s:
        paused = _state(s, PAUSE_KEY)
        if paused is not None and now < paused and svc.mailer is not None:
            return out
        q = select(Notification.id).where(Notification.status == "queued",
                                          Notification.next_attempt_at <= now)
        if ids is not None:
            q = q.where(Notification.id.in_(ids))
        due = s.scalars(q.order_by(Notification.attempts, Notification.id).limit(limit)).all()
    for nid in due:
        with svc.db.transaction() as s:
            n = s.get(Notification, nid)
            if n is None or n.status != "queued":
                continue
            if svc.mailer is None:
                n.status, n.detail, n.next_attempt_at = "skipped", MAIL_OFF, None
                continue
            n.status, n.attempts = "sending", n.attempts + 1
            kind, to, title, body = n.kind, n.email, n.title, n.body
        why = _send(svc.mailer, to, title, body)
        with svc.db.transaction() as s:
            n = s.get(Notification, nid)
            if n is None:
                continue
            if why is None:
                n.status, n.sent_at, n.detail, n.next_attempt_at = "sent", svc.now(), None, None
            elif n.attempts >= MAX_ATTEMPTS:
                n.status, n.detail, n.next_attempt_at = "failed", f"gave up: {why}"[:2000], None
            else:
                n.status, n.detail = "queued", why[:2000]
                n.next_attempt_at = svc.now() + timedelta(
                    seconds=RETRY_BASE_S * 2 ** (n.attempts - 1))
            attempts = n.attempts
        if why is None:
            out.sent += 1
            _count(svc, kind, "sent")
        else:
            out.failed += 1
            _count(svc, kind, "failed")
            log.warning("notification %s (%s) to %s not sent (attempt %d): %s",
                        nid, kind, to, attempts, why)
            out.deferred = True
            with svc.db.transaction() as s:
                _set_state(s, PAUSE_KEY, svc.now() + timedelta(seconds=RETRY_BASE_S), now)
            break   # most likely the server is down: the rest waits
    return out


def prune(svc: Services, now: datetime) -> None:
    """At most once an hour: forget rows older than KEEP_DAYS; a row left ``sending`` for a day
    (the process stopped mid-send) is marked failed, never sent again (it may have gone out)."""
    with svc.db.transaction() as s:
        last = _state(s, PRUNE_KEY)
        if last is not None and now - last < PRUNE_EVERY:
            return
        s.execute(delete(Notification).where(
            Notification.created_at < now - timedelta(days=KEEP_DAYS),
            Notification.status.in_(("sent", "skipped", "failed"))))
        s.execute(update(Notification).where(
            Notification.status == "sending", Notification.created_at < now - STUCK_SENDING)
            .values(status="failed", next_attempt_at=None,
                    detail="the process stopped while handing it to the mail server; not "
                           "sent again (it may have gone out)"))
        _set_state(s, PRUNE_KEY, now, now)
