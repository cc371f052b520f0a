"""A per-process cache of computed statistics (usage and the dashboard's series): an answer is
kept until the data it was computed from changes. The version is one primary-key read:
``GENERATION_KEY`` in ``reconciler_state``, bumped by every rollup write (``bump``), or for the
dashboard the latest sample's bucket. Bounded; thread-safe."""
from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

from ..db import ReconcilerState

GENERATION_KEY = "usage_generation"
MAX_ENTRIES = 256

_lock = threading.Lock()
_entries: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()


def version(s) -> str:
    row = s.get(ReconcilerState, GENERATION_KEY)
    return row.value if row is not None else "0"


def bump(s, now: datetime) -> None:
    """Inside a write transaction that changed a rollup."""
    row = s.get(ReconcilerState, GENERATION_KEY)
    if row is None:
        s.add(ReconcilerState(key=GENERATION_KEY, value="1", updated_at=now))
    else:
        row.value, row.updated_at = str(int(row.value) + 1), now


def get(svc, key: tuple, ver) -> Any:
    full = (svc.db.url, id(svc.db), *key)
    with _lock:
        hit = _entries.get(full)
        if hit is None or hit[0] != ver:
            return None
        _entries.move_to_end(full)
        return hit[1]


def put(svc, key: tuple, ver, value: Any) -> None:
    full = (svc.db.url, id(svc.db), *key)
    with _lock:
        _entries[full] = (ver, value)
        _entries.move_to_end(full)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)


def clear() -> None:
    with _lock:
        _entries.clear()
