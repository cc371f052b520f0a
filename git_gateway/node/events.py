"""What the runner says: lines on stderr (Slurm's output file) and the events it POSTs to the
portal's callback URL (docs/ARCHITECTURE.md). Callback failures are logged, never fatal.
A sweep task's events carry ``"task": <i>`` (``with_task``; docs/SHARING.md)."""
from __future__ import annotations

import json
import sys
import urllib.request


def say(msg: str) -> None:
    try:
        sys.stderr.write(f"slipway-runner: {msg}\n")
        sys.stderr.flush()
    except Exception:
        pass


def with_task(event: dict, task_id: int | None) -> dict:
    """``event`` with ``"task": task_id`` added when the job is a sweep task (a new dict)."""
    return event if task_id is None else {**event, "task": task_id}


def post_event(url: str | None, token: str, event: dict, timeout: float = 3.0) -> bool:
    if not url:
        return False
    req = urllib.request.Request(url, data=json.dumps(event).encode("utf-8"), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read(65536)
        return True
    except Exception as e:  # never fatal
        say(f"callback {event.get('event')} failed: {e}")
        return False
