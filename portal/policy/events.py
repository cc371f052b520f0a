"""The record of every policy change and emergency job (``policy_events``, append-only)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import PolicyEvent
from ..services import Services


def record(s: Session, actor: str, action: str, subject: str, detail: str = "",
           at: datetime | None = None) -> PolicyEvent:
    ev = PolicyEvent(actor=actor[:128], action=action[:32], subject=subject[:255], detail=detail,
                     **({"at": at} if at is not None else {}))
    s.add(ev)
    return ev


def recent(svc: Services, *, limit: int = 200, action: str | None = None) -> list[dict]:
    with svc.db.session() as s:
        q = select(PolicyEvent).order_by(PolicyEvent.id.desc()).limit(max(1, min(limit, 5000)))
        if action:
            q = q.where(PolicyEvent.action == action)
        return [{"id": e.id, "at": e.at.isoformat() if e.at else None, "actor": e.actor,
                 "action": e.action, "subject": e.subject, "detail": e.detail}
                for e in s.scalars(q)]
