"""What the gateway's HTTP proxy (``proxy``) and WebSocket relay (``websocket``) share: the
target, the ``NotRunning`` refusal, the activity debounce, the application's keys, small replies."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from yarl import URL

from .headers import host_header

log = logging.getLogger("slipway.workspaces.gateway")

CONNECT_TIMEOUT = 10.0  # seconds to reach the Jupyter server; streams themselves never time out
MAX_WS_MESSAGE = 64 * 1024 * 1024  # one WebSocket message, either way (notebook outputs can be big)
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Target:
    """Where a workspace's Jupyter server listens, and the credential it wants."""
    host: str
    port: int
    token: str

    def __repr__(self) -> str:  # never print the credential into a log
        return f"Target(host={self.host!r}, port={self.port!r}, token=<hidden>)"


class NotRunning(Exception):
    """``resolve`` raises it for a member's workspace that is not running (404 with the message)."""


Resolve = Callable[[int, Mapping[str, str]], "Target | None"]
Touch = Callable[[int], None]


class Debounce:
    """Calls ``touch(job_id)`` in the executor at most once every ``interval`` seconds per job."""

    def __init__(self, touch: Touch, interval: float = 1.0):
        self._touch = touch
        self._interval = interval
        self._last: dict[int, float] = {}

    def __call__(self, job_id: int) -> None:
        now = time.monotonic()
        if now - self._last.get(job_id, -math.inf) < self._interval:
            return
        if len(self._last) > 4096:  # forget long-quiet workspaces
            self._last = {j: t for j, t in self._last.items() if now - t < self._interval}
        self._last[job_id] = now
        asyncio.get_running_loop().run_in_executor(None, self._safe, job_id)

    def _safe(self, job_id: int) -> None:
        try:
            self._touch(job_id)
        except Exception:  # activity is best effort: a failed touch never breaks the session
            log.exception("recording activity of workspace %s failed", job_id)


RESOLVE = web.AppKey("resolve", object)
TOUCH = web.AppKey("touch", Debounce)
CLIENT = web.AppKey("client", aiohttp.ClientSession)
OPEN_SOCKETS = web.AppKey("open_sockets", set)
DROP_COOKIES = web.AppKey("drop_cookies", tuple)


def text_response(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={"Cache-Control": "no-store"})


def upstream_url(target: Target, request: web.BaseRequest) -> URL:
    """The same path and query, encoded as the browser sent them, on the workspace's server."""
    return URL(f"http://{host_header(target.host, target.port)}{request.rel_url.raw_path_qs}",
               encoded=True)


def does_not_answer(job_id: int) -> web.Response:
    return text_response(502, f"workspace {job_id} does not answer yet (JupyterLab may still be "
                              "starting; try again in a few seconds)")
