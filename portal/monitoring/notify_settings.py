"""Each user's notification settings (docs/MONITORING.md): which kinds of mail they want (every
kind on until turned off), the address mail goes to, and what was sent to them lately. The
settings page, ``/api/notifications`` and ``slipway notifications`` all call these."""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import User
from ..db.notify_models import NOTIFY_KINDS, Notification, NotifySetting
from ..services import Services
from ..teams.access import Actor, NotFound, OpError

KINDS = NOTIFY_KINDS
LABELS = {
    "job_ended": "a job of mine succeeded",
    "job_failed": "a job of mine failed",
    "job_cancelled": "a job of mine was cancelled",
    "workspace_idle": "a workspace of mine is idle (the reminder), or was stopped for it",
    "low_balance": "a team I own or administer went under the low-balance threshold",
}
_ON = {"on", "true", "yes", "1"}
_OFF = {"off", "false", "no", "0"}
_LOCAL = r"[A-Za-z0-9!#$%&*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})*\Z")


def check_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise OpError(f"unknown notification kind {kind!r}; the kinds are: {', '.join(KINDS)}")
    return kind


def parse_switch(value: object, what: str = "the setting") -> bool:
    """``on``/``off`` (also true/false, yes/no, 1/0, and JSON booleans) -> bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _ON | _OFF:
        return value.strip().lower() in _ON
    raise OpError(f"{what} must be on or off, not {value!r}")


def check_address(address: str) -> str:
    """``user@host`` alone (ASCII); anything else is refused with what is wrong."""
    address = (address or "").strip()
    if len(address) > 254 or not _ADDRESS.match(address):
        raise OpError(f"{address!r} is not an email address Slipway can send to (user@host, "
                      "no name or spaces)")
    return address


def preferences(s: Session, user_id: int) -> dict[str, bool]:
    """kind -> on/off for one user (kinds without a row: on)."""
    out = dict.fromkeys(KINDS, True)
    out.update(s.execute(select(NotifySetting.kind, NotifySetting.enabled)
                         .where(NotifySetting.user_id == user_id)).all())
    return out


def turned_off(s: Session, user_ids: Iterable[int]) -> set[tuple[int, str]]:
    """The (user id, kind) pairs turned off, for several users in one query."""
    ids = sorted(set(user_ids))
    if not ids:
        return set()
    return {(u, k) for u, k in s.execute(
        select(NotifySetting.user_id, NotifySetting.kind).where(
            NotifySetting.user_id.in_(ids), NotifySetting.enabled.is_(False))).all()}


def _user(s: Session, actor: Actor) -> User:
    user = s.get(User, actor.id) if actor.id else None
    if user is None:
        if not actor.id:
            raise OpError(f"{actor.name} (the operator) is not a Slipway user and gets no "
                          "notifications; name one: slipway --as USER notifications …")
        raise NotFound(f"there is no user {actor.name!r}")
    return user


def _show(svc: Services, user: User, prefs: dict[str, bool]) -> dict:
    mail = svc.mailer is not None
    from_directory = user.ldap_dn is not None
    if not mail:
        note = ("mail is off on this Slipway (no SMTP server is configured): nothing is sent; "
                "your choices are kept for when it is turned on")
    elif not user.email:
        note = ("you have no email address, so you get no mail"
                + ("" if from_directory else "; set one to get these notifications"))
    else:
        note = f"mail goes to {user.email}"
    return {"user": user.name, "email": user.email or None,
            "email_from_directory": from_directory, "mail": mail, "note": note,
            "low_balance_threshold": str(svc.config.alarm_balance_threshold),
            "low_balance_threshold_text": ig.format_usd(svc.config.alarm_balance_threshold),
            "settings": dict(prefs),
            "kinds": [{"kind": k, "label": LABELS[k], "enabled": prefs[k]} for k in KINDS]}


def show(svc: Services, actor: Actor) -> dict:
    """The actor's settings: every kind with on/off, the address, whether mail is on at all."""
    with svc.db.session() as s:
        user = _user(s, actor)
        return _show(svc, user, preferences(s, user.id))


def update(svc: Services, actor: Actor, changes: Mapping[str, object]) -> dict:
    """Turn kinds on or off: ``{"job_ended": False, "low_balance": "on"}``. Every key and value
    is checked before anything changes."""
    if not isinstance(changes, Mapping) or not changes:
        raise OpError(f"name at least one kind to turn on or off: {', '.join(KINDS)}")
    wanted = {check_kind(k): parse_switch(v, f"{k}") for k, v in changes.items()}
    now = svc.now()
    with svc.db.transaction() as s:
        user = _user(s, actor)
        for kind, on in wanted.items():
            row = s.get(NotifySetting, (user.id, kind))
            if row is None:
                s.add(NotifySetting(user_id=user.id, kind=kind, enabled=on, updated_at=now))
            elif row.enabled != on:
                row.enabled, row.updated_at = on, now
        s.flush()
        return _show(svc, user, preferences(s, user.id))


def set_email(svc: Services, actor: Actor, address: str | None) -> dict:
    """Set (or clear, with None or "") the actor's own address. A directory (LDAP) user's
    address is the directory's: it is refused here (the next sync would undo it)."""
    address = check_address(address) if (address or "").strip() else None
    with svc.db.transaction() as s:
        user = _user(s, actor)
        if user.ldap_dn is not None:
            raise OpError(f"{user.name}'s address comes from the directory (LDAP); change it "
                          "there", status=409)
        user.email = address
        s.flush()
        return _show(svc, user, preferences(s, user.id))


def notification_dict(n: Notification) -> dict:
    return {"id": n.id, "kind": n.kind, "title": n.title, "status": n.status, "email": n.email,
            "detail": n.detail, "attempts": n.attempts,
            "created_at": n.created_at.isoformat() if n.created_at else None,
            "sent_at": n.sent_at.isoformat() if n.sent_at else None}


def recent(svc: Services, actor: Actor, limit: int = 20) -> list[dict]:
    """The actor's latest notifications, newest first: sent, waiting, or why not sent."""
    limit = max(1, min(int(limit), 200))
    with svc.db.session() as s:
        user = _user(s, actor)
        rows = s.scalars(select(Notification).where(Notification.user_id == user.id)
                         .order_by(Notification.id.desc()).limit(limit)).all()
        return [notification_dict(n) for n in rows]
