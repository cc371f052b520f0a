"""Run an aiohttp application in a thread of its own (its own event loop) beside the WSGI portal:
``slipway serve`` starts the gateway this way, and the tests their fake Jupyter servers.

The socket is bound in the caller's thread, so a port in use fails ``start`` with the OSError
(and port 0 gives a free port, read back from ``port``); ``stop`` closes the listening socket,
closes the open WebSockets (1001 "going away"), gives running requests ``grace`` seconds and
ends the thread.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading

from aiohttp import web

log = logging.getLogger("slipway.workspaces.gateway")


class ThreadedServer:
    def __init__(self, app: web.Application, host: str, port: int, *, grace: float = 5.0,
                 access_log: logging.Logger | None = None, name: str = "aiohttp"):
        self.app = app
        self.host = host
        self.grace = grace
        self.name = name
        self._access_log = access_log
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=512)
        self._sock.setblocking(False)
        self.port: int = self._sock.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ThreadedServer:
        """Start serving in a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError(f"{self.name} did not start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving and wait (up to ``timeout`` seconds) for the thread to end."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop has just closed
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("%s stopped on an error", self.name)
        finally:
            self._ready.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        kwargs = {"access_log": self._access_log} if self._access_log is not None else {}
        runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=self.grace, **kwargs)
        await runner.setup()
        try:
            site = web.SockSite(runner, self._sock, backlog=512)
            await site.start()
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()


def start_gateway(resolve, touch, host: str, port: int, **app_options) -> ThreadedServer:
    """The workspace gateway (``proxy.make_gateway_app``) serving on ``host:port`` in a thread."""
    from .proxy import make_gateway_app

    app = make_gateway_app(resolve, touch, **app_options)
    return ThreadedServer(app, host, port, name="workspace-gateway").start()
