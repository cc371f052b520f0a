"""A multi-node job's nodes as its parts (docs/SHARING.md): rank ``i`` runs on the i-th node of
Slurm's node list (srun's block distribution, one task per node). Recorded when the job is seen
running; they end with the job (one allocation, one ``scancel``)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Job, JobPart
from . import parts, states


def record(s: Session, job: Job, nodelist: str, now: datetime) -> None:
    names = parts.expand_nodes(nodelist)[: job.nodes or 1]
    have = {p.index: p for p in s.scalars(select(JobPart).where(JobPart.job_id == job.id,
                                                                JobPart.kind == "node"))}
    for rank, name in enumerate(names):
        part = have.get(rank)
        if part is None:
            part = JobPart(job_id=job.id, kind="node", index=rank, state=parts.PART_RUNNING,
                           started_at=now)
            s.add(part)
        part.node, part.last_seen_at = name, now
        if not part.terminal:
            part.state = parts.PART_RUNNING if job.state in (states.RUNNING, states.FINISHING) \
                else parts.PART_PENDING
        part.attempt = job.attempt or 0


def finish(s: Session, job: Job) -> None:
    """The job ended: every node's part ends as the job did."""
    if (job.nodes or 1) <= 1 or job.state not in states.TERMINAL:
        return
    for part in s.scalars(select(JobPart).where(JobPart.job_id == job.id, JobPart.kind == "node")):
        if not part.terminal:
            part.state, part.ended_at = job.state, job.ended_at
            part.exit_code = job.exit_code
