"""The request's services, read session and acting user, for the pages and the API alike."""
from __future__ import annotations

from flask import abort, current_app, g
from flask_login import UserMixin, current_user

from ..services import Services
from ..teams.access import Actor
from .params import MAX_ID, int_query


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


MAX_PAGE = 1_000_000_000  # page numbers: (page - 1) * per_page stays far inside SQLite's INTEGER


def int_arg(name: str, default: int | None = None, *, lo: int = 0, hi: int = MAX_ID) -> int | None:
    """A bounded int query parameter (``params.int_query``): 400 with a message for garbage or a
    value outside ``lo … hi`` (e.g. ``before=99999999999999999999``), never an OverflowError."""
    return int_query(name, default, lo=lo, hi=hi)
