"""A job that Slurm requeued: preempted by an emergency job, or after a node failure.

Only the ``emergency`` QOS preempts (``PreemptType=preempt/qos``; ``normal`` preempts nothing),
so a running job that Slurm puts back in the queue while an emergency job has started since
the victim's attempt began was preempted by it; its owner reads which one on the job page. The
job requeues (``PreemptMode=REQUEUE``), resumes from its files (the node program commits what
the attempt left, git_gateway/node/checkout.py) and each attempt is billed on its own."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..db import Job

PREEMPTED_NOTE = "preempted by an emergency job"
REQUEUED_NOTE = "requeued by Slurm"


def requeue_note(s: Session, job: Job, now: datetime) -> str:
    """Why ``job`` went back from running to the queue (sets ``preempted_count``)."""
    since = (job.attempt_started_at or job.started_at or now) - timedelta(seconds=30)
    # an emergency job that was alive (queued or running) while this attempt ran
    culprit = s.scalar(select(Job.id).where(
        Job.qos == "emergency", Job.id != job.id, Job.created_at <= now,
        or_(Job.ended_at.is_(None), Job.ended_at >= since))
        .order_by(Job.id.desc()).limit(1))
    if culprit is not None:
        job.preempted_count = (job.preempted_count or 0) + 1
        return (f"{PREEMPTED_NOTE} (job {culprit}), requeued: it resumes from its files "
                f"(each attempt is billed on its own)")
    return f"{REQUEUED_NOTE} (node failure or an administrator's requeue): it resumes from its files"
