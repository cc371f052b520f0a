"""``create_app(services)`` — the Flask app on Services that ``portal.bootstrap`` built (the one
wiring point: config → dirs/secrets → database (migrated) → adapters → Services):

* ``/git/…``                      git_gateway's GitHttpApp (smart HTTP + LFS), via a dispatcher;
* ``POST /internal/hooks``        pre/post-receive callbacks (``X-Slipway-Hook-Secret``) → jobs.push;
* ``POST /internal/jobs/<id>/events``  runner events (``Authorization: Bearer <job token>``);
* ``/``                           the dashboard (anonymous: redirect to ``/login``);
* pages (``portal.web``: login, dashboard, teams, billing, projects, jobs + live log + proxy,
  tokens; ``portal.web.init_web``) and the JSON API under ``/api/`` (``portal.api``);
* ``/healthz``                    JSON health.

Tests pass Services from ``tests.support.fakes.make_services`` (bootstrap with in-memory
adapters); ``start_reconciler=True`` (used by ``slipway serve``) also starts the reconciler thread.
"""
from __future__ import annotations

import hmac
import logging
import time

from flask import Blueprint, Flask, current_app, jsonify, request
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import text
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.proxy_fix import ProxyFix

from . import __version__
from . import integrations as ig
from .api import api
from .bootstrap import bootstrap
from .http import params
from .identity.tokens import make_authenticate
from .jobs import push, service
from .jobs.reconciler import Reconciler
from .private_files import set_process_umask
from .services import Services, log
from .web import init_web
from .web.admission import AdmissionMiddleware

internal = Blueprint("internal", __name__)
pages = Blueprint("pages", __name__)


def services() -> Services:
    return current_app.extensions["slipway"]


def _reply(ok: bool, messages: list[str], status: int = 200):
    """JSON, or for hooks that ask for text: ``ok``/``refused``, then a message per line."""
    if request.headers.get("Accept") == "text/plain":
        lines = ["ok" if ok else "refused"] + [line for m in messages for line in str(m).splitlines()]
        return "\n".join(lines) + "\n", status, {"Content-Type": "text/plain; charset=utf-8"}
    return jsonify({"ok": ok, "messages": messages}), status


def _json_object() -> tuple[dict | None, str]:
    """The body as a JSON object, bounded in size and nesting depth (never RecursionError), or
    (None, why)."""
    try:
        data = ig.loads_json_bounded(request.get_data(cache=True), max_bytes=16 * 1024 * 1024)
    except ValueError as exc:
        return None, str(exc)
    return (data, "") if isinstance(data, dict) else (None, f"got {type(data).__name__}")


@internal.post("/internal/hooks")
def hooks():
    svc = services()
    given = request.headers.get("X-Slipway-Hook-Secret", "")
    if not given or not hmac.compare_digest(given, svc.config.hook_secret):
        return _reply(False, ["slipway: hook secret mismatch; the repository's hooks are not "
                              "Slipway's or the server was reconfigured"], 403)
    if request.mimetype == ig.HOOK_TEXT_TYPE:   # the bash hook's text form (git_gateway.hook_wire)
        try:
            payload, problems = ig.parse_hook_text(request.get_data(cache=False))
        except ValueError as exc:
            return _reply(False, [f"slipway: hook payload is malformed ({exc})"], 400)
        if problems and payload["phase"] == "pre-receive":
            return _reply(False, problems)
    else:
        payload, why = _json_object()
        if payload is None:
            return _reply(False, [f"slipway: hook payload is not a JSON object ({why})"], 400)
    return _reply(*hook_reply(svc, payload))


def hook_reply(svc: Services, payload: dict) -> tuple[bool, list[str], int]:
    """A hook callback's answer: (ok, messages, HTTP status). Both doors use it: the web
    endpoint above and the git gateway's own hook listener (``git_gateway.hook_listener``)."""
    phase = payload.get("phase")
    started = time.perf_counter()
    try:
        if phase == "pre-receive":
            reply = push.handle_pre_receive(svc, payload)
        elif phase == "post-receive":
            reply = push.handle_post_receive(svc, payload)
        elif phase == "pre-check":   # the gateway read the push's request: checks made ahead
            push.precheck(svc, payload)
            return True, [], 200
        else:
            return False, [f"slipway: unknown hook phase {phase!r}"], 400
    except push.HookError as exc:
        return False, [f"slipway: {exc}"], 400
    except Exception:  # noqa: BLE001
        log.exception("hook %s failed", phase)
        return False, ["slipway: internal error in Slipway; the push was not accepted"
                       if phase == "pre-receive" else "slipway: internal error in Slipway"], 500
    log.info("hook %s for %s: %s in %.1f ms", phase, payload.get("repo"), "ok" if reply.ok else "refused",
             (time.perf_counter() - started) * 1000)
    return reply.ok, list(reply.messages), 200


@internal.post("/internal/jobs/<int:job_id>/events")
def job_events(job_id: int):
    svc = services()
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return jsonify({"ok": False, "error": "missing bearer token"}), 401
    with svc.db.session() as s:
        job = service.check_job_token(s, job_id, token.strip(), now=svc.now())
    if job is None:
        return jsonify({"ok": False, "error": "bad token for this job"}), 403
    event, why = _json_object()
    if event is None:
        return jsonify({"ok": False, "error": f"event must be a JSON object ({why})"}), 400
    try:
        state = service.apply_event(svc, job_id, event)
    except service.JobError as exc:
        return jsonify({"ok": False, "error": str(exc)}), 400
    return jsonify({"ok": True, "state": state})


@pages.get("/healthz")
def healthz():
    svc = services()
    db_ok = True
    try:
        with svc.db.session() as s:
            s.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001
        db_ok = False
    return jsonify({"ok": db_ok, "db": db_ok, "version": __version__,
                    "cluster": svc.config.cluster_name}), (200 if db_ok else 503)


def _git_unavailable(environ, start_response):
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"git gateway unavailable\n"]


def create_app(services: Services | None = None, *, start_reconciler: bool = False) -> Flask:
    """The Flask app on ``services``; without them, on ``bootstrap()`` (the configuration from
    the environment and its file)."""
    # The server and its reconciler create private files only (database, secrets, repositories:
    # portal/private_files.py); what job users must read is opened up explicitly.
    set_process_umask()
    svc = services or bootstrap()
    app = Flask("portal")
    params.install(app)  # bounded <int:...> (1 … 2^63-1) for every route; before any blueprint
    app.config.update(SECRET_KEY=svc.config.secret_key, MAX_CONTENT_LENGTH=16 * 1024 * 1024,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    app.extensions["slipway"] = svc
    csrf = CSRFProtect(app)
    csrf.exempt(internal)
    app.register_blueprint(internal)
    app.register_blueprint(pages)
    # login manager, page blueprints, secure cookie settings, error pages
    init_web(app, csrf)
    app.register_blueprint(api)
    csrf.exempt(api)  # token-auth API; session-auth writes are checked in api.before_request

    try:
        git_app = ig.make_git_app(svc.config, make_authenticate(svc),
                                  hooks=lambda payload: hook_reply(svc, payload))
    except ImportError:  # git_gateway.http missing
        logging.getLogger("slipway").error("git gateway not available; /git answers 503")
        git_app = _git_unavailable
    # pages, API and static files first come first served, a few at a time (git is outside)
    app.wsgi_app = AdmissionMiddleware(app.wsgi_app, svc.config.page_slots or None)  # type: ignore[method-assign]
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/git": git_app})  # type: ignore[method-assign]
    if svc.config.trusted_proxies > 0:  # behind nginx & co: the client's address, not the proxy's
        n = svc.config.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]

    if start_reconciler:
        thread, stop = Reconciler(svc).start_thread()
        app.extensions["slipway_reconciler"] = (thread, stop)
    return app
