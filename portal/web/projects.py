"""Project page: remote URL + commands, settings (next job), recent jobs, storage, delete."""
from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_login import login_required

from ..data import bindings
from ..data.names import INPUT_SLOTS
from ..jobs.push_options import PUSH_OPTIONS_HELP, JobSettings
from ..jobs import queries as job_queries
from ..policy import compute as compute_types
from ..projects import service as projects_svc
from ..projects import settings as project_settings
from ..teams import access
from .common import actor, back, db, int_arg, raise_http, svc

bp = Blueprint("projects", __name__)


def _project(team: str, project: str, roles=access.ROLE_ANY, what="see this"):
    try:
        return access.project_access(db(), actor(), team, project, roles, what)
    except access.OpError as exc:
        raise_http(exc)


def _render(team: str, project: str, *, problems=None, form=None, status=200):
    p, role = _project(team, project)
    s = db()
    jobs, next_before = job_queries.list_job_rows(s, limit=20, project_id=p.id, before=int_arg("before"))
    cfg = svc().config
    return render_template(
        "project.html", project=p, team=p.team, role=role, jobs=jobs, next_before=next_before,
        remote=cfg.repo_url(team, project), storage=projects_svc.storage_bytes(svc(), team, project),
        gpu_limits=cfg.gpu_limits, images=list(svc().catalog.names), problems=problems or [],
        form=form or {}, inputs=bindings.project_defaults(p), input_slots=range(INPUT_SLOTS),
        can_admin=actor().is_cluster_admin or role in access.ROLE_ADMIN,
        compute_types=compute_types.list_types(svc()),
        push_options=PUSH_OPTIONS_HELP), status


@bp.get("/projects/<team>/<project>")
@login_required
def show(team: str, project: str):
    return _render(team, project)


@bp.post("/projects/<team>/<project>/settings")
@login_required
def settings(team: str, project: str):
    p, _ = _project(team, project, access.ROLE_ANY, "change settings")
    base = JobSettings(p.gpu_type, p.gpu_count, p.time_limit_min, p.image)
    f = request.form
    st, problems = project_settings.parse_settings(svc(), gpu_type=f.get("gpu_type"), gpu_count=f.get("gpu_count"),
                                      image=f.get("image"), time_text=f.get("time"), base=base)
    if problems:
        return _render(team, project, problems=problems, form=dict(f), status=400)
    # default input bindings: input0..input4 -> text; an empty text drops that slot
    inputs = {f"input{i}": f.get(f"input{i}", "").strip() for i in range(INPUT_SLOTS)}
    # the default compute type: a defined type's name, "" for none; a form without the field keeps it
    compute = f.get("compute_type")
    try:
        projects_svc.update_settings(svc(), actor(), team, project, st, inputs=inputs,
                                     compute_type=compute.strip() if compute is not None else None)
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return _render(team, project, problems=[str(exc)], form=dict(f), status=exc.status)
    return back("projects.show", "Settings saved; they apply to the next job.", team=team, project=project)


@bp.post("/projects/<team>/<project>/delete")
@login_required
def delete(team: str, project: str):
    _project(team, project, access.ROLE_ADMIN, "delete projects")
    try:
        n = projects_svc.delete_project(svc(), actor(), team, project, request.form.get("confirm", ""))
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return back("projects.show", str(exc), "error", team=team, project=project)
    return back("teams.show", f"Project {team}/{project} deleted with its repository and {n} job(s).",
                team=team)
