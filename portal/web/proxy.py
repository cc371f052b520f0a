"""``/jobs/<id>/proxy/…``: forward HTTP to ``node:port`` of a RUNNING job (the job's ``$PORT``),
for members of the job's team (and cluster admins) only.

* streamed both ways (request body and response body are never held in memory);
* hop-by-hop headers (RFC 9110 §7.6.1, plus any named in ``Connection``) are stripped both ways;
* every proxied response carries ``Content-Security-Policy: sandbox allow-scripts allow-forms
  allow-popups`` (``SANDBOX_CSP``): the job's pages run in an opaque origin, not the portal's, so
  a job page opened by a member can neither read the portal's pages (the CSRF token) nor its
  cookies, nor call the API as that member;
* the portal's own credentials never reach the job: no ``Cookie`` header is forwarded (jobs
  cannot set cookies, so every cookie the browser sends here is the portal's: session,
  remember-me) and no Slipway token in ``Authorization`` (Bearer or Basic); every ``Set-Cookie``
  of the job's responses is dropped (a job must not plant cookies on the portal's origin);
* redirects to ``/x`` or ``http://node:port/x`` are rewritten under the proxy prefix;
* ``X-Forwarded-Prefix: /jobs/<id>/proxy`` tells prefix-aware apps where they live.

Node name -> address: ``svc.node_address`` (``config.node_addresses``, wired by
``portal.bootstrap``), else the node name itself (Slurm node names resolve on real clusters). The
local test cluster's nodes all live on 127.0.0.1: the lead wires ``lambda n: "127.0.0.1"``.

WebSockets are not proxied (WSGI cannot upgrade); a Jupyter workspace needs an ASGI/nginx hop.
Security note: the job's pages are served under the portal's host but sandboxed into an opaque
origin, and the portal's cookies and tokens are stripped. The sandbox also means the job's page
cannot send the portal session with its own cross-origin requests (fetch/XHR, form POSTs), so
apps that call back into ``/jobs/<id>/proxy/`` from script need top-level GET navigation; a
separate proxy origin (its own host) is the stronger and more compatible setup.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Response, request, stream_with_context
from flask_login import login_required

from ..jobs import states
from ..teams import access
from .common import actor, db, raise_http, svc

bp = Blueprint("proxy", __name__)

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade",
                        "proxy-connection"})
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CHUNK = 64 * 1024
# The job's content gets an opaque origin (no allow-same-origin): scripts and forms run, but
# never as the portal's origin.
SANDBOX_CSP = "sandbox allow-scripts allow-forms allow-popups"


def _hop_by_hop(headers) -> set[str]:
    named = set()
    for v in headers.get_all("Connection") if hasattr(headers, "get_all") else [headers.get("Connection", "")]:
        named.update(h.strip().lower() for h in (v or "").split(",") if h.strip())
    return HOP_BY_HOP | named


def node_address(node: str) -> str:
    return svc().node_address(node) or node


def _is_slipway_credential(value: str) -> bool:
    """An ``Authorization`` value carrying a Slipway access token (Bearer, or Basic user:token)."""
    import base64
    import binascii

    scheme, _, cred = value.partition(" ")
    cred = cred.strip()
    if scheme.lower() == "bearer":
        return cred.startswith("swp_")
    if scheme.lower() == "basic" and cred:
        try:
            _user, _, secret = base64.b64decode(cred).decode("utf-8", "replace").partition(":")
        except (binascii.Error, ValueError):
            return False
        return secret.startswith("swp_")
    return False


PROXY_PATH = re.compile(r"/jobs/\d+/proxy(/|$)")


def sandbox(resp) -> None:
    """Every response under a proxy prefix (proxied, or the portal's own 404/409/502/login
    redirect there) carries the sandbox policy, in addition to any policy the job sent (browsers
    enforce every policy given, so the job cannot lift the sandbox)."""
    if SANDBOX_CSP not in resp.headers.getlist("Content-Security-Policy"):
        resp.headers.add("Content-Security-Policy", SANDBOX_CSP)


@bp.route("/jobs/<int:job_id>/proxy/", defaults={"rest": ""}, methods=METHODS)
@bp.route("/jobs/<int:job_id>/proxy/<path:rest>", methods=METHODS)
@login_required
def forward(job_id: int, rest: str):
    try:
        job, _p, _t, _role = access.job_access(db(), actor(), job_id)
    except access.OpError as exc:
        raise_http(exc)
    if job.state == states.RUNNING and not (job.port and job.node):  # started, node not known yet
        return Response(f"job {job_id} is running but has not reported its node yet (waiting for "
                        f"its node); try again in a moment\n", 503,
                        {"Retry-After": "5"}, mimetype="text/plain")
    if job.state != states.RUNNING:
        return Response(f"job {job_id} is {job.state}; its address is reachable only while it runs\n",
                        409, mimetype="text/plain")
    host = node_address(job.node)
    port = int(job.port)
    prefix = f"/jobs/{job_id}/proxy"
    upstream = f"http://{host}:{port}/{rest}"
    if request.query_string:
        upstream += "?" + request.query_string.decode("latin-1")

    drop = _hop_by_hop(request.headers) | {"host", "content-length", "cookie"}
    headers = {}
    for k, v in request.headers.items():
        lk = k.lower()
        if lk in drop:
            continue
        if lk == "authorization" and _is_slipway_credential(v):
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
        if lk in ("set-cookie", "set-cookie2"):
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
