"""Jobs: list (my teams, filters, keyset pages), job page (live log via JS, inputs, kept /output,
a sweep's tasks and a multi-node job's nodes), cancel (the job, or one task of a sweep), a task's
page (its live log), run again, continue; the /output's downloads, deletion and turning it into
a data version."""
from __future__ import annotations

from flask import Blueprint, render_template, request, url_for
from flask_login import login_required

from ..data import bindings
from ..data import outputs as outputs_svc
from ..jobs import continuing, states
from ..jobs import actions as job_actions
from ..jobs import part_queries
from ..jobs import queries as job_queries
from ..monitoring import job_usage_view
from ..policy import grants, queue_admin
from ..teams import access
from .common import actor, back, db, fmt_duration, int_arg, raise_http, svc
from ..http.downloads import send_archive, send_path

bp = Blueprint("jobs", __name__)


@bp.get("/jobs")
@login_required
def index():
    me = actor()
    s = db()
    mine = access.my_team_pairs(s, me)  # one query for the team menu and the default filter
    teams = [name for _, name in mine]
    team_name = request.args.get("team", "").strip()
    state = request.args.get("state", "").strip()
    team_ids = None if me.is_cluster_admin else [tid for tid, _ in mine]
    member_of = {name: tid for tid, name in mine}
    if team_name and team_name in member_of:  # a member sees the team (team_access's rule)
        team_ids = [member_of[team_name]]
    elif team_name:
        try:
            t, _ = access.team_access(s, me, team_name)
        except access.OpError as exc:
            raise_http(exc)
        team_ids = [t.id]
    try:
        jobs, next_before = job_queries.list_job_rows(s, limit=50, team_ids=team_ids, state=state or None,
                                              before=int_arg("before"))
    except access.OpError as exc:
        raise_http(exc)
    return render_template("jobs.html", jobs=jobs, next_before=next_before, teams=teams,
                           team_name=team_name, state=state, states=states.STATES)


@bp.get("/jobs/<int:job_id>")
@login_required
def show(job_id: int):
    me = actor()
    try:
        job, project, team, role = access.job_access(db(), me, job_id)
    except access.OpError as exc:
        raise_http(exc)
    pusher = job.pusher.name if job.pusher_id and job.pusher else None
    now = svc().now()
    inputs = [dict(i, href=_input_href(i["label"])) for i in bindings.inputs_of(db(), job_id)]
    output, output_error = None, None
    if job.output_state != "none":
        try:
            output = outputs_svc.output_listing(svc(), me, job_id)
        except access.OpError as exc:
            output_error = str(exc)
    terminal = job.state in states.TERMINAL
    can_rerun = terminal and access.can_cancel(me, job, role)
    can_cancel = job.state in states.ACTIVE and access.can_cancel(me, job, role)
    parts = part_queries.detail_fields(svc(), db(), job)
    return render_template(
        "job.html", job=job, project=project, team=team, pusher=pusher,
        active=job.state in states.ACTIVE, terminal=terminal,
        can_cancel=can_cancel,
        # shapes (docs/SHARING.md): "2/8 of an a6000", a sweep's tasks, a multi-node job's nodes
        shape=parts["shape"], tasks=parts.get("tasks"), nodes=parts.get("nodes"),
        attempts=parts.get("attempts"),   # each run of a requeued job (docs/FAULTS.md §1)
        show_compute=parts["shape"]["kind"] != "single" or job.gpu_type.endswith("-shard"),
        can_cancel_tasks=can_cancel and not job.cancel_requested_at,
        can_delete=job_actions.can_delete_job(me, job, role),
        can_rerun=can_rerun,
        # the emergency checkbox: only for those holding the right (a user's or their team's grant)
        can_emergency=can_rerun and grants.holds_right(db(), me.id, team.id, now),
        position=queue_admin.position(svc(), job), got=_compute_text(job.gpu_type, job.gpu_count),
        inputs=inputs, output=output, output_error=output_error,
        can_admin=me.is_cluster_admin or role in access.ROLE_ADMIN,
        my_teams=access.my_team_names(db(), me),
        runtime=fmt_duration(job.started_at, job.ended_at, now),
        proxy_ok=job.state == states.RUNNING and bool(job.port and job.node),
        usage=job_usage_view.for_job(db(), job))   # CPU and memory over time (_job_usage.html)


@bp.post("/jobs/<int:job_id>/cancel")
@login_required
def cancel(job_id: int):
    try:
        r = job_actions.cancel_job(svc(), actor(), job_id)
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return back("jobs.show", str(exc), "error", job_id=job_id)
    return back("jobs.show", r.message, job_id=job_id)


@bp.get("/jobs/<int:job_id>/tasks/<int(min=0, max=2147483647):index>")
@login_required
def task(job_id: int, index: int):
    """One task of a sweep: its values, state, cost, results ref and live log."""
    me = actor()
    try:
        job, project, team, role = access.job_access(db(), me, job_id)
        part = part_queries.task_part(db(), job, index)
    except access.OpError as exc:
        raise_http(exc)
    t = part_queries.task_dict(job, part)
    return render_template(
        "job_task.html", job=job, project=project, team=team, task=t,
        can_cancel=t["active"] and job.state in states.ACTIVE and not job.cancel_requested_at
        and access.can_cancel(me, job, role))


@bp.post("/jobs/<int:job_id>/tasks/<int(min=0, max=2147483647):index>/cancel")
@login_required
def cancel_task(job_id: int, index: int):
    """Cancel one task of a sweep (the others go on); back to the page it was asked from."""
    to_task = request.form.get("next") == "task"
    try:
        r = job_actions.cancel_job(svc(), actor(), job_id, task=index)
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        if to_task:
            return back("jobs.task", str(exc), "error", job_id=job_id, index=index)
        return back("jobs.show", str(exc), "error", job_id=job_id)
    if to_task:
        return back("jobs.task", r.message, job_id=job_id, index=index)
    return back("jobs.show", r.message, job_id=job_id)


def _compute_text(gpu_type: str, gpu_count: int) -> str:
    """What a job got, written as ``jobs.asked`` writes what it asked: ``a4000 x4``, ``cpu x2``."""
    return f"{gpu_type} x{gpu_count}"


@bp.post("/jobs/<int:job_id>/rerun")
@login_required
def rerun(job_id: int):
    """Run an ended job again at its branch's current tip (``jobs.rerun``); the ``emergency``
    checkbox runs it as an emergency job (refused without the emergency right)."""
    emergency = request.form.get("emergency", "") in ("1", "on", "yes", "true")
    try:
        new_id, message = job_actions.rerun_job(svc(), actor(), job_id, emergency=emergency)
    except access.OpError as exc:
        if exc.status == 404:
            raise_http(exc)
        return back("jobs.show", str(exc), "error", job_id=job_id)
    return back("jobs.show", message, job_id=new_id)


@bp.post("/jobs/<int:job_id>/delete")
@login_required
def delete(job_id: int):
    """Delete an ended job (its results ref, log and directory); the ledger keeps its charges."""
    try:
        r = job_actions.delete_job(svc(), actor(), job_id, request.form.get("confirm", ""))
    except access.OpError as exc:
        raise_http(exc)  # its status (400 confirm, 403, 404, 409 still active) and why
    return back("jobs.index", r.message)


def _visible(job_id: int) -> None:
    """404 (the error page) unless the actor may see the job; the service checks the rest."""
    try:
        access.job_access(db(), actor(), job_id)
    except access.OpError as exc:
        raise_http(exc)


def _input_href(label: str) -> str | None:
    """The page of what a job bound: ``job:42`` or ``TEAM/NAME:N``."""
    kind, _, rest = label.partition(":")
    if kind == "job" and rest.isdigit():
        return url_for("jobs.show", job_id=int(rest))
    ref, _, number = label.rpartition(":")
    team, _, name = ref.partition("/")
    if team and name and number.isdigit() and int(number) > 0:
        return url_for("data.version", team=team, name=name, version=int(number))
    return None


@bp.post("/jobs/<int:job_id>/continue")
@login_required
def continue_(job_id: int):
    """A new job at this job's commit whose /output starts as a copy of this one's kept output."""
    _visible(job_id)
    try:
        new_id, message = continuing.continue_job(svc(), actor(), job_id)
    except access.OpError as exc:
        return back("jobs.show", str(exc), "error", job_id=job_id)
    return back("jobs.show", message, job_id=new_id)


@bp.get("/jobs/<int:job_id>/output/files/<path:path>")
@login_required
def output_file(job_id: int, path: str):
    try:
        p, size, filename = outputs_svc.output_file(svc(), actor(), job_id, path)
    except access.OpError as exc:
        raise_http(exc)
    return send_path(p, size, filename)


@bp.get("/jobs/<int:job_id>/output/archive")
@login_required
def output_archive(job_id: int):
    try:
        filename, chunks = outputs_svc.output_archive(svc(), actor(), job_id)
    except access.OpError as exc:
        raise_http(exc)
    return send_archive(filename, chunks)


@bp.post("/jobs/<int:job_id>/output/delete")
@login_required
def delete_output(job_id: int):
    _visible(job_id)
    try:
        outputs_svc.delete_output(svc(), actor(), job_id, request.form.get("confirm", ""))
    except access.OpError as exc:
        return back("jobs.show", str(exc), "error", job_id=job_id)
    return back("jobs.show", f"Job {job_id}'s /output deleted.", job_id=job_id)


@bp.post("/jobs/<int:job_id>/output/version")
@login_required
def output_version(job_id: int):
    """Make a new version of a data repository from the job's kept /output."""
    f = request.form
    team, name = f.get("team", "").strip(), f.get("name", "").strip()
    _visible(job_id)
    try:
        v = outputs_svc.version_from_job(svc(), actor(), job_id, team, name)
    except access.OpError as exc:
        return back("jobs.show", str(exc), "error", job_id=job_id)
    return back("data.version", f"Version {v['number']} of {v['team']}/{v['repo']} made from job "
                f"{job_id}'s /output.", team=v["team"], name=v["repo"], version=v["number"])
