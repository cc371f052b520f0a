"""One public address in front of several Slipway servers, as a site's load balancer gives them
(docs/FAULTS.md §4): each TCP connection goes to the first backend that accepts it, so when a
server dies the next connection reaches another one. Git hooks, jobs' runners and their
results pushes use this address (``SLIPWAY_BASE_URL``); tests still reach each server directly.

``FailoverProxy()`` listens on a free port of 127.0.0.1 at once; add backends as ports with
``proxy.backends.append(port)``; ``proxy.close()`` stops it (threads are daemons)."""
from __future__ import annotations

import socket
import threading


class FailoverProxy:
    def __init__(self) -> None:
        self.backends: list[int] = []
        self.served: dict[int, int] = {}        # backend port -> connections it took
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, name="failover-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        for port in list(self.backends):
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                continue   # refused (dead) or not answering: the next server
            upstream.settimeout(None)
            self.served[port] = self.served.get(port, 0) + 1
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join()
            upstream.close()
            client.close()
            return
        client.close()     # no server alive: the client sees the connection closed

    def close(self) -> None:
        self._closed = True
        self._sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends (then half-close ``dst``, as the peer did) or
    fails (then both ends are shut, which also ends the pump the other way)."""
    try:
        while data := src.recv(256 * 1024):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
