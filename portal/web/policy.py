"""The cluster administrators' policy page (``/admin/policy``, docs/POLICY.md): the resource plan,
compute types (define, remove), every team's quotas (set, remove), emergency grants (grant until
a date, revoke) and the policy record. Everybody else gets 404, as on the other admin pages.

Each form calls the ``policy`` service layer once; a refusal (OpError) re-renders the page with
its message and status, nothing half-applied. Quota, grant, revoke and shares changes are pushed
to Slurm at once (``slurm_now``: ``policy.apply.converge_now``); when Slurm cannot be reached
they are saved and the account sync (the reconciler, every minute) carries them over."""
from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_login import login_required
from sqlalchemy import select

from ..db import Team, User
from ..policy import apply as policy_apply
from ..policy import compute, events, grants, quotas, resources
from ..teams import access
from .common import actor, back, db, raise_http, svc

bp = Blueprint("policy", __name__)

SLURM_LATER = "saved; Slurm gets it at the next account sync"
EVENTS_SHOWN = 100
NAMES_SHOWN = 2000   # names offered in the forms' suggestion lists


def slurm_now() -> tuple[str, str]:
    """Converge Slurm's associations with the policy just changed (``policy.apply``): (what to
    add to the message, the flash category). When Slurm cannot be reached the change stays
    saved and the reconciler's next account sync carries it over."""
    problem = policy_apply.converge_now(svc())
    if problem:
        return (problem if SLURM_LATER in problem else f"{SLURM_LATER} ({problem})"), "info"
    return "Slurm has it now", "ok"


def _admin():
    me = actor()
    if not me.is_cluster_admin:
        raise_http(access.NotFound("there is no such page"))
    return me


def _page(*, error: str | None = None, status: int = 200, form: str | None = None):
    """The page; after a refused post: its message, status and the values typed into ``form``."""
    me = _admin()
    s = db()
    all_grants = request.args.get("grants") == "all"
    action = request.args.get("action", "").strip() or None
    plan = resources.plan(svc(), me)
    cfg = svc().config
    return render_template(
        "policy.html", plan=plan, compute_types=compute.list_types(svc()),
        quotas=quotas.all_quotas(s), describe=quotas.describe,
        grants=[_grant_row(g) for g in grants.list_grants(svc(), me, everything=all_grants)],
        all_grants=all_grants,
        events=events.recent(svc(), limit=EVENTS_SHOWN, action=action), action=action,
        team_names=list(s.scalars(select(Team.name).order_by(Team.name).limit(NAMES_SHOWN))),
        user_names=list(s.scalars(select(User.name).where(User.active.is_(True))
                                  .order_by(User.name).limit(NAMES_SHOWN))),
        quota_resources=[f"gpu:{t}" for t in sorted(cfg.gpu_limits)] + ["cpu", "jobs", "workspaces"],
        resources_help=quotas.RESOURCES_HELP, default_partition=cfg.partition,
        error=error, typed_form=form, typed=request.form if form else {},
        today=svc().now().date().isoformat()), status


def _grant_row(g: dict) -> dict:
    """A grant with what its revoke button sends: kind (user|team) and the name."""
    team = g["who"].startswith("team ")
    return dict(g, kind="team" if team else "user", name=g["who"][5:] if team else g["who"])


def _refused(exc: access.OpError, form: str):
    return _page(error=str(exc), status=exc.status, form=form)


@bp.get("/admin/policy")
@login_required
def show():
    return _page()


# ----------------------------------------------------------------------------- compute types

@bp.post("/admin/policy/compute-types")
@login_required
def define_compute_type():
    me = _admin()
    f = request.form
    name = f.get("name", "").strip()
    try:
        ct = compute.define(svc(), me, name, gpus=f.get("gpus", "").strip(),
                            cpus=f.get("cpus", "").strip() or None, mem=f.get("mem", "").strip(),
                            partition=f.get("partition", "").strip(),
                            description=f.get("description", "").strip())
    except access.OpError as exc:
        return _refused(exc, "compute-type")
    return back("policy.show", f"Compute type {ct['name']} saved: {ct['gpus']}, {ct['cpus']} cores, "
                f"partition {ct['partition']}, ${ct['hourly_rate']}/h.")


@bp.post("/admin/policy/compute-types/<name>/remove")
@login_required
def remove_compute_type(name: str):
    me = _admin()
    try:
        users = compute.remove(svc(), me, name)
    except access.OpError as exc:
        return _refused(exc, "remove-compute-type")
    extra = (f" Projects that used it as their default now use their own GPU settings: "
             f"{', '.join(users)}." if users else "")
    return back("policy.show", f"Compute type {name} removed.{extra}")


# ------------------------------------------------------------------------------------ quotas

@bp.post("/admin/policy/quotas")
@login_required
def set_quota():
    me = _admin()
    f = request.form
    value = f.get("value", "").strip()
    try:
        q = quotas.set_quota(svc(), me, team=f.get("team", "").strip(),
                             user=f.get("user", "").strip() or None,
                             resource=f.get("resource", "").strip(), value=value or None)
    except access.OpError as exc:
        return _refused(exc, "quota")
    who = f"{q['user']} in team {q['team']}" if q["user"] else f"team {q['team']}"
    what = (f"{who}: no {q['resource']} quota" if q["value"] is None
            else f"{who}: at most {quotas.describe(q['resource'], q['value'])}")
    note, category = slurm_now()
    return back("policy.show", f"Quota saved ({what}); {note}.", category)


# ------------------------------------------------------------------------- emergency grants

def _who(f) -> tuple[str, bool]:
    return f.get("who", "").strip(), f.get("kind", "user") == "team"


@bp.post("/admin/policy/grants")
@login_required
def grant():
    me = _admin()
    f = request.form
    who, team = _who(f)
    try:
        g = grants.grant(svc(), me, who, team=team, until=f.get("until", "").strip() or None,
                         note=f.get("note", "").strip())
    except access.OpError as exc:
        return _refused(exc, "grant")
    typed = f.get("until", "").strip()
    until = ("until revoked" if not g["until"] else
             f"through {typed} (UTC)" if len(typed) == 10 else f"until {g['until']}")
    note, category = slurm_now()
    return back("policy.show", f"Emergency right granted to {g['who']} {until}; {note}.", category)


@bp.post("/admin/policy/grants/revoke")
@login_required
def revoke():
    me = _admin()
    who, team = _who(request.form)
    try:
        n = grants.revoke(svc(), me, who, team=team)
    except access.OpError as exc:
        return _refused(exc, "revoke")
    label = f"team {who}" if team else who
    note, category = slurm_now()
    return back("policy.show", f"Emergency right of {label} revoked ({n} grant"
                f"{'s' if n != 1 else ''}); {note}.", category)
