"""``/api/workspaces`` and ``/api/workspace-policy`` (docs/WORKSPACES.md): open a workspace on a
project's branch, list, show, stop, restart; read and set the idle policy and caps. The service
layer (``portal.workspaces``) decides; this module reads bodies and answers its dictionaries."""
from __future__ import annotations

from flask import jsonify, request

from .. import inputs as input_types
from ..http.context import actor, db, svc
from ..teams import access
from ..workspaces import policy, queries, service
from .core import ApiError, _body, api

START_FIELDS = ("branch", "gpus", "cpus", "mem", "image", "time", "inputs")
# the body's names → the policy's fields
POLICY_FIELDS = {"idle": "idle_seconds", "idle_seconds": "idle_seconds", "remind": "remind_seconds",
                 "remind_seconds": "remind_seconds", "auto_stop": "auto_stop",
                 "max_per_user": "max_per_user", "max_gpus": "max_gpus"}


def _opt_text(body: dict, key: str) -> str | None:
    """An optional text field: a JSON string (a number is read as its text: ``"cpus": 4``)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ApiError(400, f"{key} must be a JSON string, got {input_types.json_type(value)}")
    return str(value).strip() or None


def _inputs(body: dict) -> dict[str, str] | None:
    value = body.get("inputs")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise ApiError(400, 'inputs must be an object of strings such as {"input0": "vision/cifar-100:2"}')
    return value


def _unknown(body: dict, known) -> None:
    extra = sorted(k for k in body if k not in known)
    if extra:
        raise ApiError(400, f"unknown field(s) {', '.join(map(repr, extra))[:200]}; known: "
                            f"{', '.join(known)}")


@api.post("/projects/<team>/<project>/workspaces")
def start_workspace(team: str, project: str):
    me = actor()
    access.project_access(db(), me, team, project)  # outsiders: 404 before the body is read
    body = _body()
    _unknown(body, START_FIELDS)
    gpus, cpus = _opt_text(body, "gpus"), _opt_text(body, "cpus")
    if cpus and not gpus:
        gpus = "none"  # cores and memory, no GPU (docs/WORKSPACES.md, Compute)
    job_id, message = service.start_workspace(
        svc(), me, team, project, branch=_opt_text(body, "branch") or "", gpus=gpus, cpus=cpus,
        mem=_opt_text(body, "mem"), image=_opt_text(body, "image"), time=_opt_text(body, "time"),
        inputs=_inputs(body))
    return jsonify({"ok": True, "workspace": queries.show_workspace(svc(), me, job_id),
                    "message": message}), 201


@api.get("/workspaces")
def workspaces():
    team = request.args.get("team", "").strip() or None
    active = request.args.get("active", "").strip().lower() in ("1", "true", "yes")
    rows = queries.list_workspaces(svc(), actor(), team, active_only=active)
    return jsonify({"ok": True, "workspaces": rows})


@api.get("/workspaces/<int:job_id>")
def workspace(job_id: int):
    resp = jsonify({"ok": True, "workspace": queries.show_workspace(svc(), actor(), job_id)})
    resp.headers["Cache-Control"] = "no-store"
    return resp


@api.post("/workspaces/<int:job_id>/stop")
def stop_workspace(job_id: int):
    me = actor()
    message = service.stop_workspace(svc(), me, job_id)
    return jsonify({"ok": True, "workspace": queries.show_workspace(svc(), me, job_id),
                    "message": message})


@api.post("/workspaces/<int:job_id>/restart")
def restart_workspace(job_id: int):
    me = actor()
    new_id, message = service.restart_workspace(svc(), me, job_id)
    return jsonify({"ok": True, "workspace": queries.show_workspace(svc(), me, new_id),
                    "restart_of": job_id, "message": message}), 201


@api.get("/workspace-policy")
def workspace_policy():
    team = request.args.get("team", "").strip() or None
    return jsonify({"ok": True, "policy": policy.show_policy(svc(), actor(), team)})


@api.put("/workspace-policy")
def set_workspace_policy():
    team = request.args.get("team", "").strip() or None
    body = _body()
    _unknown(body, tuple(POLICY_FIELDS))
    values = {POLICY_FIELDS[k]: v for k, v in body.items()}
    if not values:
        raise ApiError(400, f"nothing to set; give any of {', '.join(('idle', 'remind', 'auto_stop', 'max_per_user', 'max_gpus'))}")
    return jsonify({"ok": True, "policy": policy.set_policy(svc(), actor(), team, values)})
