"""Who is asking: the portal's login session, read from its cookie without Flask's request cycle.

The portal keeps flask-login's state in Flask's signed cookie session (``slipway_session``:
``SESSION_COOKIE_NAME``, set in ``portal.web.init_web``); ``_user_id`` is the logged-in user.
The cookie is decoded with the Flask app's own serializer (its secret key and fallbacks, its
salt), with the age limit Flask itself applies (``PERMANENT_SESSION_LIFETIME``), so the gateway
accepts exactly the cookies the portal accepts. flask-login's ``session_protection = "basic"``
only marks a session from another address/browser as not fresh (nothing here needs a fresh
login), and the portal logs in without remember-me, so the session cookie is the whole story.
Whether the user still exists, is active and may see the workspace is ``resolve``'s question.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from itsdangerous import BadData


def session_user_id(flask_app: Any, cookies: Mapping[str, str]) -> int | None:
    """The user id of the portal session in ``cookies``; None when there is none, or it is
    tampered with, expired, signed with another key or logged out."""
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
    user_id = data.get("_user_id") if isinstance(data, dict) else None
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        return user_id if user_id > 0 else None
    if isinstance(user_id, str) and user_id.isascii() and user_id.isdigit():
        return int(user_id) or None
    return None
