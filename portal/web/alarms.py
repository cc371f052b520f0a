"""The cluster administrators' alarms page (``/admin/alarms``, docs/MONITORING.md): how the
reconciler stands, the open alarms, then the history a page at a time; "accept the GPU count"
of a node whose hardware changed for good. Everybody else gets 404, as on the other admin pages.
Viewing the page checks on the reconciler (a stuck one opens its alarm), never on Slurm.

Every page of a cluster administrator gets ``open_alarms`` (how many alarms are open: one
COUNT on the open alarms' index) for the header's banner."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from ..http.context import MAX_PAGE
from ..monitoring import alarms
from ..teams import access
from .common import actor, back, int_arg, raise_http, svc

bp = Blueprint("alarms", __name__)


@bp.app_context_processor
def _banner() -> dict:
    """``open_alarms``: the number of open alarms, for cluster administrators (else None)."""
    if not current_user.is_authenticated or not current_user.is_cluster_admin:
        return {"open_alarms": None}
    return {"open_alarms": alarms.open_count(svc())}


def _admin() -> access.Actor:
    me = actor()
    if not me.is_cluster_admin:
        raise_http(access.NotFound("there is no such page"))
    return me


def lasted(seconds: int | None) -> str:
    """90 → "1 min 30 s", 7260 → "2 h 1 min", 200000 → "2 d 7 h"."""
    if seconds is None:
        return ""
    s = max(int(seconds), 0)
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    return f"{m} min {sec} s" if m else f"{sec} s"


def _when(text: str | None) -> str:
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S UTC") if text else ""


@bp.get("/admin/alarms")
@login_required
def index():
    me = _admin()
    page = int_arg("page", 1, lo=1, hi=MAX_PAGE)
    data = alarms.page(svc(), me, history=True, page=page)
    now = svc().now()
    for a in data["open"]:
        a["lasted"] = lasted(int((now - datetime.fromisoformat(a["opened_at"])).total_seconds()))
    for a in data["history"]:
        a["lasted"] = lasted(a["duration_s"])
    return render_template("alarms.html", data=data, when=_when, lasted=lasted,
                           mail_on=svc().mailer is not None, cfg=svc().config)


@bp.post("/admin/alarms/nodes/<node>/accept-gpus")
@login_required
def accept_gpus(node: str):
    me = _admin()
    try:
        d = alarms.accept_gpu_count(svc(), me, node)
    except access.OpError as exc:
        raise_http(exc)
    return back("alarms.index", d["message"] + ".")

