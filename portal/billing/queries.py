"""Reading the ledger for people: pages, CSV rows, words for an entry, daily spending; and the
direct credit (cluster administrators only)."""
from __future__ import annotations

import time
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import LedgerEntry, Team, from_micros
from ..services import Services
from ..presenters import entry_dict
from ..teams.access import Actor
from . import ledger as billing
from . import ledger_csv


def ledger_page(s: Session, team: Team, *, before: int | None = None, limit: int = 50):
    q = select(LedgerEntry).where(LedgerEntry.team_id == team.id).order_by(LedgerEntry.id.desc())
    if before:
        q = q.where(LedgerEntry.id < before)
    rows = list(s.scalars(q.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def all_entries(s: Session, team_id: int):
    """Every entry of the team's ledger, oldest first, streamed (``slipway team ledger``, the
    web's CSV export)."""
    return s.scalars(select(LedgerEntry).where(LedgerEntry.team_id == team_id).order_by(LedgerEntry.id)
                     .execution_options(yield_per=1000))


LEDGER_CSV_HEADER = ledger_csv.LEDGER_CSV_HEADER


def ledger_csv_row(e: LedgerEntry) -> list:
    """The row ``slipway team ledger --csv`` prints for ``e`` (``portal.billing.ledger_csv``: text cells
    that a spreadsheet would run as a formula are neutralised)."""
    return ledger_csv.ledger_csv_row(entry_dict(e, ""))


def describe_entry(e: LedgerEntry) -> str:
    if e.kind == billing.KIND_GPU:
        rate = ig.format_usd(e.rate) if e.rate is not None else "?"
        return (f"job {e.job_id} attempt {e.attempt}: minutes {e.from_minute}–{e.to_minute}, "
                f"{e.gpu_count}× {e.gpu_type} @ {rate}/h")
    if e.kind == billing.KIND_STORAGE:
        return e.note or e.resource or ""
    return f"{e.created_by}: {e.note}" if e.note else (e.created_by or "")


_SPENDING_TTL_S = 60.0


def daily_spending(s: Session, team: Team, *, days: int, now: datetime,
                   cache: dict | None = None) -> list[tuple[str, Decimal]]:
    """[(YYYY-MM-DD, dollars spent that day)] for the last ``days`` days, aggregated in SQL.
    With ``cache`` (a dict kept by the caller) the series is reused for 60 s per team."""
    if cache is not None:
        key = (team.id, days, now.strftime("%Y-%m-%d"))
        hit = cache.get(key)
        if hit and time.monotonic() - hit[0] < _SPENDING_TTL_S:
            return hit[1]
        out = daily_spending(s, team, days=days, now=now)
        if len(cache) > 10_000:
            cache.clear()
        cache[key] = (time.monotonic(), out)
        return out
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        day = func.strftime("%Y-%m-%d", LedgerEntry.created_at)
    else:
        day = func.to_char(func.date_trunc("day", LedgerEntry.created_at), "YYYY-MM-DD")
    rows = s.execute(select(day.label("d"), func.sum(LedgerEntry.amount_micros))
                     .where(LedgerEntry.team_id == team.id, LedgerEntry.amount_micros < 0,
                            LedgerEntry.created_at >= start).group_by("d")).all()
    by_day = {str(d): from_micros(-int(v or 0)) for d, v in rows}
    out = []
    for i in range(days):
        d = (start + timedelta(days=i)).strftime("%Y-%m-%d")
        out.append((d, by_day.get(d, from_micros(0))))
    return out


def add_funds(svc: Services, actor: Actor, team_name: str, amount, note: str = "") -> Decimal:
    """Credit a team directly: cluster administrators only (``portal.billing.funds.add_funds``); team
    administrators and owners request funds (403 says how)."""
    from ..billing import funds

    return funds.add_funds(svc, actor, team_name, amount, note)
