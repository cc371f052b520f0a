"""Sending the alarm mail the database owes (``alarm_mails`` rows, written with the alarm's
change): claim a batch, hand each message to ``svc.mailer``, mark it sent at once. A message
marked sent is never sent again (a restart included); one that failed is tried again later
(after 1, 2, 4, 8 minutes) and given up after ``MAX_ATTEMPTS``, with the error kept for the page.
A claim keeps a second sender (another reconciler, a page) off the same rows; a sender that
died holding it is replaced after ``CLAIM_TTL``."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select

from ..db.alarm_models import Alarm, AlarmMail
from ..services import Services, log
from .alarm_kinds import LABELS, TEAM_KINDS, clip

MAX_ATTEMPTS = 5
CLAIM_TTL = timedelta(minutes=10)
BATCH = 50
STOP_AFTER_FAILURES = 3   # in one run: the mail server is likely down, try again next time


def title(alarm: Alarm) -> str:
    return f"{LABELS.get(alarm.kind, alarm.kind)}: {alarm.subject}"


def _when(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S} UTC" if t else "—"


def message(svc: Services, alarm: Alarm, event: str) -> tuple[str, str]:
    """(subject, body) of the mail about ``alarm`` being opened or resolved."""
    cfg = svc.config
    word = "ALARM" if event == "opened" else "resolved"
    subject = f"[Slipway {cfg.cluster_name}] {word}: {title(alarm)}"
    lines = [f"Slipway on cluster {cfg.cluster_name} "
             + ("opened an alarm." if event == "opened" else "resolved an alarm."), "",
             f"  {title(alarm)}", f"  {alarm.detail}", "", f"  opened:   {_when(alarm.opened_at)}"]
    if event == "resolved":
        lines += [f"  resolved: {_when(alarm.resolved_at)}",
                  f"  now:      {alarm.resolution or 'the condition cleared'}"]
    lines += ["", f"Every alarm (cluster administrators): {cfg.base_url}/admin/alarms"]
    if alarm.kind in TEAM_KINDS:
        lines += [f"You get this mail as a cluster administrator or as an owner or administrator "
                  f"of team {alarm.subject}."]
    return clip(subject, 200), "\n".join(lines) + "\n"


def deliver(svc: Services, now: datetime | None = None, *, limit: int = BATCH) -> int:
    """Send what is due; the number of messages sent. No mailer: nothing (the web shows it)."""
    if svc.mailer is None:
        return 0
    now = now or svc.now()
    batch = _claim(svc, now, limit)
    sent = failures = 0
    for i, (mail_id, to, subject, body) in enumerate(batch):
        try:
            svc.mailer.send(to, subject, body)
        except Exception as exc:  # noqa: BLE001 — kept on the row, tried again later
            log.warning("alarm mail %s to %s: %s", mail_id, to, exc)
            _failed(svc, mail_id, now, exc)
            failures += 1
            if failures >= STOP_AFTER_FAILURES:
                _release(svc, [m[0] for m in batch[i + 1:]])
                break
            continue
        _sent(svc, mail_id, svc.now())
        sent += 1
    return sent


def _claim(svc: Services, now: datetime, limit: int) -> list[tuple[int, str, str, str]]:
    with svc.db.session() as s:   # nearly every tick: nothing pending, no write transaction
        if s.scalar(select(AlarmMail.id).where(AlarmMail.state == "pending").limit(1)) is None:
            return []
    with svc.db.transaction() as s:
        rows = list(s.scalars(
            select(AlarmMail).where(
                AlarmMail.state == "pending",
                or_(AlarmMail.claimed_at.is_(None), AlarmMail.claimed_at < now - CLAIM_TTL),
                or_(AlarmMail.next_try_at.is_(None), AlarmMail.next_try_at <= now))
            .order_by(AlarmMail.id).limit(limit)))
        out = []
        for m in rows:
            m.claimed_at = now
            subject, body = message(svc, m.alarm, m.event)
            out.append((m.id, m.to_addr, subject, body))
        return out


def _sent(svc: Services, mail_id: int, at: datetime) -> None:
    with svc.db.transaction() as s:
        m = s.get(AlarmMail, mail_id)
        if m is not None:
            m.state, m.sent_at, m.claimed_at, m.error = "sent", at, None, None
            m.attempts += 1


def _failed(svc: Services, mail_id: int, now: datetime, exc: Exception) -> None:
    with svc.db.transaction() as s:
        m = s.get(AlarmMail, mail_id)
        if m is None:
            return
        m.attempts += 1
        m.claimed_at = None
        m.error = clip(f"{type(exc).__name__}: {exc}", 500)
        if m.attempts >= MAX_ATTEMPTS:
            m.state = "failed"
        else:
            m.next_try_at = now + timedelta(minutes=2 ** (m.attempts - 1))


def _release(svc: Services, mail_ids: list[int]) -> None:
    if not mail_ids:
        return
    with svc.db.transaction() as s:
        for m in s.scalars(select(AlarmMail).where(AlarmMail.id.in_(mail_ids))):
            m.claimed_at = None
