"""The API's core: the blueprint, authentication (Bearer or Basic access token, or the browser
session with CSRF), error answers, bounded bodies and the JSON of Slipway's objects."""
from __future__ import annotations

import base64
import binascii

from flask import Blueprint, current_app, g, jsonify, request
from flask_login import current_user

from .. import inputs
from .. import presenters as serialize
from ..billing import queries as billing_q
from ..db import Job, LedgerEntry, Project, Team
from ..http import params
from ..http.context import WebUser, svc
from ..identity import user_tokens
from ..identity.tokens import verify_token
from ..jobs.runner_spec import log_path
from ..teams import access
from ..teams import service as teams_svc

api = Blueprint("api", __name__, url_prefix="/api")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@api.errorhandler(access.OpError)
def _op_error(exc: access.OpError):
    return jsonify({"ok": False, "error": str(exc)}), exc.status


@api.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return jsonify({"ok": False, "error": str(exc)}), exc.status


@api.before_request
def _authenticate():
    auth = request.headers.get("Authorization", "")
    scheme, _, cred = auth.partition(" ")
    cred = cred.strip()
    if scheme.lower() == "bearer" and cred:
        with svc().db.transaction() as s:
            user = user_tokens.user_by_bearer(s, cred, now=svc().now())
            info = (user.id, user.name, bool(user.is_cluster_admin), user.email) if user else None
        if info is None:
            return jsonify({"ok": False, "error": "invalid or revoked access token"}), 401
        g.api_user = WebUser(*info)
        return None
    if scheme.lower() == "basic" and cred:
        try:
            username, _, token = base64.b64decode(cred).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return jsonify({"ok": False, "error": "malformed Basic credentials"}), 401
        with svc().db.transaction() as s:
            user = verify_token(s, username, token, now=svc().now())
            info = (user.id, user.name, bool(user.is_cluster_admin), user.email) \
                if user is not None and user.active else None
        if info is None:
            return jsonify({"ok": False, "error": "invalid user name or access token"}), 401
        g.api_user = WebUser(*info)
        return None
    if current_user.is_authenticated:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            csrf = current_app.extensions.get("slipway_csrf")
            if csrf is not None:
                csrf.protect()  # session-authenticated writes need the CSRF header
        g.api_user = current_user
        return None
    return jsonify({"ok": False, "error": "authentication required: send 'Authorization: Bearer "
                                          "<access token>' (create one on the Tokens page)"}), 401


def _body() -> dict:
    """A JSON object (``Content-Type: application/json``; bounded size and depth, malformed: 400)
    or form fields; no body: {}."""
    if request.is_json and request.content_length != 0 and request.get_data(cache=True):
        data = params.json_body()
    else:
        data = request.form.to_dict() if request.form else {}
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _text(body: dict, key: str) -> str:
    """A text field: a JSON string (absent: ""); a number, boolean, list… answers 400."""
    value = body.get(key, "")
    if not isinstance(value, str):
        raise ApiError(400, f"{key} must be a JSON string, got {inputs.json_type(value)}")
    return value


_iso = serialize.iso


def team_json(team: Team, role: str | None, balance) -> dict:
    return {"name": team.name, "personal": team.personal, "role": role, "balance": str(balance),
            "slurm_account": svc().config.slurm_account(team.name), "created_at": _iso(team.created_at)}


def project_json(p: Project, team_name: str, stats: dict | None = None) -> dict:
    return serialize.project_dict(p, team_name, svc().config.repo_url(team_name, p.name), stats)


def job_json(j: Job, project: str, team: str, pusher: str | None = None) -> dict:
    return serialize.job_dict(j, project, team, pusher=pusher, log=str(log_path(svc(), j.id)),
                              shards_of=svc().config.shards_of)


def jobs_json(s, rows) -> list[dict]:
    """Job rows of ``job_queries.list_jobs`` with their pushers' names (one query for all of them)."""
    names = teams_svc.user_names(s, {j.pusher_id for j, _pn, _tn in rows if j.pusher_id})
    return [job_json(j, pn, tn, names.get(j.pusher_id)) for j, pn, tn in rows]


def entry_json(e: LedgerEntry) -> dict:
    return serialize.entry_dict(e, billing_q.describe_entry(e))


