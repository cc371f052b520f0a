"""``/``: the dashboard (my teams with balances, recent jobs across my teams); anonymous
visitors are sent to the login page."""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user

from ..jobs import queries as job_queries
from ..teams import service as teams_svc
from .common import actor, db

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def index():
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    me = actor()
    s = db()
    teams = teams_svc.my_teams(s, me)
    team_ids = [t["team"].id for t in teams]
    jobs, _ = job_queries.list_job_rows(s, limit=15, team_ids=team_ids)
    active_count = len(job_queries.job_ids(s, limit=200, team_ids=team_ids, state="active"))  # ids only: cheap
    return render_template("dashboard.html", teams=teams, jobs=jobs, active_count=active_count)
