"""``/api/tokens``: the caller's access tokens (cluster administrators: ``?user=``)."""
from __future__ import annotations

from flask import jsonify, request

from .. import presenters as serialize
from ..http.context import actor, db, svc
from ..identity import user_tokens
from .core import _body, _text, api


# ------------------------------------------------------------------------------- tokens

@api.get("/tokens")
def tokens():
    return jsonify({"ok": True, "tokens": [
        serialize.token_dict(t)
        for t in user_tokens.list_tokens(db(), actor(), request.args.get("user", "").strip() or None)]})


@api.post("/tokens")
def create_token():
    body = _body()
    tid, token = user_tokens.create_token(svc(), actor(), _text(body, "name"))
    resp = jsonify({"ok": True, "id": tid, "token": token,
                    "note": "shown once; use it as the git password or the API bearer token"})
    resp.headers["Cache-Control"] = "no-store"
    return resp, 201


@api.delete("/tokens/<int:token_id>")
def revoke_token(token_id: int):
    user_tokens.revoke_token(svc(), actor(), token_id)
    return jsonify({"ok": True, "revoked": token_id})
