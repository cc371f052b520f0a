"""What a tick reports, and the words and the one state move every part of the tick shares."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ...db import Job
from ...services import log
from .. import states
from ..submit import UNKNOWN_REASON
from ...policy.preemption import PREEMPTED_NOTE, REQUEUED_NOTE


@dataclass
class TickReport:
    polled: bool = False
    changes: list[tuple[int, str, str]] = field(default_factory=list)
    charges: int = 0
    cut_off: list[str] = field(default_factory=list)
    cancels: list[int] = field(default_factory=list)
    hard_cancels: list[int] = field(default_factory=list)
    holds: list[int] = field(default_factory=list)      # held by the $1.00 rule this tick
    releases: list[int] = field(default_factory=list)   # released: the balance is back
    errors: list[str] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)  # submitted for a lost post-receive
    abandoned: list[int] = field(default_factory=list)  # failed: the push did not complete
    # submissions whose outcome was unknown (sbatch had no answer): found in Slurm, or not
    adopted: list[int] = field(default_factory=list)
    resubmitted: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)    # lost by Slurm before they ran
    # a job is ending (finishing, cancel pending, or waiting for sacct to settle): tick again soon
    busy: bool = False
    duration_s: float = 0.0             # the tick's own work, before monitoring
    nodes_error: str | None = None      # this tick's sinfo failed (the queue answered)


@dataclass
class Ended:
    """A job that left the queue (or that it lists in an end state): sacct says how it ended."""

    job_id: int
    slurm_id: int
    since: datetime
    last_seen: datetime | None
    cancel_requested: bool
    team: str
    gpus: dict
    # still in the queue, but Slurm requeued it (node failure, preemption): sacct says how the
    # earlier attempts ended, they are billed and recorded, and the job goes on
    requeued: bool = False
    attempt: int = 0        # the attempt Slurm is at now (squeue's restart count)
    # not in this tick's (successful) squeue at all, and never started (no start, no attempt):
    # if accounting has not seen it end either, Slurm lost it (ended.LOST_NOTE)
    absent: bool = False
    never_ran: bool = False


HOLD_PREFIX = "held: balance"
# seconds after a job left the queue during which the loop keeps its fast (busy) pace
BUSY_AFTER_END_S = 120
SLURM_HELD_REASONS = frozenset({"JobHeldAdmin", "JobHeldUser"})

ACCOUNTING_DOWN = ("the job has left Slurm's queue; Slurm accounting is not answering, so how it "
                   "ended and its final cost are not known yet: both are recorded once it answers "
                   "(nothing is lost)")
POLL_FAILED = "Slurm is not answering"
# Reasons that describe a moment of the job's life (a failed poll, the queue, a hold, a pending
# lookup), never why it ended: cleared when the job reaches a terminal state without a reason.
WAITING = "waiting: "          # + the pending reason in words (policy/reasons.py)
STALE_REASONS = ("waiting in the queue", WAITING, POLL_FAILED, HOLD_PREFIX, ACCOUNTING_DOWN,
                 UNKNOWN_REASON.split("(", 1)[0], PREEMPTED_NOTE, REQUEUED_NOTE)


def move(job: Job, new: str, now: datetime, report: TickReport, reason: str | None = None) -> None:
    """Move ``job`` to ``new`` where the state machine allows it (else log and leave it); a
    change goes in the tick's report."""
    old = job.state
    if not states.can_transition(job, new):
        log.warning("job %s: Slurm says %s but %s -> %s is not allowed; left as is",
                    job.id, new, old, new)
        return
    if states.transition(job, new, now=now, reason=reason):
        report.changes.append((job.id, old, new))

