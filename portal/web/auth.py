"""Log in / log out (flask-login sessions; CSRF on both forms; ``next`` must be a local path)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from ..db import User
from ..identity.login import verify_credentials
from .common import WebUser, safe_next, svc

bp = Blueprint("auth", __name__)


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
        user = verify(username, password) if username and password else None
        if user is None or not getattr(user, "active", True):
            error = "Unknown user name or wrong password."
        else:
            session.clear()  # no session fixation: a fresh session for the logged-in user
            login_user(WebUser(user.id, user.name, bool(user.is_cluster_admin), user.email))
            return redirect(nxt)
    return render_template("login.html", error=error, username=username, next=nxt), (401 if error else 200)


@bp.post("/logout")
def logout():
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
