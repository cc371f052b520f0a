"""Every team with its balance: the operator's overview (``slipway team list``, ``team balance``
without a team). Moved out of the CLI; the caller decides who may see it."""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..billing import ledger as billing
from ..db import Team, from_micros


def all_teams(s: Session) -> list[tuple[Team, Decimal]]:
    """[(team, balance)] of every team, by name (teams without ledger entries: 0)."""
    bal = billing.balances(s)
    return [(tm, bal.get(tm.id, from_micros(0))) for tm in s.scalars(select(Team).order_by(Team.name))]
