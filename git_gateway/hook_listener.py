"""The git hooks' callback, served inside the process that runs ``git http-backend``.

Why: the hooks of a push run while its ``POST …/git-receive-pack`` holds one of the web server's
worker threads. When their callback went to the web server too (``/internal/hooks``), 16 pushes
at once took all 16 threads, every hook waited for a thread that only a finished push could give
back, and the pushes failed after the hook timeout (bench/bench_push_concurrent.py, 50 pushes:
issue 17 item 4). Here each callback gets a thread of its own, never one of the web server's, so
hooks cannot starve whatever the number of pushes at once; and the callback skips the web
framework (the handler is called directly).

``HookListener(handle, secret)`` listens on 127.0.0.1 (an ephemeral port) and answers
``POST /hooks`` in the JSON form (``hook_program``) or the text form (``hook_wire``), with the same
``X-Slipway-Hook-Secret`` check as the web endpoint (any local user can connect to loopback).
``handle(payload) -> (ok, messages, http_status)`` is the portal's hook dispatcher. The reply is
text (``ok``/``refused`` then one message per line) when asked for, else JSON.
"""
from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from . import hook_wire
from .jsonbody import loads_bounded

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
Handle = Callable[[dict], "tuple[bool, list[str], int]"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256          # a burst of pushes queues, never gets refused


class _Handler(BaseHTTPRequestHandler):
    server_version = "slipway-hooks"
    protocol_version = "HTTP/1.0"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 — the base class's name
        pass

    def do_POST(self):  # noqa: N802 — http.server's name
        listener: HookListener = self.server.listener  # type: ignore[attr-defined]
        text = self.headers.get("Accept") == "text/plain"
        given = self.headers.get("X-Slipway-Hook-Secret", "")
        if self.path != "/hooks":
            return self._reply(text, False, ["slipway: not a hook callback URL"], 404)
        if not given or not hmac.compare_digest(given.encode(), listener.secret.encode()):
            return self._reply(text, False, ["slipway: hook secret mismatch; the repository's hooks "
                                             "are not Slipway's or the server was reconfigured"], 403)
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._reply(text, False, ["slipway: hook callback without Content-Length"], 411)
        if not 0 <= length <= MAX_BODY:
            return self._reply(text, False, ["slipway: hook payload too large"], 413)
        body = self.rfile.read(length)
        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip()
        try:
            if ctype == hook_wire.MEDIA_TYPE:
                payload, problems = hook_wire.parse(body)
                if problems and payload["phase"] == "pre-receive":
                    return self._reply(text, False, problems, 200)
            else:
                payload = loads_bounded(body, max_bytes=MAX_BODY)
                if not isinstance(payload, dict):
                    raise ValueError(f"got {type(payload).__name__}")
        except ValueError as exc:
            return self._reply(text, False, [f"slipway: hook payload is malformed ({exc})"], 400)
        try:
            ok, messages, status = listener.handle(payload)
        except Exception:  # noqa: BLE001 — the handler's own errors are its replies; this is a bug
            log.exception("hook callback failed")
            ok, messages, status = False, ["slipway: internal error in Slipway"], 500
        return self._reply(text, ok, messages, status)

    def _reply(self, text: bool, ok: bool, messages: list[str], status: int) -> None:
        if text:
            lines = ["ok" if ok else "refused"] + [ln for m in messages for ln in str(m).splitlines()]
            body, ctype = ("\n".join(lines) + "\n").encode("utf-8"), "text/plain; charset=utf-8"
        else:
            body = json.dumps({"ok": ok, "messages": list(messages)}).encode("utf-8")
            ctype = "application/json"
        reason = self.responses.get(status, ("",))[0]
        head = (f"HTTP/1.0 {status} {reason}\r\nServer: {self.server_version}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n")
        # one write: headers and body in separate small segments would meet Nagle's algorithm
        # and the client's delayed ACK (up to 40 ms on Linux) on every callback
        self.wfile.write(head.encode("latin-1") + body)


class HookListener:
    """Started on first use (``url``), stopped by ``close``."""

    def __init__(self, handle: Handle, secret: str, host: str = "127.0.0.1"):
        if not secret:
            raise ValueError("the hook listener needs the hook secret")
        self.handle = handle
        self.secret = secret
        self.host = host
        self._server: _Server | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        with self._lock:
            if self._server is None:
                server = _Server((self.host, 0), _Handler)
                server.listener = self  # type: ignore[attr-defined]
                threading.Thread(target=server.serve_forever, name="slipway-hooks",
                                 kwargs={"poll_interval": 0.5}, daemon=True).start()
                self._server = server
            return f"http://{self.host}:{self._server.server_address[1]}/hooks"

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
