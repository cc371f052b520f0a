"""``/api/`` policy routes (docs/POLICY.md): compute types, quotas, emergency grants, team
fair-share, the administrators' queue, node and resource views, and the policy log. The
service layer (``portal.policy``) decides and checks who may; this module reads bodies, calls
it, and after a change Slurm must see converges the accounts at once
(``apply.converge_now``: its warning, when sacctmgr failed, is answered as ``warning``)."""
from __future__ import annotations

from dataclasses import asdict

from flask import jsonify, request

from .. import inputs as input_types
from ..http.context import actor, int_arg, svc
from ..policy import apply, compute, grants, queue_admin, quotas, resources, shares, views
from ..teams.access import Forbidden
from .core import ApiError, _body, api

COMPUTE_FIELDS = ("gpus", "cpus", "mem", "partition", "description")
JOB_ACTIONS = {"hold": queue_admin.hold, "release": queue_admin.release,
               "requeue": queue_admin.requeue, "top": queue_admin.top}


def _admin_first():
    """Access before input: a non-administrator learns nothing from a 400."""
    me = actor()
    if not me.is_cluster_admin:
        raise Forbidden("only cluster administrators may do that")
    return me


def _member_first(team: str):
    me = actor()
    views.member_or_admin(svc(), me, team, "see the team")
    return me


def _known(body: dict, known) -> None:
    extra = sorted(k for k in body if k not in known)
    if extra:
        raise ApiError(400, f"unknown field(s) {', '.join(map(repr, extra))[:200]}; known: "
                            f"{', '.join(known)}")


def _opt(body: dict, key: str, *, numbers: bool = False) -> str | int | None:
    """An optional text field (a whole number too where ``numbers``); anything else: 400."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str) or (numbers and isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ApiError(400, f"{key} must be a JSON string{' or a whole number' if numbers else ''}, "
                        f"got {input_types.json_type(value)}")


def _flag(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"{key} must be true or false, got {input_types.json_type(value)}")
    return value


def _changed(key: str, value, status: int = 200):
    return jsonify({"ok": True, key: value, "warning": apply.converge_now(svc())}), status


# ------------------------------------------------------------------------- compute types

@api.get("/compute-types")
def compute_types():
    actor()
    return jsonify({"ok": True, "compute_types": compute.list_types(svc())})


@api.put("/compute-types/<name>")
def define_compute_type(name: str):
    _admin_first()
    body = _body()
    _known(body, COMPUTE_FIELDS)
    fields = {k: _opt(body, k, numbers=k == "cpus") for k in COMPUTE_FIELDS}
    if fields["gpus"] is None:
        raise ApiError(400, "gpus is required: TYPE:COUNT (e.g. a4000:2) or none (CPU only)")
    fields["description"] = fields["description"] or ""
    return jsonify({"ok": True, "compute_type": compute.define(svc(), actor(), name, **fields)})


@api.delete("/compute-types/<name>")
def remove_compute_type(name: str):
    _admin_first()
    return jsonify({"ok": True, "projects": compute.remove(svc(), actor(), name)})


# --------------------------------------------------------------------------------- quotas

@api.get("/teams/<team>/quotas")
def team_quotas(team: str):
    return jsonify({"ok": True, "quotas": views.team_quotas(svc(), actor(), team)})


@api.put("/teams/<team>/quotas/<resource>")
def set_quota(team: str, resource: str):
    _member_first(team)
    body = _body()
    _known(body, ("value", "user"))
    value = _opt(body, "value", numbers=True)
    if value is None:
        raise ApiError(400, "value is required (a whole number; DELETE removes the quota)")
    d = quotas.set_quota(svc(), actor(), team=team, resource=resource, value=value,
                         user=_opt(body, "user") or None)
    return _changed("quota", d)


@api.delete("/teams/<team>/quotas/<resource>")
def remove_quota(team: str, resource: str):
    _member_first(team)
    user = request.args.get("user", "").strip() or None
    d = quotas.set_quota(svc(), actor(), team=team, resource=resource, value=None, user=user)
    return _changed("quota", d)


# ----------------------------------------------------------------------------- fair-share

@api.get("/teams/<team>/shares")
def team_shares(team: str):
    return jsonify({"ok": True, "shares": views.team_shares(svc(), actor(), team)})


@api.put("/teams/<team>/shares")
def set_team_shares(team: str):
    _member_first(team)
    body = _body()
    _known(body, ("shares",))
    value = _opt(body, "shares", numbers=True)
    if value is None:
        raise ApiError(400, "shares is required (a whole number, 1 or more)")
    me = actor()
    shares.set_shares(svc(), me, team, value)
    warning = apply.converge_now(svc())
    return jsonify({"ok": True, "shares": views.team_shares(svc(), me, team), "warning": warning})


# ---------------------------------------------------------------------- emergency grants

@api.get("/emergency-grants")
def emergency_grants():
    everything = request.args.get("all", "").strip().lower() in ("1", "true", "yes")
    return jsonify({"ok": True, "grants": grants.list_grants(svc(), actor(), everything=everything)})


def _who(body: dict) -> tuple[str, bool]:
    who = _opt(body, "who")
    if not who or not who.strip():
        raise ApiError(400, "who is required: a user name (or a team name with \"team\": true)")
    return who.strip(), _flag(body, "team")


@api.post("/emergency-grants")
def grant_emergency():
    _admin_first()
    body = _body()
    _known(body, ("who", "team", "until", "note"))
    who, team = _who(body)
    d = grants.grant(svc(), actor(), who, team=team, until=_opt(body, "until"),
                     note=_opt(body, "note") or "")
    return _changed("grant", d, 201)


@api.post("/emergency-grants/revoke")
def revoke_emergency():
    _admin_first()
    body = _body()
    _known(body, ("who", "team"))
    who, team = _who(body)
    return _changed("revoked", grants.revoke(svc(), actor(), who, team=team))


# ---------------------------------------------------------------------- queue and nodes

@api.get("/queue")
def queue():
    rows = queue_admin.queue(svc(), actor(), team=request.args.get("team", "").strip() or None,
                             user=request.args.get("user", "").strip() or None)
    return jsonify({"ok": True, "queue": [asdict(r) for r in rows]})


@api.post("/queue/<int:job_id>/<action>")
def job_action(job_id: int, action: str):
    fn = JOB_ACTIONS.get(action)
    if fn is None:
        raise ApiError(404, f"unknown action {action[:40]!r}: {', '.join(JOB_ACTIONS)}")
    return jsonify({"ok": True, "message": fn(svc(), actor(), job_id)})


@api.post("/nodes/query")
def nodes():
    """The nodes as Slurm has them now. It asks Slurm (sinfo), so it is a POST: no GET, page
    or API, ever calls Slurm (tests/unit/test_web_no_slurm.py)."""
    return jsonify({"ok": True, "nodes": queue_admin.nodes(svc(), actor())})


@api.post("/nodes/<node>/<state>")
def node_update(node: str, state: str):
    if state not in ("drain", "resume"):
        raise ApiError(404, f"unknown action {state[:40]!r}: drain or resume")
    _admin_first()
    body = _body()
    _known(body, ("reason",))
    message = queue_admin.node_update(svc(), actor(), node, state, _opt(body, "reason"))
    return jsonify({"ok": True, "message": message})


@api.get("/resources")
def resource_plan():
    return jsonify(dict(resources.plan(svc(), actor()), ok=True))


@api.get("/policy-events")
def policy_events():
    action = request.args.get("action", "").strip() or None
    limit = int_arg("limit", 200, lo=1, hi=views.MAX_EVENTS)
    return jsonify({"ok": True, "events": views.policy_log(svc(), actor(), action=action,
                                                           limit=limit)})
