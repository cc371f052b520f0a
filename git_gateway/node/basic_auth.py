"""HTTP Basic credentials for git (shared by the node program and the server)."""
from __future__ import annotations

import base64


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
