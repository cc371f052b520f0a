"""Slipway's JSON API under ``/api/``.

Auth: ``Authorization: Bearer <access token>`` (a personal access token, ``slipway token
create`` or the Tokens page), or ``Authorization: Basic user:token``, or the browser session
(then writes need the ``X-CSRFToken`` header). Errors: ``{"ok": false, "error": "…"}`` with
401 (no/bad credentials), 403 (member lacking the role), 404 (unknown — or another team's),
400 (bad input), 409 (conflict: exists already, job already ended, active jobs).

Same operations and permission rules as the pages (the service layer, ``portal.teams.access``).
"""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request
from flask_login import current_user

from ..billing import funds as funds_mod
from .. import integrations as ig
from ..db import Job, LedgerEntry, Project, Team
from ..jobs import launch
from ..web import params
from ..billing import queries as billing_q
from ..identity import user_tokens
from .. import inputs
from ..jobs import actions as job_actions
from ..jobs import queries as job_queries
from ..projects import service as projects_svc
from ..projects import settings as project_settings
from ..teams import access
from ..teams import service as teams_svc
from ..web.common import MAX_PAGE, WebUser, actor, db, fresh_db, int_arg, svc
from . import serialize

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
        import base64
        import binascii

        from ..identity.tokens import verify_token
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
    return serialize.job_dict(j, project, team, pusher=pusher, log=str(launch.log_path(svc(), j.id)))


def jobs_json(s, rows) -> list[dict]:
    """Job rows of ``job_queries.list_jobs`` with their pushers' names (one query for all of them)."""
    names = teams_svc.user_names(s, {j.pusher_id for j, _pn, _tn in rows if j.pusher_id})
    return [job_json(j, pn, tn, names.get(j.pusher_id)) for j, pn, tn in rows]


def entry_json(e: LedgerEntry) -> dict:
    return serialize.entry_dict(e, billing_q.describe_entry(e))


# -------------------------------------------------------------------------------- teams

@api.get("/teams")
def teams():
    rows = teams_svc.my_teams(db(), actor())
    return jsonify({"ok": True, "teams": [dict(team_json(r["team"], r["role"], r["balance"]),
                                               projects=r["projects"]) for r in rows]})


@api.get("/teams/<team>")
def team(team: str):
    s = db()
    t, role = access.team_access(s, actor(), team)
    members = [{"user": u.name, "role": m.role} for u, m in teams_svc.members(s, t)]
    return jsonify({"ok": True, "team": dict(team_json(t, role, teams_svc.balances_for(s, [t.id])[t.id]),
                                             members=members)})


@api.get("/teams/<team>/ledger")
def ledger(team: str):
    s = db()
    t, _ = access.team_access(s, actor(), team, access.ROLE_ADMIN, "see the ledger")
    limit = max(1, min(int_arg("limit", 100) or 100, 1000))
    rows, nxt = billing_q.ledger_page(s, t, before=int_arg("before"), limit=limit)
    return jsonify({"ok": True, "balance": str(teams_svc.balances_for(s, [t.id])[t.id]),
                    "entries": [entry_json(e) for e in rows], "next_before": nxt})


@api.post("/teams/<team>/funds")
def funds(team: str):
    """Credit the team: cluster administrators only (403 for everybody else: request funds)."""
    body = _body()
    # the values as sent: a JSON float amount or a non-text note is refused, not guessed
    amount = billing_q.add_funds(svc(), actor(), team, body.get("amount", ""), body.get("note", ""))
    s = fresh_db()
    t, _ = access.team_access(s, actor(), team)
    return jsonify({"ok": True, "added": str(amount), "balance": str(teams_svc.balances_for(s, [t.id])[t.id])}), 201


# ------------------------------------------------------------------------- fund requests

def _fund_request(view) -> dict:
    return dict(view.as_dict(), amount_text=ig.format_usd(view.amount))


@api.post("/teams/<team>/fund-requests")
def request_funds(team: str):
    """Team administrators and owners: ``{"amount": "25.00", "note": "…"}`` -> a pending request."""
    body = _body()
    view = funds_mod.request_funds(svc(), actor(), team, body.get("amount", ""), body.get("note", ""))
    return jsonify({"ok": True, "fund_request": _fund_request(view)}), 201


@api.get("/teams/<team>/fund-requests")
def team_fund_requests(team: str):
    limit = max(1, min(int_arg("limit", 50) or 50, 500))
    rows = funds_mod.team_requests(db(), actor(), team, state=request.args.get("state") or None, limit=limit)
    return jsonify({"ok": True, "fund_requests": [_fund_request(v) for v in rows]})


@api.get("/fund-requests")
def fund_requests():
    """``?state=pending`` (default; ``all`` for every state), oldest first: every team's for
    cluster administrators, else those of the teams the caller administers; ``?team=T``."""
    rows = funds_mod.list_requests(db(), actor(), state=request.args.get("state", "pending"),
                                   team_name=request.args.get("team", "").strip() or None,
                                   limit=max(1, min(int_arg("limit", 100) or 100, 1000)))
    return jsonify({"ok": True, "fund_requests": [_fund_request(v) for v in rows]})


@api.get("/fund-requests/<int:request_id>")
def fund_request(request_id: int):
    return jsonify({"ok": True, "fund_request": _fund_request(funds_mod.get_request(db(), actor(), request_id))})


@api.post("/fund-requests/<int:request_id>/<action>")
def decide_fund_request(request_id: int, action: str):
    """``approve`` (``{"note": …}`` optional) and ``decline`` (``{"note": "reason"}``): cluster
    administrators; ``cancel``: the requesting team's administrators and owners."""
    body = _body()
    if action == "approve":
        view = funds_mod.approve(svc(), actor(), request_id, body.get("note", ""))
    elif action == "decline":
        view = funds_mod.decline(svc(), actor(), request_id, body.get("note", ""))
    elif action == "cancel":
        view = funds_mod.cancel(svc(), actor(), request_id)
    else:
        raise ApiError(404, f"unknown action {action!r}: approve, decline or cancel")
    return jsonify({"ok": True, "fund_request": _fund_request(view)})


@api.get("/teams/<team>/projects")
def projects(team: str):
    s = db()
    t, _ = access.team_access(s, actor(), team)
    per = max(1, min(int_arg("per_page", 100) or 100, 500))
    page = projects_svc.project_page(s, t, q=request.args.get("q", ""), page=int_arg("page", 1, hi=MAX_PAGE) or 1,
                           per_page=per)
    return jsonify({"ok": True, "projects": [project_json(p, t.name, page["stats"].get(p.id, {}))
                                             for p in page["projects"]],
                    "page": page["page"], "pages": page["pages"], "total": page["total"]})


@api.post("/teams/<team>/projects")
def create_project(team: str):
    body = _body()
    access.team_access(db(), actor(), team, access.ROLE_ADMIN, "create projects")
    st, problems = project_settings.parse_settings(svc(), gpus=body.get("gpus"), gpu_type=body.get("gpu_type"),
                                      gpu_count=body.get("gpu_count"), image=body.get("image"),
                                      time_text=body.get("time", body.get("time_limit_min")),
                                      from_json=request.is_json)
    if problems:
        raise ApiError(400, "; ".join(problems))
    name = projects_svc.create_project(svc(), actor(), team, _text(body, "name"), st)
    s = fresh_db()
    p, _ = access.project_access(s, actor(), team, name)
    return jsonify({"ok": True, "project": project_json(p, team)}), 201


# ----------------------------------------------------------------------------- projects

@api.get("/projects")
def all_projects():
    """Projects of the caller's teams (cluster admins: every team), by team and name, with job
    counts; ``?team=T`` for one team."""
    me, s = actor(), db()
    team_name = request.args.get("team", "").strip()
    team_ids = access.visible_team_ids(s, me, team_name)
    rows = projects_svc.projects_with_stats(s, team_ids)
    return jsonify({"ok": True, "projects": [project_json(p, tn, st) for p, tn, st in rows]})


@api.get("/projects/<team>/<project>")
def project(team: str, project: str):
    s = db()
    p, _ = access.project_access(s, actor(), team, project)
    jobs, _ = job_queries.list_jobs(s, limit=20, project_id=p.id)
    d = project_json(p, team, projects_svc.project_stats(s, p.id))
    d["storage_bytes"] = projects_svc.storage_bytes(svc(), team, project)
    d["recent_jobs"] = jobs_json(s, jobs)
    return jsonify({"ok": True, "project": d})


@api.patch("/projects/<team>/<project>")
def update_project(team: str, project: str):
    body = _body()
    s = db()
    p, _ = access.project_access(s, actor(), team, project, access.ROLE_ANY, "change settings")
    base = launch.JobSettings(p.gpu_type, p.gpu_count, p.time_limit_min, p.image)
    st, problems = project_settings.parse_settings(svc(), gpus=body.get("gpus"), gpu_type=body.get("gpu_type"),
                                      gpu_count=body.get("gpu_count"), image=body.get("image"),
                                      time_text=body.get("time", body.get("time_limit_min")), base=base,
                                      from_json=request.is_json)
    if problems:
        raise ApiError(400, "; ".join(problems))
    projects_svc.update_settings(svc(), actor(), team, project, st)
    s = fresh_db()
    p, _ = access.project_access(s, actor(), team, project)
    return jsonify({"ok": True, "project": project_json(p, team)})


@api.delete("/projects/<team>/<project>")
def delete_project(team: str, project: str):
    body = _body()
    confirm = str(body.get("confirm", request.args.get("confirm", "")))
    n = projects_svc.delete_project(svc(), actor(), team, project, confirm)
    return jsonify({"ok": True, "deleted": f"{team}/{project}", "jobs_deleted": n})


# --------------------------------------------------------------------------------- jobs

@api.get("/jobs")
def jobs():
    me = actor()
    s = db()
    team_name = request.args.get("team", "").strip()
    team_ids = access.visible_team_ids(s, me, team_name)
    project_id = None
    if request.args.get("project"):
        if not team_name:
            raise ApiError(400, "name the team too: ?team=T&project=P")
        p, _ = access.project_access(s, me, team_name, request.args["project"])
        project_id = p.id
    limit = max(1, min(int_arg("limit", 50) or 50, 500))
    rows, nxt = job_queries.list_jobs(s, limit=limit, team_ids=team_ids, project_id=project_id,
                              state=request.args.get("state") or None, before=int_arg("before"),
                              branch=request.args.get("branch") or None)
    return jsonify({"ok": True, "jobs": jobs_json(s, rows), "next_before": nxt})


@api.get("/jobs/<int:job_id>")
def job(job_id: int):
    s = db()
    j, p, t, role = access.job_access(s, actor(), job_id)
    d = job_json(j, p.name, t.name, teams_svc.user_names(s, {j.pusher_id}).get(j.pusher_id))
    d["can_cancel"] = access.can_cancel(actor(), j, role) and j.state not in ("succeeded", "failed", "cancelled")
    return jsonify({"ok": True, "job": d})


@api.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int):
    r = job_actions.cancel_job(svc(), actor(), job_id)
    return jsonify({"ok": True, "job": r.job_id, "state": r.state, "message": r.message})


@api.post("/jobs/<int:job_id>/rerun")
def rerun(job_id: int):
    """Run the job again at its branch's current tip with its settings (``jobs.rerun``)."""
    new_id, message = job_actions.rerun_job(svc(), actor(), job_id)
    new = fresh_db().get(Job, new_id)
    state = new.state if new is not None else None
    return jsonify({"ok": True, "job": new_id, "rerun_of": job_id, "state": state,
                    "message": message})


@api.delete("/jobs/<int:job_id>")
def delete_job(job_id: int):
    """An ENDED job's results ref, log and directory, and its row (team admins/owners, cluster
    admins); ``{"confirm": "<job id>"}`` (or ``?confirm=``) is required; the ledger stays."""
    body = _body()
    confirm = str(body.get("confirm", request.args.get("confirm", "")))
    r = job_actions.delete_job(svc(), actor(), job_id, confirm)
    return jsonify({"ok": True, "deleted": r.job_id, "refs_removed": list(r.refs_removed),
                    "message": r.message})


@api.get("/jobs/<int:job_id>/log")
def log(job_id: int):
    j, _p, _t, _ = access.job_access(db(), actor(), job_id)
    limit = max(1, min(int_arg("limit", 256 * 1024) or 256 * 1024, 1024 * 1024))
    chunk = job_queries.job_log_chunk(svc(), job_id, int_arg("offset", 0) or 0, limit)
    chunk.update(ok=True, state=j.state, terminal=j.state in ("succeeded", "failed", "cancelled"),
                 reason=j.reason, exit_code=j.exit_code, node=j.node, cost=str(j.cost),
                 cost_text=ig.format_usd(j.cost))
    resp = jsonify(chunk)
    resp.headers["Cache-Control"] = "no-store"
    return resp


# ------------------------------------------------------------------------------- tokens

@api.get("/tokens")
def tokens():
    return jsonify({"ok": True, "tokens": [
        serialize.token_dict(t)
        for t in user_tokens.list_tokens(db(), actor(), request.args.get("user", "").strip() or None)]})


@api.post("/tokens")
def create_token():
    body = _body()
    tid, token = user_tokens.create_token(svc(), actor(), _text(body, "name"))
    resp = jsonify({"ok": True, "id": tid, "token": token,
                    "note": "shown once; use it as the git password or the API bearer token"})
    resp.headers["Cache-Control"] = "no-store"
    return resp, 201


@api.delete("/tokens/<int:token_id>")
def revoke_token(token_id: int):
    user_tokens.revoke_token(svc(), actor(), token_id)
    return jsonify({"ok": True, "revoked": token_id})

