"""``/api/`` monitoring routes (docs/MONITORING.md): ``GET /api/cluster`` (cluster
administrators: the latest sample, the node table and a range's series — the dashboard's
numbers) and ``GET /api/usage`` (usage statistics of ``scope`` = cluster | team:NAME |
user:NAME per ``period`` = day | week | month, optional ``start``/``end`` YYYY-MM-DD;
``format=csv`` answers the page's CSV). Both read the database only."""
from __future__ import annotations

from flask import Response, jsonify, request

from ..http.context import actor, svc
from ..monitoring import sample_views, usage
from .core import ApiError, api


@api.get("/cluster")
def cluster():
    data = sample_views.dashboard(svc(), actor(), request.args.get("range"))
    return jsonify({"ok": True, **data})


@api.get("/usage")
def usage_stats():
    args = request.args
    stats = usage.statistics(svc(), actor(), args.get("scope"), args.get("period"),
                             args.get("start"), args.get("end"))
    fmt = args.get("format", "json")
    if fmt == "csv":
        return Response(usage.csv_text(stats), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{usage.csv_name(stats)}"'})
    if fmt != "json":
        raise ApiError(400, f"format must be json or csv, got {fmt[:20]!r}")
    return jsonify({"ok": True, "usage": stats})
