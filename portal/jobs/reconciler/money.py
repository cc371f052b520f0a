"""Money: billing running and ended attempts, storage, the $0 cut-off and the $1.00 start rule
(steps 3 to 5 in the package's docstring)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from accounting.biller import Biller

from ...billing import ledger as billing
from ... import integrations as ig
from ...db import Job, JobPart, Project, ReconcilerState, Team
from ...data import storage as data_storage
from ...services import Services
from .. import service, states
from .report import SLURM_HELD_REASONS, TickReport


def bill(svc: Services, biller: Biller, records, now: datetime, report: TickReport) -> None:
    if not records:
        return
    result = biller.tick(records, now)
    report.charges += len(result.appended)
    for rec, err in result.errors:
        report.errors.append(f"billing job {rec.job_id}: {err}")
    billed_jobs = {j for c in result.appended
                   if (j := billing.job_of_resource(c.cluster_job_id)) is not None}
    if billed_jobs:
        with svc.db.transaction() as s:
            for jid in billed_jobs:
                job = s.get(Job, jid)
                if job is not None:
                    job.cost_micros = billing.job_cost_micros(s, jid)
                    if job.task_count:   # a sweep: each task's own cost too
                        costs = billing.task_cost_micros(s, jid)
                        for part in s.scalars(select(JobPart).where(JobPart.job_id == jid,
                                                                    JobPart.kind == "task")):
                            part.cost_micros = costs.get(f"{jid}_{part.index}", 0)



def storage(svc: Services, biller: Biller, now: datetime, report: TickReport) -> None:
    cfg = svc.config
    key = "storage_billed_at"
    with svc.db.session() as s:
        row = s.get(ReconcilerState, key)
        if row is not None:
            last = datetime.fromisoformat(row.value)
            if (now - last).total_seconds() < cfg.storage_interval:
                return
        projects = [(p.team.name, p.name, p.created_at) for p in s.scalars(select(Project))]
    samples = []
    for team, name, created in projects:
        try:
            size = svc.git.repo_bytes(team, name)
        except (OSError, ValueError) as exc:
            report.errors.append(f"storage {team}/{name}: {exc}")
            continue
        samples.append(ig.storage_sample(team, f"repo:{team}/{name}", size, created))
    samples += data_storage.samples(svc)   # data versions and kept job outputs
    if samples:
        result = biller.tick_storage(samples, now)
        report.charges += len(result.appended)
    with svc.db.transaction() as s:
        row = s.get(ReconcilerState, key)
        if row is None:
            s.add(ReconcilerState(key=key, value=now.isoformat(), updated_at=now))
        else:
            row.value, row.updated_at = now.isoformat(), now



def cut_off(svc: Services, now: datetime, report: TickReport) -> None:
    with svc.db.session() as s:
        bal = billing.balances(s)
        rows = s.execute(
            select(Job.id, Team.id, Team.name).join(Project, Job.project_id == Project.id)
            .join(Team, Project.team_id == Team.id)
            .where(Job.state.in_(states.ACTIVE), Job.cancel_requested_at.is_(None))
        ).all()
    for job_id, team_id, team_name in rows:
        b = bal.get(team_id, billing.from_micros(0))
        if not ig.must_cut_off(b):
            continue
        if team_name not in report.cut_off:
            report.cut_off.append(team_name)
        try:
            service.request_cancel(svc, job_id, by="slipway",
                                   reason=ig.cut_off_message(b, team_name))
            report.cancels.append(job_id)
        except service.JobError as exc:
            # e.g. the job ended between the query and the cancel; anything else is retried
            # next tick (the job is still active and uncancelled, so it is picked up again);
            # the loop logs every error of the tick (``run``), ``reconcile --once`` prints them
            report.errors.append(f"cut-off of job {job_id} (team {team_name}): {exc}")



def balance_holds(svc: Services, queue: dict[int, Any], now: datetime, report: TickReport) -> None:
    """Hold every waiting (pending or requeued) job of a team whose balance is under the
    start minimum; release the jobs Slipway held once the balance is back at it.

    One pass for all teams per tick: the balances in one query, the jobs in one query, Slurm's
    view from this tick's ``squeue`` (no per-job query); ``scontrol hold/release`` only for
    jobs whose hold changes. ``balance_hold_at`` marks the jobs Slipway held, so a hold put
    on by an administrator is never released by Slipway.
    """
    minimum = svc.config.min_start_balance
    with svc.db.session() as s:
        bal = billing.balances(s)
        rows = s.execute(
            select(Job.id, Job.slurm_job_id, Job.balance_hold_at, Job.reason, Team.id, Team.name)
            .join(Project, Job.project_id == Project.id).join(Team, Project.team_id == Team.id)
            .where(Job.state == states.PENDING, Job.slurm_job_id.is_not(None),
                   Job.cancel_requested_at.is_(None))
        ).all()
    # Slipway's mark goes on before ``scontrol hold`` and comes off after ``release``: a crash
    # between the two then leaves a mark without a hold (re-held or cleared next tick), never
    # a hold without a mark (which would look like an administrator's and stay forever).
    marks: dict[int, tuple[datetime, str]] = {}
    before: dict[int, tuple[datetime | None, str | None]] = {}
    to_hold: list[tuple[int, int]] = []
    to_release: list[tuple[int, int, bool]] = []
    for job_id, slurm_id, held_at, reason, team_id, team_name in rows:
        rec = queue.get(slurm_id)
        if rec is None:
            continue
        slurm_held = (rec.reason or "").strip() in SLURM_HELD_REASONS
        b = bal.get(team_id, billing.from_micros(0))
        if ig.must_hold(b, minimum):
            message = ig.hold_message(b, team_name, minimum)
            if held_at is None and slurm_held:
                continue  # held by someone else: theirs to release
            if held_at is None or reason != message:
                marks[job_id] = (held_at or now, message)
                before[job_id] = (held_at, reason)
            if held_at is None or not slurm_held:
                to_hold.append((job_id, slurm_id))
        elif held_at is not None:
            to_release.append((job_id, slurm_id, slurm_held))
    _set_holds(svc, marks)
    refused = {}
    for job_id, slurm_id in to_hold:
        try:
            svc.backend.hold(slurm_id)
        except ig.JobNotFound:
            continue
        except ig.SlurmBridgeError as exc:  # e.g. it started meanwhile: next tick
            report.errors.append(f"hold of job {job_id}: {exc}")
            if job_id in before:  # Slurm said no: nothing is held, take the mark back
                refused[job_id] = before[job_id]
            continue
        report.holds.append(job_id)
    _set_holds(svc, refused)
    cleared: dict[int, tuple[None, None]] = {}
    for job_id, slurm_id, slurm_held in to_release:
        if slurm_held:
            try:
                svc.backend.release(slurm_id)
            except ig.JobNotFound:
                pass
            except ig.SlurmBridgeError as exc:
                report.errors.append(f"release of job {job_id}: {exc}")
                continue
        report.releases.append(job_id)
        cleared[job_id] = (None, None)
    _set_holds(svc, cleared)



def _set_holds(svc: Services, updates: dict) -> None:
    """Write (balance_hold_at, reason) for still-pending jobs."""
    if not updates:
        return
    with svc.db.transaction() as s:
        for job_id, (held_at, reason) in updates.items():
            job = s.get(Job, job_id)
            if job is None or job.state != states.PENDING:
                continue
            job.balance_hold_at, job.reason = held_at, reason

