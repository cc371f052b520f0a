"""Alarms as the front doors show them (the page, ``GET /api/alarms``, ``slipway alarms``): open
alarms first, then the history, newest first, a page at a time. Cluster administrators see
every alarm; everybody else only their own teams' balance and storage alarms."""
from __future__ import annotations

from sqlalchemy import func, select

from ..db.alarm_models import Alarm, AlarmMail
from ..teams.access import Actor, my_team_ids
from .alarm_kinds import LABELS, TEAM_KINDS

PER_PAGE = 50
MAX_PER_PAGE = 200
OPEN_SHOWN = 500     # open alarms shown at once (a cluster has far fewer)


def iso(t) -> str | None:
    return t.isoformat() if t else None


def alarm_dict(a: Alarm, mails: dict | None = None) -> dict:
    return {"id": a.id, "key": a.key, "kind": a.kind, "label": LABELS.get(a.kind, a.kind),
            "subject": a.subject, "team": a.subject if a.kind in TEAM_KINDS else None,
            "detail": a.detail, "open": a.resolved_at is None, "opened_at": iso(a.opened_at),
            "resolved_at": iso(a.resolved_at), "resolution": a.resolution,
            "duration_s": (int((a.resolved_at - a.opened_at).total_seconds())
                           if a.resolved_at is not None else None),
            "mail": dict(mails or {"sent": 0, "pending": 0, "failed": 0})}


def _scope(s, actor: Actor):
    """The WHERE clause of what ``actor`` may see (None: everything)."""
    if actor.is_cluster_admin:
        return None
    return Alarm.kind.in_(sorted(TEAM_KINDS)) & Alarm.team_id.in_(my_team_ids(s, actor) or [-1])


def _mail_counts(s, ids: list[int]) -> dict[int, dict]:
    out: dict[int, dict] = {i: {"sent": 0, "pending": 0, "failed": 0} for i in ids}
    if ids:
        for alarm_id, state, n in s.execute(
                select(AlarmMail.alarm_id, AlarmMail.state, func.count())
                .where(AlarmMail.alarm_id.in_(ids)).group_by(AlarmMail.alarm_id, AlarmMail.state)):
            out[alarm_id][state] = n
    return out


def listing(s, actor: Actor, *, history: bool = False, page: int = 1,
            per_page: int = PER_PAGE) -> dict:
    """{"open": [...], "history": [...] (with ``history``), "page", "pages", "history_total"}."""
    per_page = max(1, min(int(per_page), MAX_PER_PAGE))
    page = max(1, int(page))
    scope = _scope(s, actor)
    q_open = select(Alarm).where(Alarm.resolved_at.is_(None))
    if scope is not None:
        q_open = q_open.where(scope)
    open_rows = list(s.scalars(q_open.order_by(Alarm.opened_at.desc(), Alarm.id.desc())
                               .limit(OPEN_SHOWN)))
    past_rows: list[Alarm] = []
    total = 0
    if history:
        cond = Alarm.resolved_at.is_not(None)
        if scope is not None:
            cond = cond & scope
        total = s.scalar(select(func.count()).select_from(Alarm).where(cond)) or 0
        past_rows = list(s.scalars(select(Alarm).where(cond)
                                   .order_by(Alarm.opened_at.desc(), Alarm.id.desc())
                                   .offset((page - 1) * per_page).limit(per_page)))
    counts = _mail_counts(s, [a.id for a in open_rows + past_rows])
    pages = max(1, -(-total // per_page))
    return {"open": [alarm_dict(a, counts.get(a.id)) for a in open_rows],
            "history": [alarm_dict(a, counts.get(a.id)) for a in past_rows] if history else None,
            "page": page, "pages": pages, "per_page": per_page, "history_total": total}


def open_count(s) -> int:
    """How many alarms are open (the header's banner for cluster administrators)."""
    return s.scalar(select(func.count()).select_from(Alarm).where(Alarm.resolved_at.is_(None))) or 0
