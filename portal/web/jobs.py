"""Jobs: list (my teams, filters, keyset pages), job page (live log via JS), cancel, run again."""
from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_login import login_required

from ..jobs import states
from ..jobs import actions as job_actions
from ..jobs import queries as job_queries
from ..teams import access
from .common import actor, back, db, fmt_duration, int_arg, raise_http, svc

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
    return render_template(
        "job.html", job=job, project=project, team=team, pusher=pusher,
        active=job.state in states.ACTIVE, terminal=job.state in states.TERMINAL,
        can_cancel=job.state in states.ACTIVE and access.can_cancel(me, job, role),
        can_delete=job_actions.can_delete_job(me, job, role),
        can_rerun=job.state in states.TERMINAL and access.can_cancel(me, job, role),
        runtime=fmt_duration(job.started_at, job.ended_at, now),
        proxy_ok=job.state == states.RUNNING and bool(job.port and job.node))


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


@bp.post("/jobs/<int:job_id>/rerun")
@login_required
def rerun(job_id: int):
    """Run an ended job again at its branch's current tip (``jobs.rerun``)."""
    try:
        new_id, message = job_actions.rerun_job(svc(), actor(), job_id)
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
