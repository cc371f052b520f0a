"""The policy domain's tables (migration 0009): compute types, quotas, emergency grants and the
record of every policy change (docs/POLICY.md). A job's own policy columns (compute type, what
it asked, QOS, partition, priority) live on ``jobs`` (models.Job)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, \
    UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime, utcnow

QUOTA_SCOPES = ("team", "user")


class ComputeType(Base):
    """A named shape of job an administrator offers: ``a4000x2`` = 2 a4000 GPUs, 8 cores, 32G
    in ``train``. ``gpu_type`` "cpu": no GPU (``gpu_count`` is then the cores). Its hourly price
    is that of its GPUs (or cores): the rates that bill the job (policy/compute.hourly_rate)."""

    __tablename__ = "compute_types"
    __table_args__ = (CheckConstraint("gpu_count >= 1", name="gpu_count"),
                      CheckConstraint("cpus >= 1", name="cpus"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    gpu_type: Mapped[str] = mapped_column(String(32))
    gpu_count: Mapped[int] = mapped_column(Integer, default=1)
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    mem_mb: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    partition: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)


class Quota(Base):
    """At most ``value`` of ``resource`` at once: ``gpu:<type>`` (GPUs of that type), ``cpu``
    (cores), ``jobs`` (running jobs), ``workspaces`` (open workspaces). A team quota
    (``user_id`` None) holds for the whole team; a user quota for that user inside that team."""

    __tablename__ = "quotas"
    __table_args__ = (
        UniqueConstraint("team_id", "user_id", "resource", name="uq_quotas_team_user_resource"),
        CheckConstraint("value >= 0", name="value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                                nullable=True)
    resource: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmergencyGrant(Base):
    """The right to run emergency jobs, for one user (everywhere) or one team (its members, in
    it), until ``until`` (None: until revoked)."""

    __tablename__ = "emergency_grants"
    __table_args__ = (
        CheckConstraint("(user_id IS NULL) <> (team_id IS NULL)", name="one_subject"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                                nullable=True, index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"),
                                                nullable=True, index=True)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    granted_by: Mapped[str] = mapped_column(String(128))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_by: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class PolicyEvent(Base):
    """Append-only: who changed which policy, or ran which emergency job, and when."""

    __tablename__ = "policy_events"
    __table_args__ = (Index("ix_policy_events_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(Text, default="")
