"""Fund requests on the web: the cluster administrators' list of requests waiting for them
(``/admin/fund-requests``) and the decisions (approve, decline, cancel) posted from it or from a
team's billing page. Requests are made on the billing page (``teams.request_funds``).

A refused post answers its 4xx status (400, 403, 404, 409) with the message on the page."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import login_required

from ..billing import funds
from .. import integrations as ig
from ..teams import access
from .common import actor, db, raise_http, safe_next, svc

bp = Blueprint("funds", __name__)


@bp.get("/admin/fund-requests")
@login_required
def pending():
    me = actor()
    if not me.is_cluster_admin:
        raise_http(access.Forbidden("only cluster administrators see every team's fund requests; a "
                                 "team's requests are on its billing page"))
    state = request.args.get("state", "pending")
    try:
        rows = funds.list_requests(db(), me, state=state, limit=500)
    except access.OpError as exc:
        raise_http(exc)
    return render_template("fund_requests.html", fund_requests=rows, state=state or "all",
                           states=("pending", "approved", "declined", "cancelled", "all"))


def _decide(decision, what: str, *args):
    """Run one decision of ``funds`` for the acting user; a refusal is the error page (its
    status and message), a decision flashes what happened and goes back where it came from."""
    try:
        view = decision(svc(), actor(), *args)
    except access.OpError as exc:
        raise_http(exc)
    flash(f"Fund request {view.id} of {view.team} ({ig.format_usd(view.amount)}) {what}.", "ok")
    default = url_for("teams.billing", team=view.team)
    return redirect(safe_next(request.form.get("next"), default))


@bp.post("/fund-requests/<int:request_id>/approve")
@login_required
def approve(request_id: int):
    return _decide(funds.approve, "approved: the amount is in the team's ledger", request_id,
                   request.form.get("note", ""))


@bp.post("/fund-requests/<int:request_id>/decline")
@login_required
def decline(request_id: int):
    return _decide(funds.decline, "declined", request_id, request.form.get("note", ""))


@bp.post("/fund-requests/<int:request_id>/cancel")
@login_required
def cancel(request_id: int):
    return _decide(funds.cancel, "cancelled", request_id)
