"""A push's pre-receive checks made ahead, while git unpacks the push (``push.precheck``).

The gateway reads a push's commands and options from its request before ``receive-pack`` starts
and asks for the checks then; unpacking and the connectivity walk take git ~6 ms on one core, so
the checks run beside them and the pre-receive hook, when it calls, finds them made (or waits
for them to finish). An entry is used once, by the pre-receive of the same push (same
repository, pusher, updates in order and options), within ``MAX_AGE_S``; anything else computes
the checks itself, as before. Results are computed here from the database, never supplied by a
caller, so an entry can only ever be what the check would have said a moment earlier.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from contextlib import contextmanager

from .handoff import scoped

MAX_AGE_S = 30.0
WAIT_S = 5.0
MAX_ENTRIES = 1024
_entries: dict[tuple, tuple[float, Future]] = {}
_lock = threading.Lock()


@contextmanager
def making(svc, key: tuple):
    """Register ``key`` as being checked; the body calls ``done(result)``. A failure leaves no
    entry (the pre-receive then checks for itself)."""
    future: Future = Future()
    key = scoped(svc, key)
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            _drop_old()
        _entries[key] = (time.monotonic(), future)
    try:
        yield future.set_result
    except BaseException:
        with _lock:
            if _entries.get(key, (0, None))[1] is future:
                del _entries[key]
        if not future.done():
            future.set_result(None)
        raise


def take(svc, key: tuple):
    """The checks made ahead for ``key`` (waiting for them when still running), or None."""
    with _lock:
        entry = _entries.pop(scoped(svc, key), None)
    if entry is None or time.monotonic() - entry[0] > MAX_AGE_S:
        return None
    try:
        return entry[1].result(timeout=WAIT_S)
    except FutureTimeout:
        return None


def _drop_old() -> None:
    now = time.monotonic()
    for k in [k for k, (at, _f) in _entries.items() if now - at > MAX_AGE_S]:
        del _entries[k]
    while len(_entries) >= MAX_ENTRIES:
        del _entries[next(iter(_entries))]
