"""The reconciler: one loop per cluster that makes the database follow Slurm, bills, and cuts off.

Each tick (``Reconciler.tick``):

1. ONE ``backend.jobs()`` call (``squeue --json``) for every Slipway job.
   * It fails (``ControllerUnavailable``): every job Slurm holds (pending/running/finishing) becomes
     ``unknown``, remembering its state. Nothing is ended, nothing is cancelled, nothing billed.
   * It answers: each job's Slurm state is mapped through ``jobs.states.SLURM_STATES``; an
     ``unknown`` job returns to its state. A job the runner reported ``finishing`` stays
     ``finishing`` while Slurm still says RUNNING.
2. Jobs that left the queue (or that it lists in an end state) → ONE bounded
   ``backend.accounting(start=min(submitted) - slack, end=now, job_ids=…)`` call; the latest
   attempt's state gives the final state (``cancelled`` whenever a cancel was requested), the
   exit code and the node. Records Slurm has not settled yet (AllocTRES/QOS filled in late) wait
   a tick. A job missing from both for ``lost_after`` seconds is failed.
3. Billing (accounting's Biller + ``DbLedgerStore``): running attempts up to the last whole
   minute, ended attempts to ceil(elapsed); keys ``gpu:<job>:<attempt>:<from_minute>`` make
   every re-run (next tick, restart, second reconciler) a no-op for minutes already charged.
   Storage is billed every ``storage_interval`` seconds, in the same tick before the rules below
   (a storage charge that reaches $0 cuts the team off in this tick, not the next).
4. Cut-off: every team whose balance is <= $0 gets all its active jobs cancelled through the
   TERM path (the runner still pushes the files); a cancel refused with ``JobError`` goes in the
   tick's errors and is tried again next tick (the job is still uncancelled).
5. The $1.00 rule for jobs already waiting (only after a successful poll): a team under
   ``min_start_balance`` has its pending (and requeued) jobs held (``scontrol hold``) with the
   reason on the job page; they are released when a deposit brings it back.
6. Safety nets: a cancel still running ``cancel_grace`` seconds later gets a hard ``scancel``;
   ``queued`` reservations whose post-receive never came (only after a successful poll: a
   failed one cannot tell a lost reservation from one Slurm runs) are adopted when Slurm has
   ``slipway-<id>`` (the submit reply was lost); an unclaimed one older than
   ``orphan_reservation_grace`` (30 s) is submitted when the branch points at its commit (the
   push completed; ``launch.recover_reservation``, the post-receive's own ``submit_job``) or
   failed at once when it does not (the push did not complete: the branch is free); one whose
   submission was claimed but never finished becomes ``unknown`` after ``stale_reservation``
   seconds (Slurm may have it: never failed for that).
7. Submissions whose outcome is unknown (``unknown`` since ``queued``: sbatch had no answer), only
   after a successful poll: adopted from ``squeue`` (with the lost-reply adoptions above) or from
   one bounded ``sacct --name`` call, else submitted again once two polls
   ``unknown_submission_grace`` apart found them in neither (``jobs.unknown``).

All state lives in the database, so the loop is restart-safe; it runs as a thread of
``slipway serve`` and as ``slipway reconcile [--once]``; ticks of all of them take turns (a flock
in the data dir). Between ticks it sleeps ``reconcile_interval``, or ``reconcile_busy_interval``
while a job is ending (finishing, cancel pending, or out of the queue for under two minutes
with sacct not settled), and a cancel or a runner's finishing/results event wakes it early
(``Services.wake``, in-process: the server's own loop; a separate ``slipway reconcile`` process
is not woken, it only speeds up once it sees the job ending): a cancelled job is recorded with
its results about a second after it ends, not up to a whole interval later.
"""
from __future__ import annotations

import fcntl
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select

from ..billing import ledger as billing
from .. import integrations as ig
from ..db import Job, Project, ReconcilerState, Team
from . import launch, service, states, unknown
from ..private_files import opener as private_opener
from ..services import Services, log


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
    # a job is ending (finishing, cancel pending, or waiting for sacct to settle): tick again soon
    busy: bool = False


@dataclass
class _Ended:
    job_id: int
    slurm_id: int
    since: datetime
    last_seen: datetime | None
    cancel_requested: bool
    team: str
    gpus: dict


HOLD_PREFIX = "held: balance"
# seconds after a job left the queue during which the loop keeps its fast (busy) pace
BUSY_AFTER_END_S = 120
SLURM_HELD_REASONS = frozenset({"JobHeldAdmin", "JobHeldUser"})

ACCOUNTING_DOWN = ("the job has ended; Slurm accounting is not answering, so its final state and "
                   "cost are recorded once it does")
POLL_FAILED = "Slurm is not answering"
# Reasons that describe a moment of the job's life (a failed poll, the queue, a hold, a pending
# lookup), never why it ended: cleared when the job reaches a terminal state without a reason.
STALE_REASONS = ("waiting in the queue", POLL_FAILED, HOLD_PREFIX, ACCOUNTING_DOWN,
                 launch.UNKNOWN_REASON.split("(", 1)[0])


def _move(job: Job, new: str, now: datetime, report: TickReport, reason: str | None = None) -> None:
    old = job.state
    if not states.can_transition(job, new):
        log.warning("job %s: Slurm says %s but %s -> %s is not allowed; left as is",
                    job.id, new, old, new)
        return
    if states.transition(job, new, now=now, reason=reason):
        report.changes.append((job.id, old, new))


class Reconciler:
    def __init__(self, svc: Services):
        self.svc = svc
        self.store = billing.DbLedgerStore(svc.db)
        self.biller = ig.make_biller(self.store, svc.config)

    # ----------------------------------------------------------------------------- the tick
    def tick(self) -> TickReport:
        """One tick; ticks of every reconciler of this Slipway (the server's thread, a
        ``slipway reconcile`` process) run one at a time (a lock file in the data dir)."""
        with _tick_lock(self.svc):
            return self._tick()

    def _tick(self) -> TickReport:
        svc, now, report = self.svc, self.svc.now(), TickReport()
        try:
            queue = svc.backend.jobs()
            report.polled = True
        except ig.SlurmBridgeError as exc:
            report.errors.append(f"poll failed: {exc}")
            self._mark_unknown(now, exc, report)
            queue = None
        if queue is not None:
            live_records, ended = self._apply_queue(queue, now, report)
            final_records, finals = self._ended(ended, now, report)
            self._bill(live_records + final_records, now, report)
            self._apply_finals(finals, now, report)
            unknown.cancel_adopted(self.svc, list(report.adopted), report)  # cancelled meanwhile
        # every charge of this tick (GPU and storage) is in before the balance rules read it
        self._storage(now, report)
        self._cut_off(now, report)
        if queue is not None:  # both need this tick's queue: never act on a failed poll
            self._balance_holds(queue, now, report)
            self._orphan_reservations(now, report)
            self._stale_reservations(now, report)
            unknown.settle(self.svc, now, report, _move)
        self._hard_cancels(now, report)
        self._ldap(now, report)
        self._slurm_accounts(now, report)
        return report

    def _ldap(self, now: datetime, report: TickReport) -> None:
        """LDAP users and groups → users and teams, every ``ldap_sync_interval`` (when configured)."""
        from ..identity.team_sync import maybe_sync_ldap

        rep = maybe_sync_ldap(self.svc, now)
        if rep is not None:
            report.errors += rep.errors

    # ------------------------------------------------------------------- Slurm accounts
    def _slurm_accounts(self, now: datetime, report: TickReport) -> None:
        """Every ``account_sync_interval`` seconds, converge Slurm's accounts with the teams."""
        from ..teams.slurm_accounts import sync_accounts

        last = getattr(self, "_accounts_synced_at", None)
        if not hasattr(self.svc.backend, "run") or (
                last is not None and (now - last).total_seconds() < self.svc.config.account_sync_interval):
            return
        try:
            sync_accounts(self.svc)
            self._accounts_synced_at = now
        except Exception as exc:  # noqa: BLE001 — retried next tick
            report.errors.append(f"Slurm account sync failed: {exc}")

    # ------------------------------------------------------------------------ poll failure
    def _mark_unknown(self, now: datetime, exc: Exception, report: TickReport) -> None:
        with self.svc.db.transaction() as s:
            for job in s.scalars(select(Job).where(Job.state.in_(states.IN_SLURM))):
                _move(job, states.UNKNOWN, now, report, reason=f"{POLL_FAILED}: {exc}")

    # ----------------------------------------------------------------------- live mapping
    def _apply_queue(self, queue: dict[int, Any], now: datetime, report: TickReport):
        live_records, ended = [], []
        by_name: dict[int | None, list] = {}
        for r in queue.values():
            by_name.setdefault(ig.job_id_from_slurm_name(r.name), []).append(r)
        with self.svc.db.transaction() as s:
            # adopt reservations whose submit reply was lost, and submissions that had no answer
            # (unknown since queued, see jobs.unknown)
            for job in s.scalars(select(Job).where(
                    or_(Job.state == states.QUEUED,
                        and_(Job.state == states.UNKNOWN, Job.previous_state == states.QUEUED)),
                    Job.slurm_job_id.is_(None))):
                # only a job submitted for this reservation: the same name can be another
                # Slipway's on a shared cluster (each has its own account prefix, see
                # slurm_accounts), so the account must be this job's team's
                expected = self.svc.config.slurm_account(job.project.team.name).lower()
                rec = next((r for r in by_name.get(job.id, ())
                            if (r.account or "").lower() == expected), None)
                if rec is not None:
                    if job.state == states.UNKNOWN:
                        job.reason = None  # no longer "finding out": Slurm's reason follows
                        report.adopted.append(job.id)
                        log.warning("job %s: its submission had no answer; Slurm has it as job "
                                    "%s: adopted", job.id, rec.job_id)
                    job.slurm_job_id = rec.job_id
                    job.submitted_at = job.submitted_at or rec.submit_time or now
                    _move(job, states.PENDING, now, report)
            jobs = s.scalars(select(Job).where(Job.state.in_(states.ACTIVE - {states.QUEUED}),
                                               Job.slurm_job_id.is_not(None)))
            for job in jobs:
                team = job.project.team.name
                rec = queue.get(job.slurm_job_id)
                mapping = states.slurm_mapping(rec.state) if rec is not None else None
                if job.state == states.FINISHING or job.cancel_requested:
                    report.busy = True
                if rec is None or (mapping.live is None and mapping.final is not None):
                    # just ended: sacct settles within seconds; after BUSY_AFTER_END_S (sacct
                    # down, a lost record) the loop goes back to its normal pace
                    since = job.last_seen_at or job.submitted_at or job.created_at
                    if since is None or (now - since).total_seconds() < BUSY_AFTER_END_S:
                        report.busy = True
                    ended.append(_Ended(job.id, job.slurm_job_id, job.submitted_at or job.created_at,
                                        job.last_seen_at, job.cancel_requested, team,
                                        {job.gpu_type: job.gpu_count}))
                    continue
                job.last_seen_at = now
                if rec.node:
                    job.node = rec.node
                if rec.restart_count > job.attempt:
                    job.attempt = rec.restart_count
                target = mapping.live
                base = job.previous_state if job.state == states.UNKNOWN else job.state
                if target is None:  # a Slurm state we do not know: keep the job where it was
                    target = base
                if base == states.FINISHING and target == states.RUNNING:
                    target = states.FINISHING
                _move(job, target, now, report)
                if job.state != states.PENDING and job.balance_hold_at is not None:
                    job.balance_hold_at = None  # it left the queue (released by hand, or ended)
                # a job submitted for a lost post-receive keeps saying so (launch.RECOVERED_NOTE)
                note = launch.RECOVERED_NOTE if (job.reason or "").startswith(launch.RECOVERED_NOTE) \
                    else None
                if job.state == states.PENDING:
                    r = (rec.reason or "").strip()
                    if job.balance_hold_at is None:  # else: the hold reason stays (_balance_holds)
                        waiting = None if r in ("", "None") else f"waiting in the queue: {r}"
                        job.reason = "; ".join(x for x in (note, waiting) if x) or None
                elif job.state in (states.RUNNING, states.FINISHING):
                    if note is not None:
                        job.reason = note
                    elif job.reason and job.reason.startswith(STALE_REASONS):
                        job.reason = None
                    if rec.start_time is not None:
                        job.attempt_started_at = rec.start_time
                        if job.started_at is None or job.started_at > rec.start_time:
                            job.started_at = rec.start_time
                        live_records.append(ig.attempt_record(
                            job_id=job.id, attempt=rec.restart_count, state="RUNNING",
                            start=rec.start_time, end=None, elapsed_s=None,
                            gpus=dict(rec.gpus) or {job.gpu_type: job.gpu_count}, team=team))
        return live_records, ended

    # -------------------------------------------------------------------------- ended jobs
    def _ended(self, ended: list[_Ended], now: datetime, report: TickReport):
        if not ended:
            return [], []
        cfg = self.svc.config
        start = min(e.since for e in ended) - timedelta(seconds=cfg.accounting_slack)
        try:
            recs = self.svc.backend.accounting(start=start, end=now, job_ids=[e.slurm_id for e in ended])
        except ig.SlurmBridgeError as exc:
            report.errors.append(f"accounting failed: {exc}")
            self._note_accounting_down(ended, exc)
            return [], []
        by_id: dict[int, list] = {}
        for r in recs:
            by_id.setdefault(int(r.job_id), []).append(r)
        records, finals = [], []
        for e in ended:
            rs = by_id.get(e.slurm_id, [])
            if not rs:
                seen = e.last_seen or e.since
                if (now - seen).total_seconds() > cfg.lost_after:
                    finals.append((e.job_id, states.FAILED, None, None, None,
                                   "Slurm lost track of the job (in neither the queue nor accounting)"))
                continue
            last = max(rs, key=lambda r: r.attempt)
            final = states.final_state(last.state, cancel_requested=e.cancel_requested)
            if final is None:
                continue  # accounting says it has not ended: ask again next tick
            settled = getattr(last, "settled", True)
            if not settled and last.end is not None and (now - last.end).total_seconds() < 120:
                continue  # Slurm still filling in AllocTRES/QOS: wait for the fields
            for r in rs:
                gpus = dict(r.gpus) or ({"shard": r.shards} if getattr(r, "shards", 0) else e.gpus)
                if r.start is None:
                    continue
                records.append(ig.attempt_record(
                    job_id=e.job_id, attempt=r.attempt, state=r.state, start=r.start,
                    end=r.end or now, elapsed_s=r.elapsed_s, gpus=gpus, team=e.team))
            word = states.normalize_slurm_state(last.state)
            if final == states.FAILED:
                reason = states.SLURM_FAILURE_REASONS.get(word)
                if reason is None:
                    reason = (f"exit code {last.exit_code}" if last.exit_code is not None
                              else f"Slurm state {word}")
            elif final == states.CANCELLED:
                reason = None  # keep the cancel reason recorded with the request
            else:
                reason = None
            finals.append((e.job_id, final, last.exit_code, last.node, last.end, reason))
        return records, finals

    def _note_accounting_down(self, ended: list[_Ended], exc: Exception) -> None:
        """Tell the users of ended jobs why their job is not final yet (and that nothing is lost)."""
        with self.svc.db.transaction() as s:
            for e in ended:
                job = s.get(Job, e.job_id)
                if job is not None and job.state not in states.TERMINAL:
                    job.reason = f"{ACCOUNTING_DOWN}: {exc}"[:500]

    def _apply_finals(self, finals, now: datetime, report: TickReport) -> None:
        if not finals:
            return
        with self.svc.db.transaction() as s:
            for job_id, final, exit_code, node, end, reason in finals:
                job = s.get(Job, job_id)
                if job is None or job.state in states.TERMINAL:
                    continue
                if exit_code is not None:
                    job.exit_code = exit_code
                if node:
                    job.node = node
                if final == states.CANCELLED:
                    reason = job.cancel_reason or "cancelled in Slurm"
                if reason is None and (job.reason or "").startswith(STALE_REASONS):
                    job.reason = None  # a poll's or the queue's word, not why the job ended
                _move(job, final, now, report, reason=reason)
                if job.state in states.TERMINAL and end is not None:
                    job.ended_at = end

    # ----------------------------------------------------------------------------- billing
    def _bill(self, records, now: datetime, report: TickReport) -> None:
        if not records:
            return
        result = self.biller.tick(records, now)
        report.charges += len(result.appended)
        for rec, err in result.errors:
            report.errors.append(f"billing job {rec.job_id}: {err}")
        billed_jobs = {int(c.cluster_job_id) for c in result.appended if c.cluster_job_id.isdigit()}
        if billed_jobs:
            with self.svc.db.transaction() as s:
                for jid in billed_jobs:
                    job = s.get(Job, jid)
                    if job is not None:
                        job.cost_micros = billing.job_cost_micros(s, jid)

    def _storage(self, now: datetime, report: TickReport) -> None:
        cfg = self.svc.config
        key = "storage_billed_at"
        with self.svc.db.session() as s:
            row = s.get(ReconcilerState, key)
            if row is not None:
                last = datetime.fromisoformat(row.value)
                if (now - last).total_seconds() < cfg.storage_interval:
                    return
            projects = [(p.team.name, p.name, p.created_at) for p in s.scalars(select(Project))]
        samples = []
        for team, name, created in projects:
            try:
                size = ig.repo_bytes(cfg, team, name)
            except (OSError, ValueError) as exc:
                report.errors.append(f"storage {team}/{name}: {exc}")
                continue
            samples.append(ig.storage_sample(team, f"repo:{team}/{name}", size, created))
        if samples:
            result = self.biller.tick_storage(samples, now)
            report.charges += len(result.appended)
        with self.svc.db.transaction() as s:
            row = s.get(ReconcilerState, key)
            if row is None:
                s.add(ReconcilerState(key=key, value=now.isoformat(), updated_at=now))
            else:
                row.value, row.updated_at = now.isoformat(), now

    # ---------------------------------------------------------------------------- cut-off
    def _cut_off(self, now: datetime, report: TickReport) -> None:
        with self.svc.db.session() as s:
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
                service.request_cancel(self.svc, job_id, by="slipway",
                                       reason=ig.cut_off_message(b, team_name))
                report.cancels.append(job_id)
            except service.JobError as exc:
                # e.g. the job ended between the query and the cancel; anything else is retried
                # next tick (the job is still active and uncancelled, so it is picked up again);
                # the loop logs every error of the tick (``run``), ``reconcile --once`` prints them
                report.errors.append(f"cut-off of job {job_id} (team {team_name}): {exc}")

    # ----------------------------------------------------------------- the $1.00 start rule
    def _balance_holds(self, queue: dict[int, Any], now: datetime, report: TickReport) -> None:
        """Hold every waiting (pending or requeued) job of a team whose balance is under the
        start minimum; release the jobs Slipway held once the balance is back at it.

        One pass for all teams per tick: the balances in one query, the jobs in one query, Slurm's
        view from this tick's ``squeue`` (no per-job query); ``scontrol hold/release`` only for
        jobs whose hold changes. ``balance_hold_at`` marks the jobs Slipway held, so a hold put
        on by an administrator is never released by Slipway.
        """
        minimum = self.svc.config.min_start_balance
        with self.svc.db.session() as s:
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
        self._set_holds(marks)
        refused = {}
        for job_id, slurm_id in to_hold:
            try:
                self.svc.backend.hold(slurm_id)
            except ig.JobNotFound:
                continue
            except ig.SlurmBridgeError as exc:  # e.g. it started meanwhile: next tick
                report.errors.append(f"hold of job {job_id}: {exc}")
                if job_id in before:  # Slurm said no: nothing is held, take the mark back
                    refused[job_id] = before[job_id]
                continue
            report.holds.append(job_id)
        self._set_holds(refused)
        cleared: dict[int, tuple[None, None]] = {}
        for job_id, slurm_id, slurm_held in to_release:
            if slurm_held:
                try:
                    self.svc.backend.release(slurm_id)
                except ig.JobNotFound:
                    pass
                except ig.SlurmBridgeError as exc:
                    report.errors.append(f"release of job {job_id}: {exc}")
                    continue
            report.releases.append(job_id)
            cleared[job_id] = (None, None)
        self._set_holds(cleared)

    def _set_holds(self, updates: dict) -> None:
        """Write (balance_hold_at, reason) for still-pending jobs."""
        if not updates:
            return
        with self.svc.db.transaction() as s:
            for job_id, (held_at, reason) in updates.items():
                job = s.get(Job, job_id)
                if job is None or job.state != states.PENDING:
                    continue
                job.balance_hold_at, job.reason = held_at, reason

    def _hard_cancels(self, now: datetime, report: TickReport) -> None:
        limit = now - timedelta(seconds=self.svc.config.cancel_grace)
        with self.svc.db.session() as s:
            todo = [(j.id, j.slurm_job_id) for j in s.scalars(select(Job).where(
                Job.state.in_(states.ACTIVE), Job.slurm_job_id.is_not(None),
                Job.cancel_requested_at.is_not(None), Job.cancel_requested_at < limit,
                Job.hard_cancel_at.is_(None)))]
        for job_id, slurm_id in todo:
            try:
                self.svc.backend.cancel(slurm_id)
            except ig.JobNotFound:
                pass
            except ig.SlurmBridgeError as exc:
                report.errors.append(f"hard cancel of job {job_id}: {exc}")
                continue
            with self.svc.db.transaction() as s:
                job = s.get(Job, job_id)
                job.hard_cancel_at = now
            report.hard_cancels.append(job_id)

    def _orphan_reservations(self, now: datetime, report: TickReport) -> None:
        """Reservations whose post-receive never came (see ``launch.recover_reservation``).

        Runs after this tick's successful poll and its adoptions, so Slurm had none of these
        jobs when it answered. Only unclaimed reservations (no submission ever started) are
        touched; a post-receive arriving now loses or wins the claim, never both submit."""
        grace = self.svc.config.orphan_reservation_grace
        limit = now - timedelta(seconds=float(grace))
        with self.svc.db.session() as s:
            ids = list(s.scalars(select(Job.id).where(
                Job.state == states.QUEUED, Job.slurm_job_id.is_(None), Job.token_hash.is_(None),
                Job.cancel_requested_at.is_(None), Job.created_at < limit).order_by(Job.id)))
        for job_id in ids:
            try:
                outcome, msg = launch.recover_reservation(self.svc, job_id)
            except Exception as exc:  # noqa: BLE001 — one bad repository must not stop the tick
                report.errors.append(f"reservation {job_id} (post-receive lost): {exc}")
                continue
            if outcome == "submitted":
                report.recovered.append(job_id)
                report.changes.append((job_id, states.QUEUED, states.PENDING))
            elif outcome == "unknown":  # sbatch had no answer: jobs.unknown finds out
                report.changes.append((job_id, states.QUEUED, states.UNKNOWN))
            elif outcome in ("abandoned", "failed"):
                if outcome == "abandoned":
                    report.abandoned.append(job_id)
                report.changes.append((job_id, states.QUEUED, states.FAILED))
                if outcome == "failed":
                    report.errors.append(f"reservation {job_id} (post-receive lost): {msg}")

    def _stale_reservations(self, now: datetime, report: TickReport) -> None:
        """A reservation still queued ``stale_reservation`` seconds after the push, not in
        this tick's queue. Its submission was claimed but never finished (the process died
        during ``sbatch``): Slurm may still have it, so it becomes ``unknown`` like a submission
        without an answer and ``jobs.unknown`` finds out (adopts it or submits it again). Never
        claimed (its branch could not be read): failed, the branch is free."""
        limit = now - timedelta(seconds=self.svc.config.stale_reservation)
        with self.svc.db.transaction() as s:
            for job in s.scalars(select(Job).where(Job.state == states.QUEUED, Job.slurm_job_id.is_(None),
                                                   Job.created_at < limit)):
                if job.token_hash is not None:
                    _move(job, states.UNKNOWN, now, report, reason=launch.UNKNOWN_REASON.format(
                        why="the submitting process stopped before Slurm's answer"))
                    job.submitted_at = job.submitted_at or job.created_at
                    continue
                _move(job, states.FAILED, now, report,
                      reason="the push did not complete: its job never reached Slurm; push again")

    # ------------------------------------------------------------------------------- loop
    def run(self, stop: threading.Event) -> None:
        cfg, wake = self.svc.config, self.svc.wake
        while True:
            wake.clear()  # what happens during the tick wakes the next one
            busy = False
            try:
                report = self.tick()
                busy = report.busy
                for err in report.errors:
                    log.warning("reconciler: %s", err)
            except Exception:  # noqa: BLE001 — the loop must survive anything
                log.exception("reconciler tick failed")
            interval = min(cfg.reconcile_interval, cfg.reconcile_busy_interval) if busy \
                else cfg.reconcile_interval
            if _sleep(stop, wake, interval, minimum=min(0.2, interval)):
                return

    def start_thread(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        t = threading.Thread(target=self.run, args=(stop,), name="slipway-reconciler", daemon=True)
        t.start()
        return t, stop


_thread_lock = threading.Lock()


@contextmanager
def _tick_lock(svc: Services):
    """Serialise ticks across threads and processes sharing this data dir (flock)."""
    path = Path(svc.config.data_dir) / "reconciler.lock"
    with _thread_lock, open(path, "a", opener=private_opener) as fh:  # 0600: Slipway's alone
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sleep(stop: threading.Event, wake: threading.Event, interval: float, *, minimum: float) -> bool:
    """Wait ``interval`` seconds, or less when ``wake`` is set (but at least ``minimum``, so a
    burst of events makes one tick, not a storm). True when ``stop`` was set."""
    start = time.monotonic()
    if stop.wait(minimum):
        return True
    while True:
        left = interval - (time.monotonic() - start)
        if left <= 0 or wake.is_set():
            return stop.is_set()
        if stop.wait(min(left, 0.1)) or wake.wait(0):
            return stop.is_set()
