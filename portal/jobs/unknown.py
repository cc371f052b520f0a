"""Submissions whose outcome is unknown: finding out whether Slurm has the job.

A job whose ``sbatch`` had no answer (``ControllerUnavailable``: slurmctld frozen or down, the
reply lost), or whose submitting process died mid-``sbatch``, is ``unknown`` since ``queued``
with no Slurm id (``submit.unknown_submission``). Slurm may run it anyway, so it is never failed
for that: it keeps its branch (one active job per branch), its token (the runner's callbacks
and commit-back still authenticate) and is seen by the $0 cut-off. After each SUCCESSFUL
``squeue`` poll the reconciler settles it by its name (``slipway-<id>``) under its team's
Slurm account (another Slipway on the same cluster has its own account prefix):

1. ``squeue`` lists it: adopted in ``reconciler.queue.apply_queue`` (with reservations whose submit
   reply was lost) and followed like any job;
2. else ``sacct --name`` (one bounded call for all of them, ``-S`` from the oldest submission
   minus ``accounting_slack``) has it: adopted here; the next tick's ended-job path reads its
   final record and bills it from sacct like any other job (``settle`` asks for a quick tick);
3. else it is absent (a record still PENDING in accounting that squeue does not list counts as
   absent: no controller holds it): the first such poll is remembered (a ``reconciler_state`` row); when a
   successful poll at least ``unknown_submission_grace`` later still finds it in neither, it is
   submitted again (``submit.resubmit_unknown``: a fresh conditional claim on the token the
   last submission used, so two reconcilers or a late hook never ``sbatch`` it twice), or, if a
   cancel was requested meanwhile, it ends ``cancelled`` without being submitted.

A job Slurm lost before it ran (a controller that took over from an older saved state: in
neither squeue nor accounting's ended jobs, ``reconciler.ended.LOST_NOTE``) becomes such an
unknown submission too (since ``pending``, its Slurm id cleared) and goes the same way.

A cancel requested while unknown is recorded (``service.request_cancel``) and takes effect when
the job is adopted: ``cancel_adopted`` sends the ``scancel``. A failed poll (of squeue or of
sacct) never settles anything.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import delete, select

from .. import integrations as ig
from ..db import Job, ReconcilerState
from ..services import Services, log
from . import service, states, submit

MARK_PREFIX = "unknown_submission_absent:"
FOUND_NOTE = ("Slurm had the job after all (Slurm job {slurm_id}); its first submission had "
              "no answer")
RESUBMITTED_PREFIX = "submitted again:"   # the job page keeps saying so while it waits
RESUBMITTED_NOTE = ("submitted again: the first submission had no answer and Slurm did not "
                    "have the job")
LOST_RESUBMITTED_NOTE = ("submitted again: Slurm lost the first submission before it started "
                         "(Slurm job {slurm_id})")
NEVER_FOUND_CANCELLED = "cancelled before Slurm was found to have it; it was never submitted again"


@dataclass(frozen=True)
class _Candidate:
    job_id: int
    name: str
    account: str
    since: datetime


def _mark_key(job_id: int) -> str:
    return f"{MARK_PREFIX}{job_id}"


def settle(svc: Services, now: datetime, report, move: Callable) -> None:
    """One pass over the unknown submissions (call only after a successful ``squeue`` poll and
    its adoptions). ``report``: the reconciler's TickReport; ``move(job, state, now, report,
    reason)``: the reconciler's state move."""
    cfg = svc.config
    with svc.db.session() as s:
        cands = [_Candidate(j.id, ig.slurm_job_name(j.id),
                            cfg.slurm_account(j.project.team.name).lower(),
                            j.submitted_at or j.created_at)
                 for j in s.scalars(_unknown_query().order_by(Job.id))]
        marks = {r.key: r for r in s.scalars(
            select(ReconcilerState).where(ReconcilerState.key.startswith(MARK_PREFIX)))}
        marks = {k: datetime.fromisoformat(r.value) for k, r in marks.items()}
    stale_marks = set(marks) - {_mark_key(c.job_id) for c in cands}
    if stale_marks:  # settled elsewhere (adopted from squeue, cancelled, ...)
        with svc.db.transaction() as s:
            s.execute(delete(ReconcilerState).where(ReconcilerState.key.in_(stale_marks)))
    if not cands:
        return
    start = min(c.since for c in cands) - timedelta(seconds=cfg.accounting_slack)
    try:
        recs = svc.backend.accounting(start=start, end=now, names=[c.name for c in cands])
    except ig.SlurmBridgeError as exc:
        report.errors.append(f"looking up jobs whose submission had no answer: {exc}")
        return
    found: dict[tuple[str, str], object] = {}
    for r in recs:
        if r.start is None and not r.complete:
            # pending in accounting but not in this tick's squeue: no controller holds it (a
            # job Slurm lost); a job Slurm really has is adopted from squeue (queue.apply_queue)
            continue
        key = (r.name, (r.account or "").lower())
        if key not in found or r.job_id > found[key].job_id:
            found[key] = r  # a job submitted twice (should not happen): the newest
    grace = float(cfg.unknown_submission_grace)
    to_resubmit: list[tuple[int, str]] = []
    adopted: list[int] = []
    with svc.db.transaction() as s:
        for c in cands:
            job = s.get(Job, c.job_id)
            if job is None or not submit.unknown_submission(job):
                continue
            rec = found.get((c.name, c.account))
            mark = s.get(ReconcilerState, _mark_key(c.job_id))
            if rec is not None:
                job.slurm_job_id = getattr(rec, "array_job_id", 0) or rec.job_id   # a sweep: its array
                job.submitted_at = rec.submit or job.submitted_at
                job.reason = FOUND_NOTE.format(slurm_id=rec.job_id)
                if mark is not None:
                    s.delete(mark)
                adopted.append(job.id)
                report.busy = True  # the ended-job path reads and bills it next tick
                log.warning("job %s: its submission had no answer; found in Slurm's accounting "
                            "as Slurm job %s: adopted", job.id, rec.job_id)
                continue
            if mark is None:
                s.add(ReconcilerState(key=_mark_key(c.job_id), value=now.isoformat(),
                                      updated_at=now))
                continue
            if (now - datetime.fromisoformat(mark.value)).total_seconds() < grace:
                continue
            s.delete(mark)
            if job.cancel_requested:
                move(job, states.CANCELLED, now, report,
                     reason=job.cancel_reason or NEVER_FOUND_CANCELLED)
            else:
                to_resubmit.append((job.id, job.token_hash or "", _note(job)))
    report.adopted += adopted
    cancel_adopted(svc, adopted, report)
    for job_id, token_hash, note in to_resubmit:
        _resubmit(svc, job_id, token_hash, report, note)


def _note(job: Job) -> str:
    """What the resubmitted job says: its first submission had no answer, or Slurm lost it
    (unknown since pending; the lost Slurm id is in the reason ``reconciler.ended`` wrote)."""
    if job.previous_state != states.PENDING:
        return RESUBMITTED_NOTE
    lost = re.search(r"Slurm job (\d+)", job.reason or "")
    return LOST_RESUBMITTED_NOTE.format(slurm_id=lost.group(1) if lost else "?")


def _unknown_query():
    return select(Job).where(Job.state == states.UNKNOWN,
                             Job.previous_state.in_(submit.UNSUBMITTED_FROM),
                             Job.slurm_job_id.is_(None))


def _resubmit(svc: Services, job_id: int, token_hash: str, report, note: str) -> None:
    try:
        ok, msg = submit.resubmit_unknown(svc, job_id, token_hash, note=note)
    except Exception as exc:  # noqa: BLE001 — one job must not stop the tick
        report.errors.append(f"job {job_id} (submission had no answer): resubmission: {exc}")
        return
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        state = job.state if job is not None else None
    if state == states.PENDING:
        report.resubmitted.append(job_id)
        report.changes.append((job_id, states.UNKNOWN, states.PENDING))
        log.warning("job %s: Slurm did not have it after a submission without an answer: "
                    "submitted again", job_id)
    elif state == states.FAILED:
        report.changes.append((job_id, states.UNKNOWN, states.FAILED))
        report.errors.append(f"job {job_id} (submission had no answer): {msg}")
    elif not ok:
        report.errors.append(f"job {job_id} (submission had no answer): {msg}")


def cancel_adopted(svc: Services, job_ids: list[int], report) -> None:
    """A cancel requested while the job was unknown takes effect now that it is adopted."""
    with svc.db.session() as s:
        todo = [j.id for j in (s.get(Job, i) for i in job_ids)
                if j is not None and j.cancel_requested and j.state not in states.TERMINAL
                and j.slurm_job_id is not None]
    for job_id in todo:
        try:
            service.request_cancel(svc, job_id, by="slipway")
            report.cancels.append(job_id)
        except service.JobError as exc:
            report.errors.append(f"cancel of adopted job {job_id}: {exc}")
