"""Alarms (migration 0012, docs/MONITORING.md): every alarm that was ever open, the mail each
opening and resolution sent (so a restart never sends it again), and the most GPUs each node
was ever seen with (a node reporting fewer is an alarm).

An alarm is open while ``resolved_at`` is NULL; at most ONE alarm per ``key`` (kind + subject,
``node-drained:a4k-1``) is open at a time: a partial unique index, so two reconcilers (or a
reconciler and a page checking on it) never open the same alarm twice."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, \
    UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .models import Base, UTCDateTime, utcnow

ALARM_OPEN_SQL = "resolved_at IS NULL"
MAIL_EVENTS = ("opened", "resolved")
MAIL_STATES = ("pending", "sent", "failed")   # failed: gave up after the last attempt


class Alarm(Base):
    __tablename__ = "alarms"
    __table_args__ = (
        # THE once-only guarantee: one open alarm per key
        Index("uq_alarms_open_key", "key", unique=True,
              sqlite_where=text(ALARM_OPEN_SQL), postgresql_where=text(ALARM_OPEN_SQL)),
        Index("ix_alarms_opened_at", "opened_at", "id"),   # the history, newest first
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300))           # "<kind>:<subject>"
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))       # a node, a team, the cluster
    # balance and storage alarms: the team (its owners and administrators get the mail too)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"),
                                                nullable=True, index=True)
    detail: Mapped[str] = mapped_column(Text, default="")   # what was the case when it opened
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    resolution: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)

    mails: Mapped[list[AlarmMail]] = relationship(back_populates="alarm", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"<Alarm {self.key} {'open' if self.resolved_at is None else 'resolved'}>"


class AlarmMail(Base):
    """One message about one alarm event to one address: written in the transaction that opens
    or resolves the alarm, sent after it (``monitoring.alarm_mail.deliver``), marked sent."""

    __tablename__ = "alarm_mails"
    __table_args__ = (
        UniqueConstraint("alarm_id", "event", "to_addr", name="uq_alarm_mails_alarm_event_to"),
        CheckConstraint("event IN ('opened', 'resolved')", name="event"),
        CheckConstraint("state IN ('pending', 'sent', 'failed')", name="state"),
        Index("ix_alarm_mails_state_id", "state", "id"),   # what is left to send
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(16))
    to_addr: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # a sender took it (another sender leaves it alone until the claim is stale)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    next_try_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    error: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)

    alarm: Mapped[Alarm] = relationship(back_populates="mails")


class NodeGpuPeak(Base):
    """The most GPUs of ``gpu_type`` (or shards) ``node`` was ever seen with in sinfo."""

    __tablename__ = "alarm_node_gpus"

    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    gpu_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    most: Mapped[int] = mapped_column(Integer)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
