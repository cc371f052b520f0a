"""Portal login sessions, server side (``web_sessions``, migration 0016).

Flask keeps the session in a signed cookie; by itself such a cookie stays valid after logging
out (whoever copied it is still logged in). So a login also opens a row here and puts a random
session id (``sid``) in the cookie next to flask-login's user id; the session lives only while
its row does: logging out deletes it, every row of a user goes when an administrator ends their
sessions (``end_all``), and a row older than ``session_lifetime_hours`` no longer counts (and is
swept at the next login). Only sha256(sid) is stored.

Every door that accepts the portal's cookie asks ``live_user``: the page loader
(``portal.web.init_web``), the workspace gateway (``portal.cli.serve``) and the request-body gate
(``portal.http.body_gate``).
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session

from ..db import User, WebSession

SID_KEY = "sid"   # the key of the session id in Flask's session

_LIVE_USER = (select(User.id, User.name, User.is_cluster_admin, User.email, User.active)
              .join(WebSession, WebSession.user_id == User.id)
              .where(WebSession.sid_hash == bindparam("sid_hash"), User.id == bindparam("user_id"),
                     WebSession.created_at > bindparam("oldest")))


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8", "surrogatepass")).hexdigest()


def _oldest(now: datetime, lifetime_hours: float) -> datetime:
    return now - timedelta(hours=lifetime_hours)


def open_session(s: Session, user_id: int, *, now: datetime, lifetime_hours: float) -> str:
    """A new session for ``user_id``: its id, for the cookie. Expired rows go meanwhile."""
    s.execute(delete(WebSession).where(WebSession.created_at <= _oldest(now, lifetime_hours)))
    sid = secrets.token_urlsafe(32)
    s.execute(insert(WebSession).values(user_id=user_id, sid_hash=_hash(sid), created_at=now))
    return sid


def live_user(conn, user_id, sid, *, now: datetime, lifetime_hours: float):
    """The active user (id, name, is_cluster_admin, email) whose live session ``sid`` is; None
    for no, a logged-out, expired or foreign session, or a deactivated user. ``conn``: a Session
    or Connection."""
    if not isinstance(sid, str) or not sid or len(sid) > 128:
        return None
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        return None
    row = conn.execute(_LIVE_USER, {"sid_hash": _hash(sid), "user_id": uid,
                                    "oldest": _oldest(now, lifetime_hours)}).first()
    return row if row is not None and row.active else None


def end_session(s: Session, sid) -> None:
    """Log out: the session ends for every copy of its cookie."""
    if isinstance(sid, str) and sid:
        s.execute(delete(WebSession).where(WebSession.sid_hash == _hash(sid)))


def end_all(s: Session, user_id: int) -> int:
    """End every portal session of ``user_id`` (their browsers must log in again); how many."""
    return s.execute(delete(WebSession).where(WebSession.user_id == user_id)).rowcount or 0
