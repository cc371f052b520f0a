"""``GET /metrics``: Prometheus' text format from the official client library
(portal/monitoring/prom.py), read from the database at each scrape — never from Slurm.
Protected by ``Authorization: Bearer <metrics_token>`` or the client's network
(``metrics_allow``); refused with 401/403 and a plain-text reason. No login, no session."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from ..monitoring import prom

bp = Blueprint("metrics", __name__)
EXTENSION = "slipway_prometheus"


@bp.record_once
def _setup(state) -> None:
    """One registry per app, built when the blueprint is registered (a bad metrics_allow
    stops the app there, with the reason)."""
    svc = state.app.extensions["slipway"]
    state.app.extensions[EXTENSION] = prom.PortalMetrics(svc.config, svc.db)


@bp.get("/metrics")
def metrics():
    portal_metrics: prom.PortalMetrics = current_app.extensions[EXTENSION]
    refusal = portal_metrics.refusal(request.headers.get("Authorization", ""),
                                     request.remote_addr or "")
    if refusal is not None:
        return Response(refusal.message + "\n", status=refusal.status,
                        mimetype="text/plain", headers=refusal.headers)
    body, content_type = portal_metrics.render()
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
