"""The portal's login session as its cookie says, read without Flask's request cycle (the
workspace gateway and the request-body gate have no Flask request).

The portal keeps flask-login's state in Flask's signed cookie session (``slipway_session``:
``SESSION_COOKIE_NAME``, set in ``portal.web.init_web``); ``_user_id`` is the logged-in user and
``sid`` the server-side session it belongs to (``web_sessions``: the session is live only while
its row is, so a logged-out cookie opens nothing). The cookie is decoded with the Flask app's own
serializer (its secret key and fallbacks, its salt), with the age limit Flask itself applies
(``PERMANENT_SESSION_LIFETIME``), so these doors accept exactly the cookies the portal accepts.
flask-login's ``session_protection = "basic"`` only marks a session from another
address/browser as not fresh (nothing here needs a fresh login), and the portal logs in without
remember-me, so the session cookie is the whole story.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from itsdangerous import BadData

from .web_sessions import SID_KEY


def session_login(flask_app: Any, cookies: Mapping[str, str]) -> tuple[int, str] | None:
    """(user id, session id) of the portal session in ``cookies``; None when there is none, or
    it is tampered with, expired, signed with another key or carries no session id. Whether
    that session is still open is ``portal.identity.web_sessions.live_user``'s question."""
    name = flask_app.config.get("SESSION_COOKIE_NAME") or "session"
    value = cookies.get(name)
    if not value:
        return None
    serializer = flask_app.session_interface.get_signing_serializer(flask_app)
    if serializer is None:  # no secret key: the portal has no sessions either
        return None
    max_age = int(flask_app.permanent_session_lifetime.total_seconds())
    try:
        data = serializer.loads(value, max_age=max_age)
    except (BadData, ValueError, TypeError, UnicodeError):
        return None
    if not isinstance(data, dict):
        return None
    user_id, sid = data.get("_user_id"), data.get(SID_KEY)
    if not isinstance(sid, str) or not sid:
        return None
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        return (user_id, sid) if user_id > 0 else None
    if isinstance(user_id, str) and user_id.isascii() and user_id.isdigit() and int(user_id):
        return int(user_id), sid
    return None


def parse_cookie_header(header: str) -> dict[str, str]:
    """``Cookie: a=1; b="2"`` -> {"a": "1", "b": "2"} (the first of a repeated name)."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in out:
            value = value.strip()
            out[name] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return out
