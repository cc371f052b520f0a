"""The credential a workspace's Jupyter server requires: derived, never stored, never shown.

``token(secret_key, job_id)`` = HMAC-SHA256(secret_key, "workspace:<id>"), hex. The portal
computes it where it needs it (the runner spec, 0600, gives it to the container as
``JUPYTER_TOKEN``; the gateway injects it into every proxied request). Somebody who reaches the
node's port directly has no way to it."""
from __future__ import annotations

import hashlib
import hmac

ENV_NAME = "JUPYTER_TOKEN"


def token(secret_key: str, job_id: int) -> str:
    return hmac.new(secret_key.encode(), f"workspace:{int(job_id)}".encode(),
                    hashlib.sha256).hexdigest()
