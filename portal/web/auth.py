"""Log in / log out (flask-login sessions; CSRF on both forms; ``next`` must be a local path)."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from ..db import User
from ..identity import web_sessions
from ..identity.login import verify_credentials
from .common import WebUser, safe_next, svc
from ..identity.throttle import LoginThrottle

bp = Blueprint("auth", __name__)


def throttle() -> LoginThrottle:
    t = current_app.extensions.get("slipway_login_throttle")
    if t is None:
        cfg = svc().config
        t = current_app.extensions.setdefault("slipway_login_throttle", LoginThrottle(
            per_user=cfg.login_max_failures, per_address=cfg.login_max_failures_per_address,
            window_s=cfg.login_failure_window))
    return t


def verify(username: str, password: str) -> User | None:
    """LDAP or local password accounts: THE check (``portal.identity.login``)."""
    return verify_credentials(svc(), username, password)


@bp.route("/login", methods=["GET", "POST"])
def login():
    nxt = safe_next(request.values.get("next"), url_for("dashboard.index"))
    if current_user.is_authenticated:
        return redirect(nxt)
    error = None
    username = ""
    if request.method == "POST":
        username = (request.form.get("username") or "").strip()
        password = request.form.get("password") or ""
        address = request.remote_addr or ""
        wait = throttle().begin(username, address)  # counted as failed until it succeeds
        if wait:  # refused without checking the password: guessing stays slow
            error = f"Too many failed logins. Try again in {wait} s."
            return render_template("login.html", error=error, username=username, next=nxt), \
                429, {"Retry-After": str(wait)}
        user = verify(username, password) if username and password else None
        if user is None or not getattr(user, "active", True):
            error = "Unknown user name or wrong password."
        else:
            throttle().succeeded(username, address)
            cfg = svc().config
            with svc().db.transaction() as s:
                sid = web_sessions.open_session(s, user.id, now=svc().now(),
                                                lifetime_hours=cfg.session_lifetime_hours)
            session.clear()  # no session fixation: a fresh session for the logged-in user
            session[web_sessions.SID_KEY] = sid   # live while its row is (logout deletes it)
            login_user(WebUser(user.id, user.name, bool(user.is_cluster_admin), user.email))
            return redirect(nxt)
    return render_template("login.html", error=error, username=username, next=nxt), (401 if error else 200)


@bp.post("/logout")
def logout():
    sid = session.get(web_sessions.SID_KEY)
    if sid:
        with svc().db.transaction() as s:
            web_sessions.end_session(s, sid)
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
