"""Users' notifications (migration 0013, docs/MONITORING.md): who wants which kind of mail, the
outbox of every notification decided (one row per (kind, subject, user): what makes a mail go
out at most once, whichever reconciler or restart looks again), and the low-balance crossings
of each team."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, \
    UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime, utcnow

NOTIFY_KINDS = ("job_ended", "job_failed", "job_cancelled", "workspace_idle", "low_balance")
# queued: to send (again at next_attempt_at); sending: handed to the mail server right now (a
# crash here never re-sends: at most once); sent; failed: given up; skipped: not to be sent
# (turned off, no address, mail not configured), kept so it is never decided twice
OUTBOX_STATES = ("queued", "sending", "sent", "failed", "skipped")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class NotifySetting(Base):
    """A user's choice for one kind (no row: the default, on)."""

    __tablename__ = "notify_settings"
    __table_args__ = (CheckConstraint(f"kind IN ({_in(NOTIFY_KINDS)})", name="kind"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Notification(Base):
    """One notification to one user: ``subject`` names what it is about (a job id, a workspace
    reminder, a team's crossing), unique with ``kind`` and the user."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("kind", "subject", "user_id", name="uq_notifications_kind_subject_user"),
        CheckConstraint(f"kind IN ({_in(NOTIFY_KINDS)})", name="kind"),
        CheckConstraint(f"status IN ({_in(OUTBOX_STATES)})", name="status"),
        Index("ix_notifications_status_next", "status", "next_attempt_at"),
        Index("ix_notifications_user_id_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    email: Mapped[str | None] = mapped_column(String(255), nullable=True, default=None)
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True,
                                                             default=None)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class NotifyTeamBalance(Base):
    """Whether the team's balance was under ``alarm_balance_threshold`` at the last tick, and how
    many times it went under (each crossing: one mail to its owners and administrators)."""

    __tablename__ = "notify_team_balance"

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"),
                                         primary_key=True)
    low: Mapped[bool] = mapped_column(Boolean, default=False)
    crossings: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
