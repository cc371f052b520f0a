"""Slipway's web pages (server-rendered Jinja), wired by ``init_web`` (``portal.app.create_app``
registers the JSON API, ``portal.api``, beside them).

Every page reads only Slipway's database (and a job's log file); no page view calls Slurm
(BRIEF §2: Open OnDemand's Active Jobs pages are slow because they query the scheduler live).
The only Slurm call reachable from the web is cancel (POST), through ``jobs.service``.
"""
from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_login import LoginManager
from werkzeug.exceptions import HTTPException

from .. import integrations as ig
from ..identity import web_sessions
from . import common


def init_web(app: Flask, csrf=None) -> None:
    """Register the login manager, the page blueprints, filters and error pages."""
    from .alarms import bp as alarms_bp
    from .auth import bp as auth_bp
    from .dashboard import bp as dashboard_bp
    from .data import bp as data_bp
    from .data_upload import bp as data_upload_bp
    from .fund_requests import bp as funds_bp
    from .jobs import bp as jobs_bp
    from .metrics import bp as metrics_bp
    from .monitoring import bp as monitoring_bp
    from .notifications import bp as notifications_bp
    from .policy import bp as policy_bp
    from .projects import bp as projects_bp
    from .proxy import bp as proxy_bp
    from .teams import bp as teams_bp
    from .tokens import bp as tokens_bp
    from .workspaces import bp as workspaces_bp

    svc = app.extensions["slipway"]
    secure = svc.config.base_url.startswith("https://")
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=secure, SESSION_COOKIE_NAME="slipway_session",
                      REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Lax",
                      REMEMBER_COOKIE_SECURE=secure, WTF_CSRF_TIME_LIMIT=None,
                      WTF_CSRF_SSL_STRICT=secure)

    lm = LoginManager()
    lm.login_view = "auth.login"
    lm.login_message = "Log in to see that page."
    lm.login_message_category = "info"
    lm.session_protection = "basic"
    lm.init_app(app)

    @lm.user_loader
    def _load(user_id: str):
        from flask import session

        if not str(user_id).isdigit():
            return None
        # the cookie's session must still be open (logging out ends it for every copy); plain
        # columns through the request's read session (no second session, no ORM entity)
        row = web_sessions.live_user(common.db(), user_id, session.get(web_sessions.SID_KEY),
                                     now=svc.now(), lifetime_hours=svc.config.session_lifetime_hours)
        if row is None:
            return None
        return common.WebUser(row.id, row.name, row.is_cluster_admin, row.email)

    @lm.unauthorized_handler
    def _unauthorized():
        if request.path.startswith("/api/"):
            return jsonify({"ok": False, "error": "authentication required: log in or send "
                                                  "'Authorization: Bearer <access token>'"}), 401
        from flask import flash, redirect, url_for
        flash(lm.login_message, "info")
        nxt = request.full_path if request.query_string else request.path
        return redirect(url_for("auth.login", next=common.safe_next(nxt)))

    for bp in (auth_bp, dashboard_bp, teams_bp, funds_bp, projects_bp, jobs_bp, tokens_bp, proxy_bp,
               data_bp, data_upload_bp, workspaces_bp, policy_bp, notifications_bp,
               alarms_bp, metrics_bp, monitoring_bp):
        app.register_blueprint(bp)
    if csrf is not None:
        csrf.exempt(data_upload_bp)  # checks the token itself, after bounding a chunk's body
        csrf.exempt(proxy_bp)  # the proxied app's own forms; SameSite=Lax guards cross-site POSTs
        app.extensions["slipway_csrf"] = csrf

    app.teardown_appcontext(common.close_db)
    app.jinja_env.filters.update(usd=ig.format_usd, usd_micros=common.fmt_usd_micros, dt=common.fmt_dt,
                                 nbytes=common.fmt_bytes, url_segment=common.url_segment)
    from .. import shellquote  # commands shown on pages are quoted for a POSIX shell

    app.jinja_env.filters.update(shell=shellquote.shell, branch_arg=shellquote.branch_arg)
    app.jinja_env.globals.update(cluster_name=svc.config.cluster_name, row_links=common.row_links,
                                 app_url=common.app_url)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if request.path.startswith("/api/") or request.path.startswith("/internal/"):
            return jsonify({"ok": False, "error": exc.description or exc.name}), exc.code
        if exc.code == 400 and "CSRF" in (exc.description or ""):
            exc.description = ("The form expired or was sent from another site (CSRF token missing "
                               "or invalid). Reload the page and try again.")
        return render_template("error.html", code=exc.code, name=exc.name,
                               message=exc.description), exc.code

    from .proxy import PROXY_PATH, sandbox

    @app.after_request
    def _headers(resp):
        if PROXY_PATH.match(request.path):
            sandbox(resp)  # a job's content: opaque origin, never the portal's
        else:
            resp.headers.setdefault("X-Content-Type-Options", "nosniff")
            resp.headers.setdefault("X-Frame-Options", "DENY")
            resp.headers.setdefault("Referrer-Policy", "same-origin")
            if resp.mimetype == "text/html":
                resp.headers.setdefault(
                    "Content-Security-Policy",
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                    "frame-ancestors 'none'; form-action 'self'; base-uri 'self'")
        return resp
