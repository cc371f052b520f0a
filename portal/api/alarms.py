"""``/api/alarms`` (docs/MONITORING.md): the open alarms, and with ``all=1`` the history a page
at a time (``page``, ``per_page``). Cluster administrators get every alarm and how the
reconciler stands (asking checks on it: a stuck one opens its alarm); everybody else their
teams' balance and storage alarms. ``POST /api/alarms/nodes/<node>/accept-gpus``: a cluster
administrator accepts a node's GPU count as it is now."""
from __future__ import annotations

from flask import jsonify, request

from ..http.context import MAX_PAGE, actor, int_arg, svc
from ..monitoring import alarm_views, alarms
from ..teams.access import Forbidden
from .core import ApiError, api

TRUE = ("1", "true", "yes")
FALSE = ("", "0", "false", "no")


@api.get("/alarms")
def list_alarms():
    me = actor()
    raw = request.args.get("all", "").strip().lower()
    if raw not in TRUE + FALSE:
        raise ApiError(400, f"all must be 1 or 0 (true or false), got {raw[:20]!r}")
    page = int_arg("page", 1, lo=1, hi=MAX_PAGE)
    per_page = int_arg("per_page", alarm_views.PER_PAGE, lo=1, hi=alarm_views.MAX_PER_PAGE)
    d = alarms.page(svc(), me, history=raw in TRUE, page=page, per_page=per_page)
    return jsonify({"ok": True, **d})


@api.post("/alarms/nodes/<node>/accept-gpus")
def accept_gpus(node: str):
    me = actor()
    if not me.is_cluster_admin:
        raise Forbidden("only cluster administrators may accept a node's GPU count")
    return jsonify({"ok": True, **alarms.accept_gpu_count(svc(), me, node)})
