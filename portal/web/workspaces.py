"""Workspaces' pages (docs/WORKSPACES.md): the project page's "Open workspace" form, the list of
my workspaces, a workspace's page (state, cost so far, "Open JupyterLab", stop, restart, idle
policy), and the idle-reminder banner every page of a logged-in user shows. The rules are the
service layer's (``portal.workspaces``); this module parses forms and presents."""
from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_login import current_user, login_required

from ..data.names import INPUT_SLOTS
from ..jobs import states
from ..teams import access
from ..workspaces import idle, queries, service
from .common import actor, back, db, raise_http, svc

bp = Blueprint("workspaces", __name__)


@bp.app_context_processor
def _reminders() -> dict:
    """The banner of every page: the user's reminded (idle) workspaces — one query."""
    if not current_user.is_authenticated:
        return {}
    return {"workspace_reminders": idle.reminders_for(svc(), current_user.id)}


def seconds_text(seconds) -> str:
    """3600 → "60 minutes", 90 → "90 seconds", 0 → "0 seconds"."""
    seconds = int(seconds or 0)
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


def compute_text(d: dict) -> str:
    if d.get("gpu_type") in ("cpu", "none"):  # CPU only: gpu_count is the cores
        n = d.get("gpu_count") or 1
        return f"CPU only, {n} core{'' if n == 1 else 's'}"
    return f"{d['gpu_type']} × {d['gpu_count']}"


def _sentence(message: str) -> str:
    message = message.strip()
    return message[:1].upper() + message[1:] + ("" if message.endswith((".", "!", "?")) else ".")


def form_compute(f) -> tuple[str | None, str | None, str | None]:
    """(gpus, cpus, mem) of the "Open workspace" form: a GPU type with a count, or "cpu" with
    cores and memory (``gpus=none``); nothing chosen: the project's GPUs."""
    compute = (f.get("compute") or "").strip()
    if compute == "cpu":
        return "none", (f.get("cpus") or "").strip() or None, (f.get("mem") or "").strip() or None
    if not compute:
        return None, None, None
    return f"{compute}:{(f.get('gpu_count') or '').strip() or '1'}", None, None


@bp.post("/projects/<team>/<project>/workspaces")
@login_required
def start(team: str, project: str):
    me = actor()
    try:  # outsiders learn nothing, whatever the form says
        access.project_access(db(), me, team, project)
    except access.OpError as exc:
        raise_http(exc)
    f = request.form
    gpus, cpus, mem = form_compute(f)
    inputs = {f"input{i}": f.get(f"input{i}", "").strip() for i in range(INPUT_SLOTS)
              if f"input{i}" in f}
    try:
        job_id, message = service.start_workspace(
            svc(), me, team, project, branch=f.get("branch", ""), gpus=gpus, cpus=cpus, mem=mem,
            image=(f.get("image") or "").strip() or None, time=(f.get("time") or "").strip() or None,
            inputs=inputs)
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return back("projects.show", str(exc), "error", team=team, project=project)
    return back("workspaces.show", _sentence(message), job_id=job_id)


@bp.get("/workspaces")
@login_required
def index():
    team = request.args.get("team", "").strip() or None
    try:
        rows = queries.list_workspaces(svc(), actor(), team)
    except access.OpError as exc:
        raise_http(exc)
    rows.sort(key=lambda d: (not d["bills_while_open"], -d["id"]))  # open ones first
    return render_template("workspaces.html", workspaces=rows, team_name=team or "",
                           compute_text=compute_text)


@bp.get("/workspaces/<int:job_id>")
@login_required
def show(job_id: int):
    try:
        d = queries.show_workspace(svc(), actor(), job_id)
    except access.OpError as exc:
        raise_http(exc)
    pol = d.get("policy") or {}
    return render_template(
        "workspace.html", w=d, compute=compute_text(d),
        active=d["state"] in states.ACTIVE, ended=d["state"] in states.TERMINAL,
        idle_after=seconds_text(pol.get("idle_seconds")),
        remind_before=seconds_text(pol.get("remind_seconds")), auto_stop=pol.get("auto_stop", True))


@bp.post("/workspaces/<int:job_id>/stop")
@login_required
def stop(job_id: int):
    try:
        message = service.stop_workspace(svc(), actor(), job_id)
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return back("workspaces.show", str(exc), "error", job_id=job_id)
    return back("workspaces.show", _sentence(message), job_id=job_id)


@bp.post("/workspaces/<int:job_id>/restart")
@login_required
def restart(job_id: int):
    try:
        new_id, message = service.restart_workspace(svc(), actor(), job_id)
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return back("workspaces.show", str(exc), "error", job_id=job_id)
    return back("workspaces.show", _sentence(message), job_id=new_id)
