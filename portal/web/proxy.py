"""``/jobs/<id>/proxy/…``: forward HTTP to ``node:port`` of a RUNNING job (the job's ``$PORT``),
for members of the job's team (and cluster admins) only.

* streamed both ways (request body and response body are never held in memory);
* hop-by-hop headers (RFC 9110 §7.6.1, plus any named in ``Connection``) are stripped both ways;
* the portal's own credentials never reach the job: the session cookie is removed from
  ``Cookie`` and a Slipway bearer token from ``Authorization``; a ``Set-Cookie`` for the portal's
  session cookie name is dropped;
* redirects to ``/x`` or ``http://node:port/x`` are rewritten under the proxy prefix;
* ``X-Forwarded-Prefix: /jobs/<id>/proxy`` tells prefix-aware apps where they live.

Node name -> address: ``svc.extra["node_addresses"]`` (a dict or a callable) when set, else the
node name itself (Slurm node names resolve on real clusters). The local test cluster's nodes
all live on 127.0.0.1: the lead wires ``{"a4k-1": "127.0.0.1", …}`` or ``lambda n: "127.0.0.1"``.

WebSockets are not proxied (WSGI cannot upgrade); a Jupyter workspace needs an ASGI/nginx hop.
Security note: the job's pages are served on the portal's origin; that is why the portal's
cookies and tokens are stripped — still, a separate proxy origin is the stronger setup.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import requests
from flask import Blueprint, Response, current_app, request, stream_with_context
from flask_login import login_required

from ..jobs import states
from . import ops
from .common import actor, db, raise_http, svc

bp = Blueprint("proxy", __name__)

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade",
                        "proxy-connection"})
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CHUNK = 64 * 1024


def _hop_by_hop(headers) -> set[str]:
    named = set()
    for v in headers.get_all("Connection") if hasattr(headers, "get_all") else [headers.get("Connection", "")]:
        named.update(h.strip().lower() for h in (v or "").split(",") if h.strip())
    return HOP_BY_HOP | named


def node_address(node: str) -> str:
    m = svc().extra.get("node_addresses")
    if callable(m):
        return m(node) or node
    if isinstance(m, dict):
        return m.get(node, node)
    return node


def _strip_cookie(value: str, name: str) -> str:
    keep = [c for c in value.split(";") if c.strip() and c.strip().split("=", 1)[0] != name]
    return ";".join(keep).strip()


@bp.route("/jobs/<int:job_id>/proxy/", defaults={"rest": ""}, methods=METHODS)
@bp.route("/jobs/<int:job_id>/proxy/<path:rest>", methods=METHODS)
@login_required
def forward(job_id: int, rest: str):
    try:
        job, _p, _t, _role = ops.job_access(db(), actor(), job_id)
    except ops.OpError as exc:
        raise_http(exc)
    if job.state != states.RUNNING or not job.port or not job.node:
        return Response(f"job {job_id} is {job.state}; its address is reachable only while it runs\n",
                        409, mimetype="text/plain")
    host = node_address(job.node)
    port = int(job.port)
    prefix = f"/jobs/{job_id}/proxy"
    upstream = f"http://{host}:{port}/{rest}"
    if request.query_string:
        upstream += "?" + request.query_string.decode("latin-1")

    cookie_name = current_app.config.get("SESSION_COOKIE_NAME", "session")
    drop = _hop_by_hop(request.headers) | {"host", "content-length"}
    headers = {}
    for k, v in request.headers.items():
        lk = k.lower()
        if lk in drop:
            continue
        if lk == "cookie":
            v = _strip_cookie(v, cookie_name)
            if not v:
                continue
        if lk == "authorization" and v.lower().startswith("bearer swp_"):
            continue
        headers[k] = v
    headers["Host"] = f"{host}:{port}"
    headers["X-Forwarded-For"] = request.remote_addr or ""
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Prefix"] = prefix
    body = None
    if request.content_length:
        headers["Content-Length"] = str(request.content_length)
        body = request.stream
    elif request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = request.stream  # requests re-chunks a stream without a length

    try:
        r = requests.request(request.method, upstream, headers=headers, data=body, stream=True,
                             allow_redirects=False, timeout=(5, 300))
    except requests.RequestException as exc:
        return Response(f"job {job_id}: nothing answers on {job.node}:{port} ({type(exc).__name__}); "
                        "does the job listen on $PORT?\n", 502, mimetype="text/plain")

    resp_drop = _hop_by_hop(r.raw.headers) if hasattr(r.raw, "headers") else HOP_BY_HOP
    out = []
    for k, v in r.raw.headers.items():
        lk = k.lower()
        if lk in resp_drop:
            continue
        if lk == "set-cookie" and v.split("=", 1)[0].strip() == cookie_name:
            continue
        if lk == "location":
            v = _rewrite_location(v, host, port, prefix)
        out.append((k, v))

    def body_iter():
        try:
            for chunk in r.raw.stream(CHUNK, decode_content=False):
                if chunk:
                    yield chunk
        finally:
            r.close()

    resp = Response(stream_with_context(body_iter()), status=r.status_code, headers=out,
                    direct_passthrough=True)
    return resp


def _rewrite_location(loc: str, host: str, port: int, prefix: str) -> str:
    parts = urlsplit(loc)
    if parts.netloc:
        if parts.hostname in (host,) and (parts.port or 80) == port:
            path = parts.path or "/"
            return prefix + path + (("?" + parts.query) if parts.query else "")
        return loc
    if loc.startswith("/") and not loc.startswith(prefix + "/") and loc != prefix:
        return prefix + loc
    return loc
