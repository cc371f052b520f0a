"""Cluster samples, the nodes' latest state and the usage rollups (migration 0011,
docs/MONITORING.md). Written by the reconciler's tick (``portal.monitoring.samples``), read by
the dashboard and the usage pages; no page asks Slurm.

* ``cluster_samples``: one row per minute (``step`` 60, exact numbers of that tick) for
  ``sample_minutes_days``, one row per hour (``step`` 3600: averages, and maxima where a peak
  matters) for ``sample_hours_days``. ``bucket`` is the epoch minute the row stands for (the
  hour's first minute for hourly rows). ``gpus`` is JSON: ``{type: {"total", "alloc", "idle",
  "down"}}`` (hourly rows add ``"alloc_max"``). A NULL number: Slurm did not answer that tick
  (``note`` says why).
* ``cluster_nodes``: each node as the latest sample's sinfo saw it.
* ``usage_days``: GPU / core / storage minutes and spend per day, kind and GPU type, folded from
  the ledger at three grains: ``team`` (per team), ``project`` (per project of a team) and
  ``user`` (per user and project: the pusher of the charged job). 0 = no project / no user; no
  foreign keys to them, so the history outlives a deleted project or user.
* ``usage_jobs``: one row per job that started or ended: its final state, the day it ended,
  its queue wait (submitted -> started) and the day it started.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, \
    UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime

STEP_MINUTE = 60
STEP_HOUR = 3600


class ClusterSample(Base):
    __tablename__ = "cluster_samples"
    __table_args__ = (UniqueConstraint("step", "bucket", name="uq_cluster_samples_step_bucket"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[int] = mapped_column(Integer)              # 60 (a minute) or 3600 (an hour)
    bucket: Mapped[int] = mapped_column(Integer)            # epoch minute it stands for
    at: Mapped[datetime] = mapped_column(UTCDateTime)       # the tick (hourly: the last one)
    samples: Mapped[int] = mapped_column(Integer, default=1)  # minute rows folded into it
    jobs_running: Mapped[float | None] = mapped_column(Float, nullable=True)
    jobs_running_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    jobs_pending: Mapped[float | None] = mapped_column(Float, nullable=True)
    jobs_pending_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpus_alloc: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpus_alloc_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpus_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mem_alloc_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    mem_alloc_max_mb: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mem_total_mb: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    nodes_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    nodes_down: Mapped[int | None] = mapped_column(Integer, nullable=True)
    storage_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gpus: Mapped[str | None] = mapped_column(Text, nullable=True)    # JSON, see above
    note: Mapped[str | None] = mapped_column(Text, nullable=True)    # why numbers are missing


class ClusterNode(Base):
    __tablename__ = "cluster_nodes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    flags: Mapped[str] = mapped_column(String(255), default="")     # comma-separated
    reason: Mapped[str] = mapped_column(Text, default="")
    partitions: Mapped[str] = mapped_column(String(255), default="")
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    gpus: Mapped[str] = mapped_column(Text, default="{}")           # JSON {type: [used, total]}
    cpus: Mapped[int] = mapped_column(Integer, default=0)
    alloc_cpus: Mapped[int] = mapped_column(Integer, default=0)
    cpu_load: Mapped[float | None] = mapped_column(Float, nullable=True)
    real_memory_mb: Mapped[int] = mapped_column(BigInteger, default=0)
    alloc_memory_mb: Mapped[int] = mapped_column(BigInteger, default=0)
    last_heard: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # sinfo's
    responding_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # ours
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)          # the sample's tick


class UsageDay(Base):
    __tablename__ = "usage_days"
    __table_args__ = (
        UniqueConstraint("grain", "day", "team_id", "project_id", "user_id", "kind", "gpu_type",
                         name="uq_usage_days_key"),
        Index("ix_usage_days_grain_team_day", "grain", "team_id", "day"),
        Index("ix_usage_days_grain_user_day", "grain", "user_id", "day"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grain: Mapped[str] = mapped_column(String(8))               # team, project, user
    day: Mapped[int] = mapped_column(Integer)                   # days since 1970-01-01 (UTC)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16))               # gpu, cpu, storage
    gpu_type: Mapped[str] = mapped_column(String(64), default="")
    minutes: Mapped[int] = mapped_column(BigInteger, default=0)  # GPU- (core-) minutes
    micros: Mapped[int] = mapped_column(BigInteger, default=0)   # spend, micro-dollars (> 0)


class UsageJob(Base):
    __tablename__ = "usage_jobs"
    __table_args__ = (   # each covers its query: states by day, waits by day (sorted)
        Index("ix_usage_jobs_ended", "ended_day", "state"),
        Index("ix_usage_jobs_started", "started_day", "wait_s"),
        Index("ix_usage_jobs_team_ended", "team_id", "ended_day", "state"),
        Index("ix_usage_jobs_team_started", "team_id", "started_day", "wait_s"),
        Index("ix_usage_jobs_user_ended", "user_id", "ended_day", "state"),
        Index("ix_usage_jobs_user_started", "user_id", "started_day", "wait_s"),
    )

    job_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))               # the job's state when written
    ended_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    wait_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
