"""THE job state machine. ``transition()`` is the one place a job's state changes.

::

    queued ──► pending ──► running ──► finishing ──► succeeded | failed | cancelled
       │          ▲  │        │  ▲         │
       │          └──┼────────┘  │         │         (running/finishing → pending: requeue
       └─────────────┴───────────┴─────────┴──► failed | cancelled       after node failure
                                                                          or preemption)
    any of pending/running/finishing ──► unknown ──► (back to the previous state, or on to any
                                                      state the previous one could reach)
    queued ──► unknown ──► any state (the submission had no answer: Slurm may have queued, run
                                      and even ended the job before Slipway finds it)

* ``queued``: reserved by the pre-receive hook, not yet submitted to Slurm.
* ``unknown``: a poll of Slurm failed; the job keeps its slot, is never ended or cancelled
  because of a failed poll, and remembers ``previous_state``. ``unknown`` since ``queued``: the
  job was handed to ``sbatch`` but Slurm did not answer (or the submitting process died), so
  Slipway does not know whether Slurm has it; the reconciler finds out (``jobs.unknown``).
* terminal states (succeeded, failed, cancelled) never change.
* ``transition(job, job.state)`` is a no-op (returns False): events and polls may repeat.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

QUEUED = "queued"
PENDING = "pending"
RUNNING = "running"
FINISHING = "finishing"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
UNKNOWN = "unknown"

STATES = (QUEUED, PENDING, RUNNING, FINISHING, SUCCEEDED, FAILED, CANCELLED, UNKNOWN)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
# a finishing job's note while its files are pushed after Slurm's SIGTERM (runner event)
STOPPED_BY_SLURM = "stopped by Slurm"
ACTIVE = frozenset({QUEUED, PENDING, RUNNING, FINISHING, UNKNOWN})
IN_SLURM = frozenset({PENDING, RUNNING, FINISHING})  # states a failed poll turns into unknown

# Allowed transitions (excluding unknown's way out, computed from previous_state).
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({PENDING, FAILED, CANCELLED, UNKNOWN}),
    PENDING: frozenset({RUNNING, FINISHING, SUCCEEDED, FAILED, CANCELLED, UNKNOWN}),
    RUNNING: frozenset({PENDING, FINISHING, SUCCEEDED, FAILED, CANCELLED, UNKNOWN}),
    FINISHING: frozenset({PENDING, SUCCEEDED, FAILED, CANCELLED, UNKNOWN}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    UNKNOWN: frozenset(),  # see allowed_from_unknown()
}


class IllegalTransition(Exception):
    def __init__(self, job_id, old: str, new: str, detail: str = ""):
        msg = f"job {job_id}: {old} -> {new} is not allowed"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)
        self.job_id, self.old, self.new = job_id, old, new


class JobLike(Protocol):
    id: int | None
    state: str
    previous_state: str | None
    reason: str | None
    started_at: datetime | None
    ended_at: datetime | None
    state_changed_at: datetime | None


def allowed_from_unknown(previous: str | None) -> frozenset[str]:
    if previous is None or previous not in TRANSITIONS or previous == UNKNOWN:
        # should not happen; let a poll put the job anywhere non-queued
        return frozenset({PENDING, RUNNING, FINISHING, SUCCEEDED, FAILED, CANCELLED})
    if previous == QUEUED:  # a submission without an answer: found in any state, or not at all
        return frozenset(STATES) - {UNKNOWN}
    return frozenset({previous}) | (TRANSITIONS[previous] - {UNKNOWN})


def allowed(job_state: str, previous_state: str | None = None) -> frozenset[str]:
    """States a job in ``job_state`` may move to (not counting the no-op to itself)."""
    if job_state == UNKNOWN:
        return allowed_from_unknown(previous_state)
    return TRANSITIONS[job_state]


def can_transition(job: JobLike, new_state: str) -> bool:
    return new_state == job.state or new_state in allowed(job.state, job.previous_state)


def transition(job: JobLike, new_state: str, *, now: datetime, reason: str | None = None) -> bool:
    """Move ``job`` to ``new_state``. Returns True if the state changed, False for a no-op.

    Raises IllegalTransition for anything the table does not allow. Sets ``started_at`` the
    first time the job runs, ``ended_at`` when it reaches a terminal state, and
    ``previous_state`` while it is unknown. ``reason`` (if given) replaces the job's reason.
    """
    if new_state not in STATES:
        raise IllegalTransition(job.id, job.state, new_state, "no such state")
    old = job.state
    if new_state == old:
        if reason is not None and old not in TERMINAL:
            job.reason = reason
        return False
    if old in TERMINAL:
        raise IllegalTransition(job.id, old, new_state, "terminal states never change")
    if new_state not in allowed(old, job.previous_state):
        detail = f"unknown since {job.previous_state}" if old == UNKNOWN else ""
        raise IllegalTransition(job.id, old, new_state, detail)

    if new_state == UNKNOWN:
        job.previous_state = old
    elif old == UNKNOWN:
        job.previous_state = None
    if new_state in (RUNNING, FINISHING) and job.started_at is None:
        job.started_at = now
    if new_state in TERMINAL:
        job.ended_at = now
    job.state = new_state
    job.state_changed_at = now
    if reason is not None:
        job.reason = reason
    return True


def plain_move(old: str, new_state: str, *, now: datetime, reason: str | None = None) -> dict:
    """What ``transition`` writes for ``old`` -> ``new_state``, as values for a conditional
    UPDATE that checks the row is still ``old``: ``state``, ``state_changed_at``, ``reason``
    and ``keep_reason`` (no reason given: the job's stays). Only for moves that set nothing
    else: neither state unknown nor terminal, not into running (``started_at``)."""
    if UNKNOWN in (old, new_state) or old in TERMINAL or new_state in TERMINAL \
            or new_state in (RUNNING, FINISHING) or new_state not in TRANSITIONS[old]:
        raise IllegalTransition(None, old, new_state, "not a plain move")
    return {"state": new_state, "state_changed_at": now, "reason": reason,
            "keep_reason": reason is None}


# ---------------------------------------------------------------------------------------------
# Slurm states -> Slipway states: ONE table.
#
# ``live``:  what the job is while Slurm still lists it in the queue in that state
#            (None: Slurm reports an end state: ask accounting for the final record).
# ``final``: what the job ended as when accounting reports that state
#            (None: not an end state; the job has not really ended yet — wait and ask again).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmMapping:
    live: str | None
    final: str | None


SLURM_STATES: dict[str, SlurmMapping] = {
    "PENDING": SlurmMapping(PENDING, None),
    "CONFIGURING": SlurmMapping(PENDING, None),
    "REQUEUED": SlurmMapping(PENDING, None),
    "REQUEUE_HOLD": SlurmMapping(PENDING, None),
    "REQUEUE_FED": SlurmMapping(PENDING, None),
    "RESV_DEL_HOLD": SlurmMapping(PENDING, None),
    "RUNNING": SlurmMapping(RUNNING, None),
    "SUSPENDED": SlurmMapping(RUNNING, None),
    "STOPPED": SlurmMapping(RUNNING, None),
    "RESIZING": SlurmMapping(RUNNING, None),
    "SIGNALING": SlurmMapping(RUNNING, None),
    "COMPLETING": SlurmMapping(FINISHING, None),
    "STAGE_OUT": SlurmMapping(FINISHING, None),
    "COMPLETED": SlurmMapping(None, SUCCEEDED),
    "CANCELLED": SlurmMapping(None, CANCELLED),
    "FAILED": SlurmMapping(None, FAILED),
    "TIMEOUT": SlurmMapping(None, FAILED),
    "NODE_FAIL": SlurmMapping(None, FAILED),
    "PREEMPTED": SlurmMapping(None, FAILED),
    "BOOT_FAIL": SlurmMapping(None, FAILED),
    "DEADLINE": SlurmMapping(None, FAILED),
    "OUT_OF_MEMORY": SlurmMapping(None, FAILED),
    "SPECIAL_EXIT": SlurmMapping(None, FAILED),
    "REVOKED": SlurmMapping(None, FAILED),
}

# Human words for end states that are "failed" in Slipway's terms. TIMEOUT is also what Slurm
# records for a job whose runner stopped it at the time-limit warning, pushed its files and had
# Slurm end it (git_gateway.node.time_limit; docs/FAULTS.md, "2. Time limit"): such a job ends
# before its limit, yet as "time limit reached", never as a plain exit code.
SLURM_FAILURE_REASONS = {
    "TIMEOUT": "time limit reached",
    "NODE_FAIL": "the node failed",
    "PREEMPTED": "preempted",
    "BOOT_FAIL": "the node failed to boot",
    "DEADLINE": "deadline reached",
    "OUT_OF_MEMORY": "out of memory",
}


def normalize_slurm_state(raw: str | None) -> str:
    """'CANCELLED by 0' -> 'CANCELLED', 'COMPLETED+' -> 'COMPLETED', ['RUNNING'] handled by caller."""
    if not raw:
        return ""
    word = str(raw).strip().split()[0] if str(raw).strip() else ""
    return word.rstrip("+").upper()


def slurm_mapping(raw: str | None) -> SlurmMapping:
    """Mapping for a Slurm state; unknown names are treated as 'still live, no change'."""
    return SLURM_STATES.get(normalize_slurm_state(raw), SlurmMapping(None, None))


def final_state(raw_slurm_state: str | None, *, cancel_requested: bool) -> str | None:
    """The Slipway end state for an accounting record, or None if the job has not ended.

    A job the user (or the $0 cut-off) cancelled is ``cancelled`` whatever Slurm says — the
    runner traps TERM, pushes the files and exits, so Slurm often reads COMPLETED or FAILED.
    """
    final = slurm_mapping(raw_slurm_state).final
    if final is None:
        return None
    if cancel_requested:
        return CANCELLED
    return final
