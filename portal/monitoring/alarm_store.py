"""Alarms in the database: open an alarm ONCE, resolve it ONCE, and in the same transaction the
mail each event owes (one row per address: ``alarm_mail`` sends them after the commit). The
partial unique index ``uq_alarms_open_key`` keeps one open alarm per key even when two
reconcilers (or a reconciler and a page) open the same one at the same moment."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..db import Membership, ReconcilerState, User
from ..db.alarm_models import Alarm, AlarmMail, NodeGpuPeak
from ..teams.access import ROLE_ADMIN
from .alarm_kinds import TEAM_KINDS, Condition, Findings, clip

TICK_KEY = "monitoring.alarms.tick"          # when the last reconciler tick ended, and its length
PENDING_KEY = "monitoring.alarms.pending"    # key -> since when a condition with a grace holds
STORAGE_KEY = "monitoring.alarms.storage"    # when storage was last measured for the alarms


@dataclass(frozen=True)
class Event:
    alarm_id: int
    key: str
    event: str        # "opened" | "resolved"


def open_alarms(s) -> dict[str, Alarm]:
    return {a.key: a for a in s.scalars(select(Alarm).where(Alarm.resolved_at.is_(None)))}


def apply(s, findings: Findings, now: datetime, *, mail: bool) -> list[Event]:
    """Open what holds and is not open yet; resolve the open alarms of a judged kind whose
    condition no longer holds. ``mail``: queue the messages (no mailer: only the web)."""
    events: list[Event] = []
    current = open_alarms(s)
    for key, cond in findings.conditions.items():
        if key in current:
            continue   # open already: never again while it lasts
        alarm = _insert(s, cond, now)
        if alarm is not None:
            events.append(Event(alarm.id, key, "opened"))
            if mail:
                queue_mail(s, alarm, "opened", now)
    for key, alarm in current.items():
        if alarm.kind in findings.judged and key not in findings.conditions \
                and key not in findings.unknown:
            alarm.resolved_at = now
            alarm.resolution = clip(findings.now_ok.get(key) or _gone(alarm))
            events.append(Event(alarm.id, key, "resolved"))
            if mail:
                queue_mail(s, alarm, "resolved", now)
    return events


def hold_back(s, findings: Findings, now: datetime, graces: dict[str, float]) -> None:
    """Drop from ``findings`` the conditions of a kind with a grace (``graces``: kind -> seconds)
    that have not lasted that long yet and are not open already; remember since when each one
    holds (a small state row, written only when it changes)."""
    try:
        pending = json.loads(read_state(s, PENDING_KEY) or "{}")
    except ValueError:
        pending = {}
    held = [c for c in findings.conditions.values() if graces.get(c.kind)]
    current = set(open_alarms(s)) if held else set()
    keep: dict[str, str] = {k: v for k, v in pending.items()   # kinds not judged now: unknown
                            if k.split(":", 1)[0] not in findings.judged}
    for cond in held:
        if cond.key in current:
            continue
        try:
            since = datetime.fromisoformat(pending[cond.key]) if cond.key in pending else now
        except (TypeError, ValueError):
            since = now
        since = min(since, now)
        keep[cond.key] = since.isoformat()
        if (now - since).total_seconds() < graces[cond.kind]:
            del findings.conditions[cond.key]
    if keep != pending:
        write_state(s, PENDING_KEY, json.dumps(keep, sort_keys=True), now)


def _gone(alarm: Alarm) -> str:
    if alarm.kind in TEAM_KINDS:
        return f"team {alarm.subject} no longer exists"
    if alarm.kind.startswith("node-"):
        return f"Slurm no longer lists node {alarm.subject}"
    return "the condition cleared"


def _insert(s, cond: Condition, now: datetime) -> Alarm | None:
    """The new open alarm, or None when another reconciler opened it first (the index)."""
    alarm = Alarm(key=cond.key, kind=cond.kind, subject=cond.subject, team_id=cond.team_id,
                  detail=cond.detail, opened_at=now)
    try:
        with s.begin_nested():
            s.add(alarm)
            s.flush()
    except IntegrityError:
        return None
    return alarm


# --------------------------------------------------------------------------------- mail

def recipients(s, team_id: int | None) -> list[str]:
    """Every active cluster administrator with an email; for a team's alarm also the team's
    owners and administrators. One address once (case-insensitive), sorted."""
    q = select(User.email).where(User.is_cluster_admin.is_(True), User.active.is_(True),
                                 User.email.is_not(None))
    addrs = list(s.scalars(q))
    if team_id is not None:
        addrs += s.scalars(select(User.email).join(Membership, Membership.user_id == User.id)
                           .where(Membership.team_id == team_id, Membership.role.in_(ROLE_ADMIN),
                                  User.active.is_(True), User.email.is_not(None)))
    seen: dict[str, str] = {}
    for a in addrs:
        a = (a or "").strip()
        if a and "@" in a:
            seen.setdefault(a.lower(), a)
    return sorted(seen.values(), key=str.lower)


def queue_mail(s, alarm: Alarm, event: str, now: datetime) -> int:
    team = alarm.team_id if alarm.kind in TEAM_KINDS else None
    n = 0
    for addr in recipients(s, team):
        s.add(AlarmMail(alarm_id=alarm.id, event=event, to_addr=addr[:255], state="pending",
                        created_at=now, attempts=0))
        n += 1
    return n


# ----------------------------------------------------------------------------- GPU peaks

def gpu_peaks(s) -> dict[tuple[str, str], int]:
    return {(p.node, p.gpu_type): p.most for p in s.scalars(select(NodeGpuPeak))}


def raise_peaks(s, more: dict[tuple[str, str], int], now: datetime) -> None:
    for (node, gpu_type), count in more.items():
        row = s.get(NodeGpuPeak, (node, gpu_type))
        if row is None:
            s.add(NodeGpuPeak(node=node, gpu_type=gpu_type, most=count, seen_at=now))
        elif count > row.most:
            row.most, row.seen_at = count, now


def forget_peaks(s, node: str) -> int:
    """An administrator accepts the node's GPUs as they are now: the most recorded is dropped and
    the next tick records what sinfo shows. The number of rows dropped."""
    rows = list(s.scalars(select(NodeGpuPeak).where(NodeGpuPeak.node == node)))
    for row in rows:
        s.delete(row)
    return len(rows)


# ------------------------------------------------------------------- small state rows

def read_state(s, key: str) -> str | None:
    row = s.get(ReconcilerState, key)
    return row.value if row is not None else None


def write_state(s, key: str, value: str, now: datetime) -> None:
    row = s.get(ReconcilerState, key)
    if row is None:
        s.add(ReconcilerState(key=key, value=value, updated_at=now))
    else:
        row.value, row.updated_at = value, now
