"""``/api/teams/<team>/projects`` and ``/api/projects``: list, create, show, change, delete."""
from __future__ import annotations

from flask import jsonify, request

from ..data.bindings import parse_defaults, project_defaults
from ..http.context import MAX_PAGE, actor, db, fresh_db, int_arg, svc
from ..jobs import queries as job_queries
from ..jobs.push_options import JobSettings
from ..projects import service as projects_svc
from ..projects import settings as project_settings
from ..teams import access
from .core import ApiError, _body, _text, api, jobs_json
from .core import project_json as _project_json


def project_json(p, team_name: str, stats: dict | None = None) -> dict:
    """The API's project shape with its default input bindings (``{"input0": "T/N:V", ...}``)."""
    return dict(_project_json(p, team_name, stats), inputs=project_defaults(p))


def _inputs_kw(body: dict) -> dict:
    """``{"inputs": {...}}`` of a body, for the service (absent: keep the project's)."""
    value = body.get("inputs")
    if value is None:
        return {}
    if isinstance(value, str):  # a form field: the object as JSON text
        value = parse_defaults(value)
    if not isinstance(value, dict):
        raise ApiError(400, 'inputs must be an object such as {"input0": "vision/cifar-100:2"}')
    return {"inputs": value}


def _compute_kw(body: dict) -> dict:
    """``{"compute_type": "a4000x2"}`` of a body for the service: a defined compute type's
    name, "" or null to clear it; absent: keep the project's."""
    if "compute_type" not in body:
        return {}
    value = body["compute_type"]
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ApiError(400, 'compute_type must be a compute type\'s name such as "a4000x2" '
                            '(or "" to clear it)')
    return {"compute_type": value}


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
    name = projects_svc.create_project(svc(), actor(), team, _text(body, "name"), st, **_inputs_kw(body),
                                       **_compute_kw(body))
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
    base = JobSettings(p.gpu_type, p.gpu_count, p.time_limit_min, p.image)
    st, problems = project_settings.parse_settings(svc(), gpus=body.get("gpus"), gpu_type=body.get("gpu_type"),
                                      gpu_count=body.get("gpu_count"), image=body.get("image"),
                                      time_text=body.get("time", body.get("time_limit_min")), base=base,
                                      from_json=request.is_json)
    if problems:
        raise ApiError(400, "; ".join(problems))
    projects_svc.update_settings(svc(), actor(), team, project, st, **_inputs_kw(body),
                                 **_compute_kw(body))
    s = fresh_db()
    p, _ = access.project_access(s, actor(), team, project)
    return jsonify({"ok": True, "project": project_json(p, team)})


@api.delete("/projects/<team>/<project>")
def delete_project(team: str, project: str):
    body = _body()
    confirm = str(body.get("confirm", request.args.get("confirm", "")))
    n = projects_svc.delete_project(svc(), actor(), team, project, confirm)
    return jsonify({"ok": True, "deleted": f"{team}/{project}", "jobs_deleted": n})
