"""The gateway's aiohttp application: ``/workspaces/<id>/lab[/...]`` to the workspace's Jupyter
server, HTTP streamed both ways and WebSockets relayed (docs/WORKSPACES.md, "The gateway").

``make_gateway_app(resolve, touch)``:

* ``resolve(job_id, cookies) -> Target | None`` (sync; it reads the database, so it runs in the
  loop's default executor): who may enter and where the workspace listens. ``None`` -> 404 "not
  found" (anonymous and outsiders alike, and the upstream sees nothing); ``NotRunning(message)``
  -> 404 with the message ("workspace 7 is not running").
* ``touch(job_id)`` (sync): activity for the idle policy, on every proxied request and on every
  WebSocket message from the browser, at most once a second per workspace (``Debounce``), in the
  executor.

Every other path answers 404. The Jupyter server runs with base URL ``/workspaces/<id>/lab/``, so
the path and query go upstream unchanged (as the browser encoded them).
"""
from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from .common import (
    CHUNK,
    CLIENT,
    CONNECT_TIMEOUT,
    DROP_COOKIES,
    OPEN_SOCKETS,
    RESOLVE,
    TOUCH,
    Debounce,
    NotRunning,
    Resolve,
    Target,
    Touch,
    does_not_answer,
    log,
    text_response,
    upstream_url,
)
from .scrub import Scrubber, is_textual
from .headers import PORTAL_COOKIES, downstream_headers, upstream_headers
from .websocket import relay

__all__ = ["NotRunning", "Target", "make_gateway_app"]


def make_gateway_app(resolve: Resolve, touch: Touch, *, drop_cookies=PORTAL_COOKIES,
                     touch_interval: float = 1.0) -> web.Application:
    """The gateway (see the module's docstring). ``drop_cookies``: the portal's cookie names,
    never forwarded."""
    app = web.Application()
    app[RESOLVE] = resolve
    app[TOUCH] = Debounce(touch, touch_interval)
    app[OPEN_SOCKETS] = set()
    app[DROP_COOKIES] = tuple(drop_cookies)
    app.cleanup_ctx.append(_client_session)
    app.on_shutdown.append(_close_sockets)
    app.router.add_route("*", r"/workspaces/{job_id:[1-9][0-9]{0,17}}/lab", handle)
    app.router.add_route("*", r"/workspaces/{job_id:[1-9][0-9]{0,17}}/lab/{tail:.*}", handle)
    return app


async def _client_session(app: web.Application):
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT,
                                    sock_read=None)
    # no cookie jar: Jupyter's cookies belong to each browser, never to the gateway; no automatic
    # headers and no decompression: what the browser asked for and what Jupyter answered pass as is
    async with aiohttp.ClientSession(
            timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            connector=aiohttp.TCPConnector(limit=0, force_close=False)) as client:
        app[CLIENT] = client
        yield


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[OPEN_SOCKETS]):
        await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"gateway shutting down")


async def handle(request: web.Request) -> web.StreamResponse:
    job_id = int(request.match_info["job_id"])
    app = request.app
    loop = asyncio.get_running_loop()
    try:
        target = await loop.run_in_executor(None, app[RESOLVE], job_id, dict(request.cookies))
    except NotRunning as exc:
        return text_response(404, str(exc) or f"workspace {job_id} is not running")
    except Exception:  # noqa: BLE001 (a broken lookup answers 500, and the gateway lives on)
        log.exception("resolving workspace %s failed", job_id)
        return text_response(500, "internal error")
    if target is None:
        return text_response(404, "not found")
    app[TOUCH](job_id)
    if request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket":
        return await relay(request, job_id, target)
    return await _forward_http(request, job_id, target)


async def _body(request: web.Request):
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


async def _forward_http(request: web.Request, job_id: int, target: Target) -> web.StreamResponse:
    client = request.app[CLIENT]
    headers = upstream_headers(request.headers, target.host, target.port, target.token,
                               drop_cookies=request.app[DROP_COOKIES])
    data = _body(request) if request.body_exists else None
    try:
        upstream = await client.request(request.method, upstream_url(target, request),
                                        headers=headers, data=data, allow_redirects=False)
    except (TimeoutError, aiohttp.ClientConnectionError):
        return does_not_answer(job_id)
    except aiohttp.ClientError as exc:
        log.warning("workspace %s: request to %s:%s failed: %s", job_id, target.host, target.port, exc)
        return text_response(502, f"workspace {job_id}: bad answer from the workspace")
    async with upstream:
        out_headers = downstream_headers(upstream.headers, target.host, target.port)
        scrubber = None
        if is_textual(upstream.headers.get("Content-Type")):
            if upstream.headers.get("Content-Encoding", "identity").lower() != "identity":
                log.warning("workspace %s: a compressed text answer cannot be checked", job_id)
                return text_response(502, f"workspace {job_id}: unexpected compressed answer")
            scrubber = Scrubber(target.token)   # the length may change: sent chunked
            out_headers.popall("Content-Length", None)
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out_headers)
        try:
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(scrubber.feed(chunk) if scrubber else chunk)
            if scrubber:
                await resp.write(scrubber.flush())
        except ConnectionError:  # the browser went away
            return resp
        except (TimeoutError, aiohttp.ClientError) as exc:  # the workspace broke off
            log.warning("workspace %s: response cut off: %s", job_id, exc)
            if request.transport is not None:  # no clean end: the browser must see it is cut
                request.transport.close()
            return resp
        await resp.write_eof()
    return resp
