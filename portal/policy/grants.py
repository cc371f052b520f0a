"""Emergency grants: the right to run emergency jobs (the ``emergency`` QOS: highest priority,
preempts normal jobs, which requeue and resume from their files). Cluster administrators grant
it to a user (in every team) or a team (its members, in it), optionally until a date; the
account sync puts ``emergency`` in the QOS list of exactly the associations that hold it."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..db import EmergencyGrant, Team, User
from ..services import Services
from ..teams.access import Actor, NotFound, OpError
from . import events
from .common import require_cluster_admin, team_named, user_named


def parse_until(text: object, now: datetime) -> datetime | None:
    """``2027-01-31`` → the end of that day (UTC): the grant holds through it. Empty: no end."""
    if text in (None, ""):
        return None
    if isinstance(text, datetime):
        until = text if text.tzinfo else text.replace(tzinfo=timezone.utc)
    else:
        raw = str(text).strip()
        try:
            if "T" in raw or " " in raw:
                until = datetime.fromisoformat(raw)
                until = until if until.tzinfo else until.replace(tzinfo=timezone.utc)
            else:
                day = date.fromisoformat(raw)
                until = datetime.combine(day + timedelta(days=1), time(0), tzinfo=timezone.utc)
        except ValueError:
            raise OpError(f"cannot read the date {raw[:40]!r}; write YYYY-MM-DD "
                          f"(e.g. 2027-01-31: the right holds through that day, UTC)") from None
    if until <= now:
        raise OpError(f"{str(text)[:40]} is in the past; give a date after today")
    return until


def _active(now: datetime):
    return (EmergencyGrant.revoked_at.is_(None),
            or_(EmergencyGrant.until.is_(None), EmergencyGrant.until > now))


def _subject(s: Session, who: str, team: bool) -> tuple[str, dict]:
    if team:
        t = team_named(s, who)
        return f"team {t.name}", {"team_id": t.id}
    u = user_named(s, who)
    return u.name, {"user_id": u.id}


def grant(svc: Services, actor: Actor, who: str, *, team: bool = False, until: object = None,
          note: str = "") -> dict:
    """Grant (or extend) the emergency right; returns the grant."""
    require_cluster_admin(actor, "only cluster administrators grant the emergency right")
    now = svc.now()
    end = parse_until(until, now)
    if not isinstance(note, str) or len(note) > 500:
        raise OpError("note must be text of at most 500 characters")
    with svc.db.transaction() as s:
        label, key = _subject(s, who, team)
        col, value = next(iter(key.items()))
        for old in s.scalars(select(EmergencyGrant).where(getattr(EmergencyGrant, col) == value,
                                                          *_active(now))):
            old.revoked_at, old.revoked_by = now, actor.name   # replaced by the new one
        g = EmergencyGrant(**key, until=end, note=note, granted_by=actor.name, granted_at=now)
        s.add(g)
        s.flush()
        events.record(s, actor.name, "grant", label,
                      f"emergency right until {end.date().isoformat() if end else 'revoked'}"
                      + (f": {note}" if note else ""), at=now)
        return _dict(g, label)


def revoke(svc: Services, actor: Actor, who: str, *, team: bool = False) -> int:
    """End every active grant of ``who``; returns how many ended (NotFound when none)."""
    require_cluster_admin(actor, "only cluster administrators revoke the emergency right")
    now = svc.now()
    with svc.db.transaction() as s:
        label, key = _subject(s, who, team)
        col, value = next(iter(key.items()))
        rows = list(s.scalars(select(EmergencyGrant).where(getattr(EmergencyGrant, col) == value,
                                                           *_active(now))))
        if not rows:
            raise NotFound(f"{label} holds no emergency right")
        for g in rows:
            g.revoked_at, g.revoked_by = now, actor.name
        events.record(s, actor.name, "revoke", label, "emergency right revoked", at=now)
        return len(rows)


def _dict(g: EmergencyGrant, label: str) -> dict:
    return {"id": g.id, "who": label, "until": g.until.isoformat() if g.until else None,
            "note": g.note, "granted_by": g.granted_by,
            "granted_at": g.granted_at.isoformat() if g.granted_at else None,
            "revoked_by": g.revoked_by,
            "revoked_at": g.revoked_at.isoformat() if g.revoked_at else None}


def list_grants(svc: Services, actor: Actor, *, everything: bool = False) -> list[dict]:
    """Active grants (``everything``: ended and revoked ones too, newest first)."""
    require_cluster_admin(actor, "only cluster administrators see the emergency grants")
    now = svc.now()
    with svc.db.session() as s:
        q = (select(EmergencyGrant, User.name, Team.name)
             .outerjoin(User, EmergencyGrant.user_id == User.id)
             .outerjoin(Team, EmergencyGrant.team_id == Team.id)
             .order_by(EmergencyGrant.id.desc()))
        if not everything:
            q = q.where(*_active(now))
        out = []
        for g, uname, tname in s.execute(q):
            d = _dict(g, uname if uname else f"team {tname}")
            d["active"] = g.revoked_at is None and (g.until is None or g.until > now)
            out.append(d)
        return out


def holds_right(s: Session, user_id: int, team_id: int, now: datetime) -> bool:
    """True when the user (anywhere) or the team (for its members) holds an active grant."""
    return s.scalar(select(EmergencyGrant.id).where(
        or_(EmergencyGrant.user_id == user_id, EmergencyGrant.team_id == team_id),
        *_active(now)).limit(1)) is not None


def holders(s: Session, now: datetime) -> tuple[set[int], set[int]]:
    """(user ids, team ids) holding an active grant: what the account sync reads."""
    users, teams = set(), set()
    for uid, tid in s.execute(select(EmergencyGrant.user_id, EmergencyGrant.team_id)
                              .where(*_active(now))):
        if uid is not None:
            users.add(uid)
        if tid is not None:
            teams.add(tid)
    return users, teams


__all__ = ["grant", "revoke", "list_grants", "holds_right", "holders", "parse_until", "NotFound"]
