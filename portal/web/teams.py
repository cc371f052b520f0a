"""Team pages: overview (projects, members, recent jobs), member management, billing (balance,
fund requests, add funds (cluster administrators), ledger + CSV, spending plot), create project,
create/delete team."""
from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, render_template, request, stream_with_context
from flask_login import login_required

from ..billing import funds
from .. import integrations as ig
from ..db import from_micros
from ..billing import queries as billing_q
from ..jobs import queries as job_queries
from ..policy import quotas as policy_quotas
from ..policy import shares as policy_shares
from ..projects import service as projects_svc
from ..projects import settings as project_settings
from ..teams import access
from ..teams import service as teams_svc
from .common import MAX_PAGE, actor, back, db, int_arg, raise_http, svc
from .policy import slurm_now
from .monitoring_charts import spending_chart

bp = Blueprint("teams", __name__)


def _team(name: str, roles=access.ROLE_ANY, what="see this"):
    try:
        return access.team_access(db(), actor(), name, roles, what)
    except access.OpError as exc:
        raise_http(exc)


@bp.get("/teams/<team>")
@login_required
def show(team: str):
    t, role = _team(team)
    s = db()
    page = projects_svc.project_page(s, t, q=request.args.get("q", "").strip(), page=int_arg("page", 1, hi=MAX_PAGE) or 1)
    jobs, _ = job_queries.list_job_rows(s, limit=10, team_ids=[t.id])
    return render_template("team.html", team=t, role=role, page=page, members=teams_svc.members(s, t),
                           jobs=jobs, balance=teams_svc.balances_for(s, [t.id])[t.id],
                           can_admin=actor().is_cluster_admin or role in access.ROLE_ADMIN,
                           can_own=actor().is_cluster_admin or role == "owner",
                           gpu_limits=svc().config.gpu_limits, images=list(svc().catalog.names),
                           default_image=svc().config.default_image,
                           default_time=svc().config.default_time_limit, tab="overview",
                           shares=policy_shares.team_shares(svc(), t.name),
                           quotas=policy_quotas.quotas_of_team(svc(), t.name),
                           describe_quota=policy_quotas.describe,
                           can_set_shares=actor().is_cluster_admin)


@bp.post("/teams/<team>/shares")
@login_required
def set_shares(team: str):
    """Cluster administrators set the team's fair-share (``policy.shares``); Slurm gets it now,
    or at the next account sync when it cannot be reached."""
    _team(team)
    try:
        value = policy_shares.set_shares(svc(), actor(), team, request.form.get("shares", ""))
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return back("teams.show", str(exc), "error", team=team)
    note, category = slurm_now()
    return back("teams.show", f"Team {team} now has {value} shares; {note}.", category, team=team)


@bp.post("/teams")
@login_required
def create():
    try:
        name = teams_svc.create_team(svc(), actor(), request.form.get("name", ""))
    except access.OpError as exc:
        return back("dashboard.index", str(exc), "error")
    return back("teams.show", f"Team {name} created. Its Slurm account appears within a minute.",
                team=name)


@bp.post("/teams/<team>/projects")
@login_required
def create_project(team: str):
    _team(team)
    f = request.form
    st, problems = project_settings.parse_settings(svc(), gpu_type=f.get("gpu_type"), gpu_count=f.get("gpu_count"),
                                      image=f.get("image"), time_text=f.get("time"))
    if problems:
        return back("teams.show", "Project not created: " + "; ".join(problems), "error", team=team)
    try:
        name = projects_svc.create_project(svc(), actor(), team, f.get("name", ""), st)
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return back("teams.show", str(exc), "error", team=team)
    return back("projects.show", f"Project {team}/{name} created. Push a branch to run a job.",
                team=team, project=name)


@bp.post("/teams/<team>/members")
@login_required
def set_member(team: str):
    _team(team, access.ROLE_ADMIN, "add or change members")
    username, role = request.form.get("username", "").strip(), request.form.get("role", "user")
    try:
        what = teams_svc.set_member(svc(), actor(), team, username, role)
    except access.OpError as exc:
        if exc.status == 403:
            raise_http(exc)
        return back("teams.show", str(exc), "error", team=team)
    return back("teams.show", f"{username} {what}: now {role}.", team=team)


@bp.post("/teams/<team>/members/<username>/remove")
@login_required
def remove_member(team: str, username: str):
    _team(team, access.ROLE_ADMIN, "remove members")
    try:
        teams_svc.remove_member(svc(), actor(), team, username)
    except access.OpError as exc:
        if exc.status == 403:
            raise_http(exc)
        return back("teams.show", str(exc), "error", team=team)
    return back("teams.show", f"{username} removed from {team}.", team=team)


@bp.post("/teams/<team>/delete")
@login_required
def delete(team: str):
    _team(team, access.ROLE_OWNER, "delete the team")
    try:
        teams_svc.delete_team(svc(), actor(), team, request.form.get("confirm", ""))
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return back("teams.show", str(exc), "error", team=team)
    return back("dashboard.index", f"Team {team} deleted.")


# ------------------------------------------------------------------------------- billing

def _billing_page(team: str, *, error: str | None = None, status: int = 200, form: str | None = None):
    """The billing page; after a refused form post: its message, the HTTP status (400/409) and
    the values typed into that form (``form``: "add-funds" or "request-funds"), so nothing is lost."""
    t, role = _team(team)
    s = db()
    me = actor()
    can_admin = me.is_cluster_admin or role in access.ROLE_ADMIN
    rows, next_before, series, requests = [], None, [], []
    if can_admin:
        rows, next_before = billing_q.ledger_page(s, t, before=int_arg("before"))
        series = billing_q.daily_spending(s, t, days=60, now=svc().now(),
                                     cache=svc().cache.spending)
        requests = funds.team_requests(s, me, t.name, limit=20)
    typed = {"form": form, "amount": request.form.get("amount", ""),
             "note": request.form.get("note", "")} if form else {"form": None}
    return render_template("billing.html", team=t, role=role, can_admin=can_admin,
                           can_credit=me.is_cluster_admin, fund_requests=requests, error=error,
                           typed=typed, note_max=funds.NOTE_MAX,
                           balance=teams_svc.balances_for(s, [t.id])[t.id], rows=rows,
                           next_before=next_before, describe=billing_q.describe_entry,
                           charts=[spending_chart(series)] if series else [],
                           total_60d=sum((v for _, v in series), start=from_micros(0)),
                           tab="billing"), status


@bp.get("/teams/<team>/billing")
@login_required
def billing(team: str):
    return _billing_page(team)


@bp.post("/teams/<team>/billing/funds")
@login_required
def add_funds(team: str):
    """Cluster administrators credit the team; everybody else: 403 (404 outside the team)."""
    try:
        amount = billing_q.add_funds(svc(), actor(), team, request.form.get("amount", ""),
                               request.form.get("note", ""))
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return _billing_page(team, error=str(exc), status=exc.status, form="add-funds")
    return back("teams.billing", f"Added {ig.format_usd(amount)} to {team}.", team=team)


@bp.post("/teams/<team>/billing/fund-requests")
@login_required
def request_funds(team: str):
    """Team administrators and owners ask the cluster administrators for funds."""
    try:
        r = funds.request_funds(svc(), actor(), team, request.form.get("amount", ""),
                                request.form.get("note", ""))
    except access.OpError as exc:
        if exc.status in (403, 404):
            raise_http(exc)
        return _billing_page(team, error=str(exc), status=exc.status, form="request-funds")
    return back("teams.billing", f"Requested {ig.format_usd(r.amount)} for {team} (request {r.id}); "
                "the cluster administrators have been asked to approve it.", team=team)


@bp.get("/teams/<team>/ledger.csv")
@login_required
def ledger_csv(team: str):
    t, _ = _team(team, access.ROLE_ADMIN, "see the ledger")
    team_id, team_name = t.id, t.name
    database = svc().db

    def generate():
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(billing_q.LEDGER_CSV_HEADER)
        with database.session() as s:
            for i, e in enumerate(billing_q.all_entries(s, team_id)):
                w.writerow(billing_q.ledger_csv_row(e))
                if i % 500 == 499:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        yield buf.getvalue()

    return Response(stream_with_context(generate()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="ledger-{team_name}.csv"'})
