"""Keep the Jupyter server's credential out of what reaches the browser.

JupyterLab writes the server's token into every page it serves (``page_config["token"]``, so its
front end can call the API). Through the gateway the front end needs none (the gateway adds the
credential to every request and handshake), so the gateway removes the token's bytes from every
textual response: the page's JSON then says ``"token": ""`` and JupyterLab sends no token of its
own. The Jupyter server is asked for uncompressed bodies (``headers.upstream_headers`` drops
``Accept-Encoding``), and a response the gateway cannot read (compressed anyway) is refused
rather than passed on. A token split across two chunks is caught: the scrubber holds back
``len(token) - 1`` bytes until the next chunk or the end.
"""
from __future__ import annotations

TEXTUAL = ("text/", "application/json", "application/javascript", "application/x-javascript",
           "application/xml", "application/xhtml+xml", "+json", "+xml")


def is_textual(content_type: str | None) -> bool:
    ct = (content_type or "").split(";", 1)[0].strip().lower()
    return any(ct.startswith(t) if t.endswith("/") else (t in ct) for t in TEXTUAL)


class Scrubber:
    """``feed(chunk)`` → bytes safe to send now; ``flush()`` → the rest, at the end."""

    def __init__(self, secret: str):
        self.secret = secret.encode()
        self.keep = max(len(self.secret) - 1, 0)
        self.held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = (self.held + chunk).replace(self.secret, b"") if self.secret else self.held + chunk
        if self.keep and len(data) > self.keep:
            self.held, out = data[-self.keep:], data[:-self.keep]
        elif self.keep:
            self.held, out = data, b""
        else:
            self.held, out = b"", data
        return out

    def flush(self) -> bytes:
        out, self.held = self.held.replace(self.secret, b"") if self.secret else self.held, b""
        return out
