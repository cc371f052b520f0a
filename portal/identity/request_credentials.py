"""Does a request carry valid credentials? Asked from the request's headers alone, before its
body is read (``portal.http.body_gate``: only such callers may send large bodies).

Valid is what some door of Slipway accepts, checked the way that door checks it, without writing
anything (no ``last_used_at``):

* ``Authorization: Basic`` user + access token (git, git-lfs, the API), or ``job:<id>`` + that
  job's token (a job pushing its results);
* ``Authorization: Bearer`` access token (the API), or a job's token on its own
  ``/internal/jobs/<id>/…`` path (the runner's events);
* ``X-Slipway-Hook-Secret`` (the git hooks' callbacks);
* the portal's session cookie naming a live session (``web_sessions``; browser uploads).

Which door the request is for and whether the caller may use it stay that door's questions.
"""
from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any

from .. import integrations as ig
from ..jobs import service as jobs
from ..services import Services
from . import tokens, user_tokens, web_sessions
from .session_cookie import parse_cookie_header, session_login

_JOB_PATH = re.compile(r"^/internal/jobs/(\d{1,18})/")


def make_checker(svc: Services, flask_app: Any):
    """``check(headers, path) -> bool`` over waitress's header names (``AUTHORIZATION``,
    ``COOKIE``, ``X_SLIPWAY_HOOK_SECRET``)."""

    def check(headers: Mapping[str, str], path: str) -> bool:
        secret = headers.get("X_SLIPWAY_HOOK_SECRET", "")
        if secret and svc.config.hook_secret and hmac.compare_digest(
                secret.encode(), svc.config.hook_secret.encode()):
            return True
        authorization = headers.get("AUTHORIZATION", "")
        scheme, _, cred = authorization.partition(" ")
        cred = cred.strip()
        if scheme.lower() == "basic" and cred:
            return _basic_ok(svc, authorization)
        if scheme.lower() == "bearer" and cred:
            return _bearer_ok(svc, cred, path)
        cookie = headers.get("COOKIE", "")
        return bool(cookie) and _session_ok(svc, flask_app, cookie)

    return check


def _basic_ok(svc: Services, authorization: str) -> bool:
    found = ig.parse_basic(authorization)   # exactly as the git gateway reads it
    if found is None:
        return False
    username, secret = found
    with svc.db.session() as s:
        if username.startswith("job:"):
            jid = username[4:]
            return jid.isdigit() and len(jid) <= 18 and jobs.check_job_token(
                s, int(jid), secret, now=svc.now()) is not None
        return tokens.verify_token(s, username, secret) is not None


def _bearer_ok(svc: Services, cred: str, path: str) -> bool:
    with svc.db.session() as s:
        if user_tokens.user_by_bearer(s, cred) is not None:
            return True
        m = _JOB_PATH.match(path)
        return m is not None and jobs.check_job_token(s, int(m.group(1)), cred,
                                                      now=svc.now()) is not None


def _session_ok(svc: Services, flask_app: Any, cookie: str) -> bool:
    login = session_login(flask_app, parse_cookie_header(cookie))
    if login is None:
        return False
    with svc.db.session() as s:
        return web_sessions.live_user(s, *login, now=svc.now(),
                                      lifetime_hours=svc.config.session_lifetime_hours) is not None
