"""What the gateway changes in the headers it carries (docs/WORKSPACES.md, "The gateway").

Towards the Jupyter server: hop-by-hop headers (RFC 9110 §7.6.1, plus any that ``Connection``
names) go, so do the browser's ``Authorization`` and the portal's own cookies (the session and
flask-login's remember-me); Jupyter's cookies (``_xsrf``, ``username-*``) stay; ``Host`` becomes
the node's ``host:port`` and ``Authorization: token <credential>`` is added.

Towards the browser: hop-by-hop headers go; everything else (``Set-Cookie`` included: Jupyter's
cookies are path-scoped to its base URL ``/workspaces/<id>/lab/``) passes; a ``Location`` that
points at the node itself is made relative so the browser stays on the gateway.
"""
from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade",
                        "proxy-connection"})
# the portal's cookies: never sent on to a workspace (flask-login's remember-me included)
PORTAL_COOKIES = ("slipway_session", "remember_token")
# set by the WebSocket client itself when it connects upstream
_WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                           "sec-websocket-protocol", "sec-websocket-accept"})


def hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """The lower-case names not to forward: the fixed set plus any that ``Connection`` names."""
    named = set(HOP_BY_HOP)
    for value in headers.getall("Connection", ()):
        named.update(h.strip().lower() for h in value.split(",") if h.strip())
    return named


def filter_cookie_header(value: str, drop: Iterable[str]) -> str:
    """``value`` (a ``Cookie`` header) without the pairs named in ``drop``; the others are kept
    byte for byte (no re-quoting)."""
    dropped = {d.lower() for d in drop}
    kept = []
    for pair in value.split(";"):
        pair = pair.strip()
        if not pair:
            continue
        name = pair.split("=", 1)[0].strip()
        if name.lower() not in dropped:
            kept.append(pair)
    return "; ".join(kept)


def host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def upstream_headers(browser: CIMultiDictProxy[str], host: str, port: int, token: str, *,
                     drop_cookies: Iterable[str] = PORTAL_COOKIES,
                     websocket: bool = False) -> CIMultiDict[str]:
    """The headers to send to the Jupyter server for a request that carried ``browser``."""
    # ``Expect: 100-continue`` is answered by the gateway itself; the body is streamed on anyway
    # no Accept-Encoding: the answer comes uncompressed, so the gateway can keep the credential
    # out of it (``scrub``)
    skip = hop_by_hop(browser) | {"host", "authorization", "cookie", "expect", "accept-encoding"}
    if websocket:
        skip |= _WS_HANDSHAKE
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in browser.items():
        if name.lower() not in skip:
            out.add(name, value)
    cookies = [filter_cookie_header(v, drop_cookies) for v in browser.getall("Cookie", ())]
    cookies = [c for c in cookies if c]
    if cookies:
        out["Cookie"] = "; ".join(cookies)
    out["Host"] = host_header(host, port)
    out["Authorization"] = f"token {token}"
    return out


def downstream_headers(upstream: CIMultiDictProxy[str], host: str, port: int) -> CIMultiDict[str]:
    """The headers to send back to the browser for a response that carried ``upstream``."""
    skip = hop_by_hop(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    node = f"http://{host_header(host, port)}"
    for name, value in upstream.items():
        lname = name.lower()
        if lname in skip:
            continue
        if lname == "location" and (value == node or value.startswith(node + "/")):
            value = value[len(node):] or "/"
        out.add(name, value)
    return out
