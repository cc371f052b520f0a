"""The job service: cancel, list/show, log path, and runner events (through the state machine).

Cancel semantics (BRIEF §1.5: "the job stops within 10 s and its files are still pushed"):

* ``queued`` (not in Slurm yet): straight to ``cancelled``; if a submission is in flight,
  ``submit.submit_job`` notices and cancels the Slurm job it just made;
* ``pending`` (in Slurm, not started): plain ``scancel``; the reconciler records ``cancelled``;
* ``unknown`` since ``queued`` (sbatch had no answer; no Slurm id): recorded; the reconciler
  cancels it in Slurm once it finds it there (``jobs.unknown``), or ends it ``cancelled``
  without submitting it again when Slurm never had it;
* ``running`` / ``finishing`` / ``unknown``: ``scancel --signal=TERM --batch`` — the runner
  forwards TERM to the container, commits and pushes the files, exits; the reconciler records
  ``cancelled`` (whatever Slurm's end state reads, since ``cancel_requested_at`` is set).
  Safety net: if the job is still active ``config.cancel_grace`` seconds later the reconciler
  sends a plain (hard) ``scancel``.

When Slurm refuses the TERM (any bridge error other than "no such job" or "not answering",
e.g. a job requeued a moment ago), the hard ``scancel`` is sent at once so the job still ends
(Slurm's TERM + KillWait still lets the runner push its files); if that is refused as well the
cancel stays recorded and the reconciler's safety net retries it. Either way the caller gets a
message, never a traceback.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Job, Project, Team
from ..services import Services, log
from . import runner_spec, states, submit, task_cancel, task_events


class JobError(Exception):
    """A request about a job that cannot be done; the message says why."""


@dataclass(frozen=True)
class CancelResult:
    job_id: int
    state: str
    message: str


def request_cancel(svc: Services, job_id: int, *, by: str, reason: str | None = None) -> CancelResult:
    """Cancel a job (see module doc). Raises JobError when the job is unknown or already ended."""
    now = svc.now()
    reason = reason or f"cancelled by {by}"
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobError(f"there is no job {job_id}")
        if job.state in states.TERMINAL:
            raise JobError(f"job {job_id} already ended ({job.state})")
        first = job.cancel_requested_at is None
        if first:
            job.cancel_requested_at = now
            job.cancel_reason = reason
        state, slurm_id, is_sweep = job.state, job.slurm_job_id, bool(job.task_count)
        attempt = job.attempt or 0
        if state == states.QUEUED and slurm_id is None:
            states.transition(job, states.CANCELLED, now=now, reason=reason)
            return CancelResult(job_id, states.CANCELLED, f"job {job_id} cancelled")
    svc.wake.set()  # the reconciler follows this job closely until it has ended
    if slurm_id is None and state == states.UNKNOWN:
        return CancelResult(job_id, state, (
            f"job {job_id}: cancel recorded; its submission had no answer from Slurm: if Slurm "
            f"has the job it is cancelled there once found, else it ends cancelled without being "
            f"submitted again"))
    if slurm_id is None:
        return CancelResult(job_id, state, f"job {job_id}: cancel recorded")
    soft = state != states.PENDING
    if state == states.PENDING and attempt > 0 and not is_sweep:
        # requeued after its node failed: its interrupted attempt's files are pushed only by
        # a running attempt, so the reconciler cancels it once it runs (reconciler.safety)
        return CancelResult(job_id, state, (
            f"job {job_id}: cancel recorded; Slurm requeued it after its node failed, so it is "
            f"stopped as soon as it starts again, to push the interrupted attempt's files"))
    if is_sweep:   # its tasks that have not started go at once, the running ones stop gently
        return CancelResult(job_id, state, task_cancel.cancel_sweep(svc, job_id, slurm_id))
    try:
        if not soft:
            svc.backend.cancel(slurm_id)
            msg = f"job {job_id} cancelled (it had not started)"
        else:
            svc.backend.cancel(slurm_id, signal="TERM", batch_only=True)
            msg = f"job {job_id} is stopping; its files will be pushed to the branch"
    except ig.JobNotFound:
        msg = f"job {job_id}: Slurm no longer has it; the reconciler will record its end"
    except ig.ControllerUnavailable as exc:
        msg = (f"job {job_id}: cancel recorded, but Slurm is not answering ({exc}); "
               "it will be retried")
    except ig.SlurmBridgeError as exc:
        log.warning("job %s: Slurm refused the cancel of Slurm job %s: %s", job_id, slurm_id, exc)
        msg = _hard_cancel(svc, job_id, slurm_id, exc) if soft else (
            f"job {job_id}: cancel recorded, but Slurm refused it ({exc}); it will be retried "
            f"within {svc.config.cancel_grace:g} s")
    return CancelResult(job_id, state, msg)


def _hard_cancel(svc: Services, job_id: int, slurm_id: int, refused: Exception) -> str:
    """The TERM was refused: end the job with a plain scancel now (recorded as the hard cancel,
    so the reconciler does not send another)."""
    try:
        svc.backend.cancel(slurm_id)
    except ig.JobNotFound:
        return f"job {job_id}: Slurm no longer has it; the reconciler will record its end"
    except ig.SlurmBridgeError as exc:
        log.warning("job %s: hard cancel of Slurm job %s failed: %s", job_id, slurm_id, exc)
        return (f"job {job_id}: cancel recorded, but Slurm refused to signal it ({refused}) and "
                f"to cancel it ({exc}); it will be retried within {svc.config.cancel_grace:g} s")
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        if job is not None and job.hard_cancel_at is None:
            job.hard_cancel_at = svc.now()
    return (f"job {job_id} is being cancelled: Slurm refused the gentle stop ({refused}), so it "
            f"was cancelled outright; its files are pushed if it gets to stop in time")


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobError(f"there is no job {job_id}")
    return job


def list_jobs(session: Session, *, team: str | None = None, state: str | None = None,
              project: str | None = None, limit: int = 200) -> list[Job]:
    q = select(Job).join(Project).join(Team).order_by(Job.id.desc()).limit(limit)
    if team:
        q = q.where(Team.name == team)
    if project:
        q = q.where(Project.name == project)
    if state:
        if state == "active":
            q = q.where(Job.state.in_(states.ACTIVE))
        else:
            if state not in states.STATES:
                raise JobError(f"unknown state {state!r}; states: {', '.join(states.STATES)}, active")
            q = q.where(Job.state == state)
    return list(session.scalars(q))


def log_path(svc: Services, job_id: int) -> Path:
    return runner_spec.log_path(svc, job_id)


def check_job_token(session: Session, job_id: int, token: str, *, now: datetime,
                    grace_s: float = 900.0) -> Job | None:
    """The job if ``token`` is its token and the job is active (or ended < grace_s ago)."""
    job = session.get(Job, job_id)
    if job is None or not job.token_hash or not token:
        return None
    if not hmac.compare_digest(job.token_hash, runner_spec.hash_token(token)):
        return None
    if job.state in states.TERMINAL and job.ended_at is not None:
        if (now - job.ended_at).total_seconds() > grace_s:
            return None
    return job


EVENTS = ("started", "finishing", "results")


def _late_results(job, kind: str, event: Mapping[str, Any]) -> bool:
    """The one event an ended job still takes: the results push it has no record of yet (the
    runner's callback may come after the reconciler saw the end). Never one that erases or
    replaces recorded results."""
    return kind == "results" and not job.results_ref and bool(event.get("results_ref"))


def apply_event(svc: Services, job_id: int, event: Mapping[str, Any]) -> str:
    """Apply a runner event (``started`` / ``finishing`` / ``results``). Returns a short status.

    Events may arrive late or twice; an event that the state machine does not allow (the
    reconciler already moved the job on) is recorded where it carries data and otherwise ignored.
    """
    kind = event.get("event")
    if kind not in EVENTS:
        raise JobError(f"unknown event {kind!r}; expected one of {', '.join(EVENTS)}")
    now = svc.now()
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobError(f"there is no job {job_id}")
        if job.task_count:   # a sweep's task: its own row; the sweep follows its tasks
            try:
                return task_events.apply(s, job, kind, event, now, svc.wake)
            except task_events.TaskEventError as exc:
                raise JobError(str(exc)) from None
        if job.state in states.TERMINAL and not _late_results(job, kind, event):
            # a late or ghost attempt's event (docs/FAULTS.md §7): Slurm's final word stands
            log.info("job %s: event %s ignored: the job has ended (%s)", job_id, kind, job.state)
            return "ignored"
        target = None
        if kind == "started":
            target = states.RUNNING
            port = event.get("port")
            # the runner moved off a port taken on the node: the proxy must follow it
            if (isinstance(port, int) and not isinstance(port, bool)
                    and svc.config.port_min <= port <= svc.config.port_max):
                job.port = port
        elif kind == "finishing":
            target = states.FINISHING
            code = event.get("exit_code")
            if isinstance(code, int) and not isinstance(code, bool):
                job.exit_code = code
            sig = event.get("signal")
            if event.get("stopped") is True and not job.cancel_requested and \
                    isinstance(sig, str) and sig.isalnum() and len(sig) <= 8:
                # Slurm stopped it (scancel outside Slipway, a node going down): say so at once;
                # how it ended comes from Slurm when its files are pushed
                job.reason = f"{states.STOPPED_BY_SLURM} (SIG{sig}): its files are being pushed"
        elif kind == "results":
            job.results_ref = str(event.get("results_ref") or "") or None
            job.results_sha = str(event.get("sha") or "") or None
            bu = event.get("branch_updated")
            job.branch_updated = bool(bu) if bu is not None else None
            job.results_message = str(event.get("message") or "") or None
        if kind in ("finishing", "results"):
            svc.wake.set()  # the job is ending: record its end without waiting a whole tick
        elif kind == "started":
            # Slurm's side of the start (node, start time; a requeued job's new attempt row)
            # comes from the queue: read it now rather than up to an idle tick later
            svc.wake.set()
        if target is None:
            return "recorded"
        if submit.unknown_submission(job):
            # its sbatch had no answer and Slipway has not found it in Slurm yet: the reconciler
            # adopts it by name and then follows Slurm's state (a state without a Slurm id
            # would leave the job where no poll looks)
            return "recorded"
        if job.state == states.FINISHING and target == states.RUNNING:
            return "ignored"
        if not states.can_transition(job, target):
            log.info("job %s: event %s ignored in state %s", job_id, kind, job.state)
            return "ignored"
        states.transition(job, target, now=now)
        return job.state
