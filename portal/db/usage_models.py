"""Per-job usage (migration 0014, docs/MONITORING.md): running jobs' CPU and memory over time,
sampled from Slurm's own accounting of their steps (``sstat``, one call per sampling tick), and
each job's totals and peaks, kept after it ends (portal/monitoring/job_usage.py)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime


class JobUsagePoint(Base):
    """One sample of a running job: its CPU time so far (every task, step and attempt), the
    cores it kept busy since the sample before (``cpu_percent``: 250 = two and a half cores),
    its resident memory now, and GPU utilisation where the nodes report it (None: not
    reported). At most ``job_usage.MAX_POINTS`` per job: older ones are thinned out."""

    __tablename__ = "job_usage_points"
    __table_args__ = (Index("ix_job_usage_points_job_at", "job_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    cpu_seconds: Mapped[float] = mapped_column(Float)
    cpu_percent: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    rss_mb: Mapped[float] = mapped_column(Float)
    gpu_util_percent: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)


class JobUsageSummary(Base):
    """A job's usage in one row: CPU time, peaks, the number of points; ``ended_at`` set once
    the job ended (the numbers are then its final totals and peaks). ``counters``: JSON, each
    step's CPU seconds as last seen (``"<slurm id>.<restart>.<step>"``) so steps and tasks that
    ended still count and a requeued attempt starts its own."""

    __tablename__ = "job_usage_summaries"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)
    points: Mapped[int] = mapped_column(Integer, default=0)
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    max_cpu_percent: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    rss_mb: Mapped[float] = mapped_column(Float, default=0.0)
    max_rss_mb: Mapped[float] = mapped_column(Float, default=0.0)
    max_gpu_util_percent: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    counters: Mapped[str] = mapped_column(Text, default="{}")
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
