"""``/api/jobs``: list, show (with a sweep's tasks and a multi-node job's nodes), cancel (the job,
or one task of a sweep), run again, delete, follow the log (the job's, or one task's)."""
from __future__ import annotations

from flask import jsonify, request

from .. import integrations as ig
from ..db import Job
from ..http.context import actor, db, fresh_db, int_arg, svc
from ..jobs import actions as job_actions
from ..jobs import part_queries
from ..jobs import queries as job_queries
from ..teams import access
from ..teams import service as teams_svc
from ..data import bindings
from .. import inputs
from .core import ApiError, _body, api, job_json, jobs_json

MAX_TASK = part_queries.MAX_TASK_INDEX


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
    d["inputs"] = bindings.inputs_of(s, j.id)
    d.update(part_queries.detail_fields(svc(), s, j))   # shape; tasks, nodes when it has them
    return jsonify({"ok": True, "job": d})


def task_number(value) -> int:
    """The ``task`` of a cancel: a whole number ≥ 0 (a JSON number, or digits from a form);
    anything else answers 400 (leaving ``task`` out cancels the whole job)."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TASK:
        return value
    shown = repr(value)[:40] if isinstance(value, (str, int, float)) and \
        not isinstance(value, bool) else inputs.json_type(value)
    raise ApiError(400, f"task must be a whole number from 0 (a task of the sweep), not {shown}; "
                        "leave it out to cancel the whole job")


@api.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int):
    """Cancel the job (a sweep: every task); ``{"task": i}`` cancels task i of a sweep only."""
    body = _body()
    task = task_number(body["task"]) if "task" in body else None
    r = job_actions.cancel_job(svc(), actor(), job_id, task=task)
    out = {"ok": True, "job": r.job_id, "state": r.state, "message": r.message}
    if task is not None:
        out["task"] = task
    return jsonify(out)


@api.post("/jobs/<int:job_id>/rerun")
def rerun(job_id: int):
    """Run the job again at its branch's current tip with its settings (``jobs.rerun``);
    ``{"emergency": true}`` runs it as an emergency job (only with the emergency right)."""
    emergency = _body().get("emergency", False)
    if isinstance(emergency, str):   # a form field
        emergency = {"true": True, "yes": True, "1": True, "on": True,
                     "false": False, "no": False, "0": False, "": False}.get(emergency.lower(), emergency)
    if not isinstance(emergency, bool):
        raise ApiError(400, "emergency must be true or false")
    new_id, message = job_actions.rerun_job(svc(), actor(), job_id, emergency=emergency)
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


@api.get("/jobs/<int:job_id>/tasks/<int(min=0, max=2147483647):index>/log")
def task_log(job_id: int, index: int):
    """Task ``index``'s log (same access as the job's log; 404 for a task the job does not
    have); ``state``/``terminal`` are the task's, ``job_state`` the sweep's."""
    s = db()
    j, _p, _t, _ = access.job_access(s, actor(), job_id)
    limit = max(1, min(int_arg("limit", 256 * 1024) or 256 * 1024, 1024 * 1024))
    chunk = part_queries.task_log_chunk(svc(), s, j, index, int_arg("offset", 0) or 0, limit)
    chunk["ok"] = True
    resp = jsonify(chunk)
    resp.headers["Cache-Control"] = "no-store"
    return resp
