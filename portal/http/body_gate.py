"""Large request bodies only from callers who showed valid credentials (waitress).

Waitress reads a request's whole body before the application sees it (into memory up to
``inbuf_overflow``, then into a temporary file), so the app's own checks come too late to stop a
stranger from sending Slipway 64 GiB: without this gate, anyone who can reach the port could
fill the server's temporary disk with a few requests, no account needed.

The gate runs when a request's headers are complete, before any of its body is read: a body
larger than ``anonymous_max`` bytes (a declared Content-Length, or any chunked body, whose size
is unknown) is read only when ``allowed(headers, path)`` says the caller's credentials are
valid (``portal.identity.request_credentials``); otherwise the answer is 401 at once, with
``WWW-Authenticate`` so git and git-lfs ask for credentials and try again, and the connection
closes. An ``Expect: 100-continue`` client is never told to send the body it may not send.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, create_server
from waitress.utilities import Error

log = logging.getLogger("slipway.body_gate")

Allowed = Callable[[Mapping[str, str], str], bool]


class CredentialsRequired(Error):
    code = 401
    reason = "Unauthorized"

    def to_response(self, ident=None):
        status, headers, body = super().to_response(ident)
        return status, [*headers, ("WWW-Authenticate", 'Basic realm="Slipway"')], body


def _message(limit: int) -> str:
    return (f"a request body over {limit} bytes is read only from a caller with valid "
            "credentials (an access token, a job token or a portal login): log in or send them")


def gated_channel(allowed: Allowed, anonymous_max: int) -> type[HTTPChannel]:
    """An ``HTTPChannel`` whose requests pass the gate."""

    class GatedParser(HTTPRequestParser):
        def parse_header(self, header_plus):
            super().parse_header(header_plus)
            if not (self.chunked or self.content_length > anonymous_max):
                return
            try:
                ok = allowed(self.headers, self.path or "")
            except Exception:  # noqa: BLE001 - a failing check refuses; the caller may retry
                log.exception("checking the credentials of a large request failed")
                ok = False
            if not ok:
                self.error = CredentialsRequired(_message(anonymous_max))
                self.expect_continue = False
                self.completed = True

    class GatedChannel(HTTPChannel):
        parser_class = GatedParser

    return GatedChannel


def server_factory(allowed: Allowed, anonymous_max: int):
    """What ``waitress.serve(_server=…)`` takes: waitress's server, every listening socket of it
    with the gated channel."""
    channel = gated_channel(allowed, anonymous_max)

    def make(app, **kw):
        sockets: dict = {}
        server = create_server(app, map=sockets, **kw)
        for one in {id(d): d for d in [server, *sockets.values()]}.values():
            if isinstance(one, BaseWSGIServer):
                one.channel_class = channel
        return server

    return make
