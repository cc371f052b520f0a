"""A one-shot HTTP server on loopback for hook tests: it reads ONE request, records it and
answers with the given status, content type and body."""
from __future__ import annotations

import socket
import threading


def oneshot_server(status: int = 200, body: bytes = b"ok\n", ctype: str = "text/plain",
                   path: str = "/internal/hooks", host: str = "127.0.0.1"
                   ) -> tuple[str, list[tuple[str, bytes]]]:
    """Returns (url, seen): ``seen`` gets (request head, request body) once it is served.
    ``host``: an IPv6 address (``::1``) makes an IPv6 server and a ``[::1]`` URL."""
    v6 = ":" in host
    srv = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
    srv.bind((host, 0))
    srv.listen(1)
    seen: list[tuple[str, bytes]] = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int([h for h in head.split(b"\r\n")
                          if h.lower().startswith(b"content-length")][0].split(b":")[1])
            while len(rest) < length:
                rest += conn.recv(65536)
            seen.append((head.decode(), rest))
            conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: %s\r\n\r\n%s" % (status, ctype.encode(), body))
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    shown = f"[{host}]" if v6 else host
    return f"http://{shown}:{srv.getsockname()[1]}{path}", seen
