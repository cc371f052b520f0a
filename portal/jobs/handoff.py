"""What a push's pre-receive reserved, handed to the same push's post-receive in this process.

Both hooks of one ``receive-pack`` call back the same server (its hook listener), so the
post-receive can take the reserved job ids from here instead of looking them up. Keyed by
(repository, ref, new commit); an entry is taken once. Bounded: entries of pushes whose refs never
moved (git refused the update after the pre-receive) are dropped oldest first. Only a shortcut:
a miss (another server, a restart) falls back to the lookup, and the submission's conditional
claim checks the job is still this push's reservation either way.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

MAX_ENTRIES = 4096
_entries: OrderedDict[tuple, int] = OrderedDict()
_lock = threading.Lock()


def put(svc, reserved: dict[tuple[str, str, str], int]) -> None:
    with _lock:
        _entries.update({scoped(svc, k): v for k, v in reserved.items()})
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)


def take(svc, repo: str, ref: str, commit: str) -> int | None:
    with _lock:
        return _entries.pop(scoped(svc, (repo, ref, commit)), None)


def scoped(svc, key: tuple) -> tuple:
    """One Slipway's (one database's) entries apart from another's in the same process."""
    return (id(svc.db), svc.db.url, *key)
