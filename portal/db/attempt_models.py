"""A job's attempts (migration 0015, docs/FAULTS.md §1): Slurm requeues a batch job when its
node dies (``JobRequeue=1``) or an emergency job preempts it; each requeue starts a new attempt
on some node. One row per attempt says where and when it ran and how it ended, as Slurm reports
it (``squeue`` while it runs, ``sacct -D`` once it ended); its minutes and cost are the ledger's
entries for that attempt (portal/jobs/attempts.py)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime


class JobAttempt(Base):
    """Attempt ``attempt`` (0 = the first run; Slurm's restart count) of job ``job_id``.

    ``slurm_state``: Slurm's word for the attempt (``RUNNING`` while it runs; ``NODE_FAIL``,
    ``REQUEUED``, ``PREEMPTED``, ``COMPLETED``, … once sacct has its end). ``ended_at`` is the
    end Slurm recorded (a NODE_FAIL attempt ends when slurmctld declared the node dead) and
    ``elapsed_s`` sacct's ElapsedRaw, what the attempt is billed for."""

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "attempt", name="uq_job_attempts_job_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    slurm_job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)
    node: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    slurm_state: Mapped[str] = mapped_column(String(32), default="RUNNING")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    elapsed_s: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
