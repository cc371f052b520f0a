"""The gateway's WebSocket relay (kernels, terminals): the caller has authorized the browser;
connect upstream first (the credential in the handshake, the browser's subprotocols), then
accept the browser with the subprotocol Jupyter chose, then copy messages both ways (text and
binary; pings are answered on each side by aiohttp) until either side ends, and pass its close
code on to the other.
"""
from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import WSMsgType, web

from .common import (
    CLIENT,
    DROP_COOKIES,
    MAX_WS_MESSAGE,
    OPEN_SOCKETS,
    TOUCH,
    Target,
    does_not_answer,
    log,
    text_response,
    upstream_url,
)
from .headers import upstream_headers

# codes a close frame may not carry (RFC 6455 §7.4.1): "no status", "abnormal", "TLS failure"
_UNSENDABLE = {1005, 1006, 1015}


def _protocols(request: web.Request) -> list[str]:
    return [p.strip() for v in request.headers.getall("Sec-WebSocket-Protocol", ())
            for p in v.split(",") if p.strip()]


async def relay(request: web.Request, job_id: int, target: Target) -> web.StreamResponse:
    client = request.app[CLIENT]
    headers = upstream_headers(request.headers, target.host, target.port, target.token,
                               drop_cookies=request.app[DROP_COOKIES], websocket=True)
    try:
        upstream = await client.ws_connect(upstream_url(target, request), headers=headers,
                                           protocols=_protocols(request), autoping=True,
                                           max_msg_size=MAX_WS_MESSAGE)
    except aiohttp.WSServerHandshakeError as exc:  # Jupyter answered, but not with an upgrade
        status = exc.status if 400 <= exc.status < 600 else 502
        return text_response(status, f"workspace {job_id} refused the WebSocket (HTTP {exc.status})")
    except (TimeoutError, aiohttp.ClientConnectionError):
        return does_not_answer(job_id)
    except aiohttp.ClientError as exc:
        log.warning("workspace %s: WebSocket to %s:%s failed: %s", job_id, target.host, target.port, exc)
        return text_response(502, f"workspace {job_id}: bad answer from the workspace")

    browser = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (),
                                    autoping=True, max_msg_size=MAX_WS_MESSAGE)
    sockets = request.app[OPEN_SOCKETS]
    try:
        await browser.prepare(request)
        sockets.add(browser)
        touch = request.app[TOUCH]
        await asyncio.gather(_pump(browser, upstream, lambda: touch(job_id)),
                             _pump(upstream, browser, None))
    finally:
        sockets.discard(browser)
        if not upstream.closed:
            await upstream.close()
        if not browser.closed:
            await browser.close()
    return browser


async def _pump(src, dst, on_message) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends, then close ``dst`` with ``src``'s close code
    and reason."""
    code, reason = aiohttp.WSCloseCode.OK, b""
    try:
        while True:
            msg = await src.receive()  # a close frame is answered by aiohttp (autoclose)
            if msg.type == WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == WSMsgType.CLOSE:
                if isinstance(msg.data, int) and msg.data not in _UNSENDABLE:
                    code = msg.data
                reason = (msg.extra or "").encode()[:123]  # a close frame's reason: <= 123 bytes
                break
            elif msg.type == WSMsgType.ERROR:  # a protocol error, an oversized message
                error = msg.data
                code = (error.code if isinstance(error, aiohttp.WebSocketError)
                        else aiohttp.WSCloseCode.INTERNAL_ERROR)
                break
            elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):  # closed from our side
                break
            else:
                continue
            if on_message is not None:
                on_message()
    except ConnectionError:  # the other side went away while we wrote to it
        code = aiohttp.WSCloseCode.GOING_AWAY
    if not dst.closed:
        await dst.close(code=code, message=reason)
