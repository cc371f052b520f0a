"""Team fund requests (migration 0006): money asked for by a team, decided by a cluster administrator."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime, from_micros, utcnow


FUND_REQUEST_STATES = ("pending", "approved", "declined", "cancelled")


class FundRequest(Base):
    """A team's request for funds (migration 0006). Money enters the ledger only through cluster
    administrators (or a payment provider): team administrators and owners ask here, a cluster
    administrator approves (one deposit, ``ledger_entry_id``) or declines it, the requesting
    team may cancel it while it is pending. ``state`` changes once, from ``pending``, by one
    conditional UPDATE (``portal.billing.funds``)."""

    __tablename__ = "fund_requests"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'approved', 'declined', 'cancelled')", name="state"),
        CheckConstraint("amount_micros > 0", name="amount"),
        Index("ix_fund_requests_team_id_id", "team_id", "id"),
        Index("ix_fund_requests_state_id", "state", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    requested_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the approval's deposit (no FK: the ledger is the record; both go with the team)
    ledger_entry_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @property
    def amount(self) -> Decimal:
        return from_micros(self.amount_micros)
