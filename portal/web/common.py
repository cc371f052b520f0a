"""Helpers every web blueprint uses: the services, a request-scoped read session, the acting
user, op errors -> HTTP errors, flash-and-redirect."""
from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from flask import abort, current_app, flash, g, redirect, request, url_for
from flask_login import UserMixin, current_user

from ..services import Services
from .ops import Actor, OpError


class WebUser(UserMixin):
    """What flask-login keeps per request: plain values, no ORM object bound to a session."""

    def __init__(self, id: int, name: str, is_cluster_admin: bool, email: str | None = None):
        self.id = id
        self.name = name
        self.is_cluster_admin = is_cluster_admin
        self.email = email

    def get_id(self) -> str:
        return str(self.id)


def svc() -> Services:
    return current_app.extensions["slipway"]


def db():
    """One read session per request (closed at teardown). Writes use ``svc().db.transaction()``."""
    if "slipway_db" not in g:
        g.slipway_db = svc().db.session()
    return g.slipway_db


def fresh_db():
    """The request session after a write: end its read snapshot so it sees the commit."""
    s = g.get("slipway_db")
    if s is not None:
        s.rollback()
        s.expire_all()
    return db()


def close_db(_exc=None) -> None:
    s = g.pop("slipway_db", None)
    if s is not None:
        s.close()


def actor() -> Actor:
    u = g.get("api_user") or current_user
    if not getattr(u, "is_authenticated", False):
        abort(401)
    return Actor(id=u.id, name=u.name, is_cluster_admin=bool(u.is_cluster_admin))


def raise_http(exc: OpError):
    """OpError -> abort with its status; the message goes to the error page."""
    abort(exc.status, description=str(exc))


def safe_next(target: str | None, default: str = "/") -> str:
    """Only local paths: '/x?y'. Refuses '//host', '/\\host', 'http://…', control characters."""
    if not target or not isinstance(target, str):
        return default
    if not target.startswith("/") or target.startswith("//") or target.startswith("/\\"):
        return default
    if any(ord(c) < 32 or c == "\\" for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def back(endpoint: str, message: str | None = None, category: str = "ok", **values):
    if message:
        flash(message, category)
    return redirect(url_for(endpoint, **values))


def int_arg(name: str, default: int | None = None) -> int | None:
    v = request.args.get(name, "")
    try:
        return int(v) if v else default
    except ValueError:
        return default


def fmt_dt(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC") if t else ""


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    v = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if v < 1000 or unit == "TB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1000
    return f"{n} B"


def fmt_duration(start: datetime | None, end: datetime | None, now: datetime) -> str:
    if start is None:
        return ""
    secs = int(((end or now) - start).total_seconds())
    if secs < 0:
        return ""
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")
