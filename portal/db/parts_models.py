"""A job's parts (migration 0010, docs/SHARING.md): the tasks of a sweep (one Slurm job array)
and the nodes of a multi-node job. The parent job row stays THE job (one state machine, one
branch, one cancel); its parts say what each task or node did."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, Text, \
    UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime

PART_KINDS = ("task", "node")
PART_STATES = ("pending", "running", "succeeded", "failed", "cancelled")


class JobPart(Base):
    """Task ``index`` of sweep job ``job_id`` (Slurm ``<array id>_<index>``), or node rank
    ``index`` of a multi-node job. ``params``: the task's sweep values (JSON object)."""

    __tablename__ = "job_parts"
    __table_args__ = (
        UniqueConstraint("job_id", "kind", "index", name="uq_job_parts_job_kind_index"),
        CheckConstraint("kind IN ('task', 'node')", name="kind"),
        CheckConstraint("state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
                        name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    index: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    params: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    slurm_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)
    node: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    results_sha: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    results_message: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True,
                                                                 default=None)

    @property
    def terminal(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")
