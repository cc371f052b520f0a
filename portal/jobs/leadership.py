"""Who runs the reconciler now: the record the leading reconciler writes when it takes the lease
(``jobs/reconciler/leader.py``) and pages, the API and the CLI read (docs/FAULTS.md §4).

One row of ``reconciler_state`` (key ``reconciler.leader``): the leader's host and process id,
how it holds the lease (a PostgreSQL advisory lock or a file lock) and since when. A leader that
dies (``kill -9``) cannot clear it: the next leader overwrites it when it takes over, and the
age of the last tick (``monitoring.alarms.check_reconciler``) tells a stale row from a live one.
"""
from __future__ import annotations

import json
import os
import socket
from datetime import datetime

from ..db import ReconcilerState
from ..services import Services

LEADER_KEY = "reconciler.leader"


def this_process() -> tuple[str, int]:
    """(host, pid) of the calling process: how a leader is named."""
    return socket.gethostname(), os.getpid()


def record(svc: Services, since: datetime, lease: str) -> dict:
    """This process leads since ``since``, holding ``lease`` (its description): written in one
    transaction, replacing whatever an earlier leader wrote."""
    host, pid = this_process()
    value = {"host": host, "pid": pid, "since": since.isoformat(), "lease": lease}
    with svc.db.transaction() as s:
        row = s.get(ReconcilerState, LEADER_KEY)
        text = json.dumps(value, sort_keys=True)
        if row is None:
            s.add(ReconcilerState(key=LEADER_KEY, value=text, updated_at=since))
        else:
            row.value, row.updated_at = text, since
    return value


def clear(svc: Services) -> None:
    """Forget the record when it names this process (a leader stepping down in good order)."""
    host, pid = this_process()
    with svc.db.transaction() as s:
        row = s.get(ReconcilerState, LEADER_KEY)
        mine = _parse(row.value if row is not None else None)
        if mine is not None and (mine["host"], mine["pid"]) == (host, pid):
            s.delete(row)


def current(svc: Services) -> dict | None:
    """The last leader's record: ``{"host", "pid", "holder": "host:pid", "since", "lease"}``,
    or None when no reconciler has led yet (or the last one stepped down in good order)."""
    with svc.db.session() as s:
        row = s.get(ReconcilerState, LEADER_KEY)
        return _parse(row.value if row is not None else None)


def _parse(text: str | None) -> dict | None:
    try:
        d = json.loads(text) if text else None
        if not isinstance(d, dict):
            return None
        host, pid = str(d["host"]), int(d["pid"])
        since = datetime.fromisoformat(str(d["since"])).isoformat()
    except (ValueError, TypeError, KeyError):
        return None
    return {"host": host, "pid": pid, "holder": f"{host}:{pid}", "since": since,
            "lease": str(d.get("lease") or "")}


def describe(d: dict | None) -> str:
    """``reconciler: active on HOST:PID since TIME (LEASE)``, in words for logs and messages."""
    if not d:
        return "another reconciler holds the leader lease (it has not recorded where it runs)"
    since = datetime.fromisoformat(d["since"]).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return f"the reconciler is active on {d['holder']} since {since} ({d['lease']})"
