"""Monitoring pages (docs/MONITORING.md): the cluster dashboard ``/admin/cluster`` (cluster
administrators; everybody else gets 404, as on the other admin pages) and the usage statistics
``/usage`` (the cluster for administrators, a team for its members, yourself), with a CSV
download (``format=csv``). Both read the database only (``portal.monitoring``); the plots are
drawn by ``static/charts.js`` from JSON embedded in the page."""
from __future__ import annotations

import threading
from typing import Callable

from flask import Blueprint, Response, render_template, request
from flask_login import login_required
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from ..monitoring import sample_views, usage, usage_scope
from ..teams import access
from .common import actor, db, raise_http, svc
from .monitoring_charts import USAGE_CHART_IDS, cluster_chart_ids, cluster_charts, usage_charts

bp = Blueprint("monitoring", __name__)

# The charts' JSON is rendered once per computed answer: the service layer hands out the same
# cached dict until its data changes, so that dict's identity says when to render again.
_rendered: dict[str, tuple[object, Markup]] = {}
_lock = threading.Lock()


def charts_json(slot: str, source: dict, build: Callable[[dict], list]) -> Markup:
    """``build(source)`` as JSON safe inside <script> (what ``|tojson`` gives), reused while
    ``source`` is the same object."""
    with _lock:
        hit = _rendered.get(slot)
        if hit is not None and hit[0] is source:
            return hit[1]
    text = htmlsafe_json_dumps(build(source), separators=(",", ":"))
    with _lock:
        if len(_rendered) > 64:
            _rendered.clear()
        _rendered[slot] = (source, text)
    return text


@bp.get("/admin/cluster")
@login_required
def cluster():
    me = actor()
    if not me.is_cluster_admin:
        raise_http(access.NotFound("there is no such page"))
    try:
        data = sample_views.dashboard(svc(), me, request.args.get("range"))
    except access.OpError as exc:
        raise_http(exc)
    now, series = data["now"], data["series"]
    gpu_rows = [{"type": t, **g} for t, g in now["gpus"].items()] if now and now["gpus"] else []
    return render_template("cluster.html", data=data, now=now, nodes=data["nodes"],
                           gpu_rows=gpu_rows, ranges=list(sample_views.RANGES),
                           chart_ids=cluster_chart_ids(series),
                           charts_json=charts_json(f"cluster:{data['range']}", series,
                                                   cluster_charts))


@bp.get("/usage")
@login_required
def usage_page():
    me = actor()
    args = request.args
    try:
        stats = usage.statistics(svc(), me, args.get("scope"), args.get("period"),
                                 args.get("start"), args.get("end"))
    except access.OpError as exc:
        raise_http(exc)
    fmt = args.get("format", "html")
    if fmt == "csv":
        return Response(usage.csv_text(stats), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{usage.csv_name(stats)}"'})
    if fmt != "html":
        raise_http(access.OpError(f"format must be html or csv, got {fmt[:20]!r}"))
    scopes = usage_scope.visible_scopes(db(), me)
    if stats["scope"] not in scopes:
        scopes.append(stats["scope"])
    slot = f"usage:{stats['scope']}:{stats['period']}:{stats['start']}:{stats['end']}"
    return render_template("usage.html", stats=stats, scopes=scopes,
                           periods=usage_scope.PERIODS, chart_ids=USAGE_CHART_IDS,
                           charts_json=charts_json(slot, stats, usage_charts),
                           explicit=bool(args.get("start") or args.get("end")))
