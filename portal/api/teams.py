"""``/api/teams``: teams, their ledger, credits (cluster administrators) and fund requests."""
from __future__ import annotations

from flask import jsonify, request

from .. import integrations as ig
from ..billing import funds as funds_mod
from ..billing import queries as billing_q
from ..http.context import actor, db, fresh_db, int_arg, svc
from ..teams import access
from ..teams import service as teams_svc
from .core import ApiError, _body, api, entry_json, team_json


# -------------------------------------------------------------------------------- teams

@api.get("/teams")
def teams():
    rows = teams_svc.my_teams(db(), actor())
    return jsonify({"ok": True, "teams": [dict(team_json(r["team"], r["role"], r["balance"]),
                                               projects=r["projects"]) for r in rows]})


@api.get("/teams/<team>")
def team(team: str):
    s = db()
    t, role = access.team_access(s, actor(), team)
    members = [{"user": u.name, "role": m.role} for u, m in teams_svc.members(s, t)]
    return jsonify({"ok": True, "team": dict(team_json(t, role, teams_svc.balances_for(s, [t.id])[t.id]),
                                             members=members)})


@api.get("/teams/<team>/ledger")
def ledger(team: str):
    s = db()
    t, _ = access.team_access(s, actor(), team, access.ROLE_ADMIN, "see the ledger")
    limit = max(1, min(int_arg("limit", 100) or 100, 1000))
    rows, nxt = billing_q.ledger_page(s, t, before=int_arg("before"), limit=limit)
    return jsonify({"ok": True, "balance": str(teams_svc.balances_for(s, [t.id])[t.id]),
                    "entries": [entry_json(e) for e in rows], "next_before": nxt})


@api.post("/teams/<team>/funds")
def funds(team: str):
    """Credit the team: cluster administrators only (403 for everybody else: request funds)."""
    body = _body()
    # the values as sent: a JSON float amount or a non-text note is refused, not guessed
    amount = billing_q.add_funds(svc(), actor(), team, body.get("amount", ""), body.get("note", ""))
    s = fresh_db()
    t, _ = access.team_access(s, actor(), team)
    return jsonify({"ok": True, "added": str(amount), "balance": str(teams_svc.balances_for(s, [t.id])[t.id])}), 201


# ------------------------------------------------------------------------- fund requests

def _fund_request(view) -> dict:
    return dict(view.as_dict(), amount_text=ig.format_usd(view.amount))


@api.post("/teams/<team>/fund-requests")
def request_funds(team: str):
    """Team administrators and owners: ``{"amount": "25.00", "note": "…"}`` -> a pending request."""
    body = _body()
    view = funds_mod.request_funds(svc(), actor(), team, body.get("amount", ""), body.get("note", ""))
    return jsonify({"ok": True, "fund_request": _fund_request(view)}), 201


@api.get("/teams/<team>/fund-requests")
def team_fund_requests(team: str):
    limit = max(1, min(int_arg("limit", 50) or 50, 500))
    rows = funds_mod.team_requests(db(), actor(), team, state=request.args.get("state") or None, limit=limit)
    return jsonify({"ok": True, "fund_requests": [_fund_request(v) for v in rows]})


@api.get("/fund-requests")
def fund_requests():
    """``?state=pending`` (default; ``all`` for every state), oldest first: every team's for
    cluster administrators, else those of the teams the caller administers; ``?team=T``."""
    rows = funds_mod.list_requests(db(), actor(), state=request.args.get("state", "pending"),
                                   team_name=request.args.get("team", "").strip() or None,
                                   limit=max(1, min(int_arg("limit", 100) or 100, 1000)))
    return jsonify({"ok": True, "fund_requests": [_fund_request(v) for v in rows]})


@api.get("/fund-requests/<int:request_id>")
def fund_request(request_id: int):
    return jsonify({"ok": True, "fund_request": _fund_request(funds_mod.get_request(db(), actor(), request_id))})


@api.post("/fund-requests/<int:request_id>/<action>")
def decide_fund_request(request_id: int, action: str):
    """``approve`` (``{"note": …}`` optional) and ``decline`` (``{"note": "reason"}``): cluster
    administrators; ``cancel``: the requesting team's administrators and owners."""
    body = _body()
    if action == "approve":
        view = funds_mod.approve(svc(), actor(), request_id, body.get("note", ""))
    elif action == "decline":
        view = funds_mod.decline(svc(), actor(), request_id, body.get("note", ""))
    elif action == "cancel":
        view = funds_mod.cancel(svc(), actor(), request_id)
    else:
        raise ApiError(404, f"unknown action {action!r}: approve, decline or cancel")
    return jsonify({"ok": True, "fund_request": _fund_request(view)})
