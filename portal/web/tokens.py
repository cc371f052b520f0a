"""Personal access tokens (the git password and the API's bearer token): create (shown once),
list, revoke."""
from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_login import login_required

from ..identity import user_tokens
from ..teams import access
from .common import actor, back, db, fresh_db, raise_http, svc

bp = Blueprint("tokens", __name__)


@bp.get("/tokens")
@login_required
def index():
    return render_template("tokens.html", tokens=user_tokens.list_tokens(db(), actor()), new_token=None,
                           base_url=svc().config.base_url)


@bp.post("/tokens")
@login_required
def create():
    try:
        _tid, token = user_tokens.create_token(svc(), actor(), request.form.get("name", ""))
    except access.OpError as exc:
        return back("tokens.index", str(exc), "error")
    resp = render_template("tokens.html", tokens=user_tokens.list_tokens(fresh_db(), actor()), new_token=token,
                           new_name=request.form.get("name", "").strip() or "default",
                           base_url=svc().config.base_url)
    return resp, 201, {"Cache-Control": "no-store"}


@bp.post("/tokens/<int:token_id>/revoke")
@login_required
def revoke(token_id: int):
    try:
        user_tokens.revoke_token(svc(), actor(), token_id)
    except access.OpError as exc:
        raise_http(exc)
    return back("tokens.index", "Token revoked.")
