"""The reconciler's loop: the order of a tick, the leader lease around ticks, the run loop (leader
or follower) and its sleep."""
from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Callable

from ...billing import ledger as billing
from ... import integrations as ig
from ...policy import turns
from ...services import Services, log
from .. import leadership, unknown
from . import arrays, data, ended, monitor, money, queue, safety, sweep_results, sync, \
    workspaces
from .leader import Lease, make_lease
from .report import TickReport, move


class NotLeader(Exception):
    """A one-off tick did not get the lease in time: another reconciler is active."""


class Reconciler:
    def __init__(self, svc: Services, lease: Lease | None = None):
        self.svc = svc
        self.store = billing.DbLedgerStore(svc.db)
        self.biller = ig.make_biller(self.store, svc.config)
        # when Slurm's accounts were last converged (None: at the first tick)
        self._accounts_synced_at: datetime | None = None
        self.lease = lease if lease is not None else make_lease(svc)
        self.leading_since: datetime | None = None   # set while the run loop leads
        self._ticking = threading.Lock()             # one tick at a time through this object
        self._standing_by = False

    # ----------------------------------------------------------------------------- the tick
    def tick(self, wait: float | None = None) -> TickReport:
        """One tick, as the only active reconciler of this Slipway (docs/FAULTS.md §4). While
        this object's run loop leads, at once; otherwise it waits for the leader lease (up to
        ``wait`` seconds; None: as long as it takes), ticks and lets the lease go. Raises
        ``NotLeader`` when ``wait`` ran out (another reconciler is active)."""
        if self.leading_since is not None and self.lease.holds():
            with self._ticking:
                return self._tick()
        if not self.lease.acquire(wait):
            raise NotLeader(leadership.describe(leadership.current(self.svc)))
        try:
            with self._ticking:
                return self._tick()
        finally:
            if self.leading_since is None:   # the run loop did not take it over meanwhile
                self.lease.release()

    def _tick(self) -> TickReport:
        svc, now, report = self.svc, self.svc.now(), TickReport()
        started = time.monotonic()
        everything = None
        try:
            # ONE squeue: every job (the cluster sample counts them all), Slipway's kept apart
            everything = svc.backend.jobs(comment=None)
            live = {k: r for k, r in everything.items()
                    if r.comment == "slipway" or r.comment.startswith("slipway:")}
            report.polled = True
        except ig.SlurmBridgeError as exc:
            report.errors.append(f"poll failed: {exc}")
            queue.mark_unknown(svc, now, exc, report)
            live = None
        if live is not None:
            live_records, gone = queue.apply_queue(svc, live, now, report)
            final_records, finals = ended.ended_jobs(svc, gone, now, report)
            task_live, tasks_gone = arrays.apply_arrays(svc, live, now, report)   # sweeps
            task_records, task_finals = arrays.ended_tasks(svc, tasks_gone, now, report)
            money.bill(svc, self.biller, live_records + final_records + task_live + task_records,
                       now, report)
            ended.apply_finals(svc, finals, now, report)
            arrays.apply_task_finals(svc, task_finals, now)
            arrays.settle_parents(svc, now, report)
            sweep_results.merge_ended(svc, now, report)
            unknown.cancel_adopted(svc, list(report.adopted), report)  # cancelled meanwhile
            turns.keep_turns(svc, live, report.errors)   # teams' pending jobs take turns
        data.keep_outputs(svc, report)   # ended jobs' /output: sealed read-only, kept
        # every charge of this tick (GPU and storage) is in before the balance rules read it
        money.storage(svc, self.biller, now, report)
        money.cut_off(svc, now, report)
        if live is not None:  # both need this tick's queue: never act on a failed poll
            money.balance_holds(svc, live, now, report)
            safety.orphan_reservations(svc, now, report)
            safety.stale_reservations(svc, now, report)
            unknown.settle(svc, now, report, move)
        safety.release_to_push(svc, now, report)
        safety.hard_cancels(svc, now, report)
        sync.ldap(svc, now, report)
        data.sync_gates(svc, report)     # who may read which data tree on disk
        workspaces.idle_policy(svc, report)   # remind, then stop, idle workspaces
        self._accounts_synced_at = sync.sync_slurm_accounts(svc, self._accounts_synced_at, now, report)
        nodes = None
        if live is not None:   # ONE sinfo per tick, for the samples and the alarms
            try:
                nodes = svc.backend.nodes()
            except ig.SlurmBridgeError as exc:
                report.errors.append(f"nodes: {exc}")
                report.nodes_error = str(exc)
        report.duration_s = time.monotonic() - started
        monitor.observe(svc, now, everything, nodes, report)
        return report

    # ------------------------------------------------------------------------------- loop
    def run(self, stop: threading.Event,
            on_report: Callable[[TickReport], None] | None = None) -> None:
        """Lead or follow until ``stop``: each round the leader ticks; a follower asks for the
        lease (every ``reconcile_interval``, so it takes over within two ticks of the leader's
        death) and ticks as soon as it has it. The lease goes when the loop ends."""
        cfg, wake = self.svc.config, self.svc.wake
        try:
            while True:
                wake.clear()  # what happens during the tick wakes the next one
                busy, spent = False, 0.0
                try:
                    if self.lead():
                        with self._ticking:
                            report = self._tick()
                        busy, spent = report.busy, report.duration_s
                        for err in report.errors:
                            log.warning("reconciler: %s", err)
                        if on_report is not None:
                            on_report(report)
                except Exception:  # noqa: BLE001 — the loop must survive anything
                    log.exception("reconciler tick failed")
                # while a job ends, ticks START every busy interval (a slow tick does not
                # stretch the pace: how soon an end shows, docs/SPEED.md §3)
                interval = max(0.05, min(cfg.reconcile_interval, cfg.reconcile_busy_interval)
                               - spent) if busy else cfg.reconcile_interval
                if _sleep(stop, wake, interval, minimum=min(0.2, interval)):
                    return
        finally:
            self.step_down()

    def lead(self) -> bool:
        """True when this reconciler leads now: it held the lease and still does (checked: a
        PostgreSQL session may have died under it), or it took the lease just now (and says so
        in the leader record). False: another reconciler is active, this one stands by."""
        if self.leading_since is not None:
            if self.lease.holds():
                return True
            log.warning("reconciler: lost the leader lease (%s); standing by", self.lease.description)
            self.leading_since = None
            self.lease.release()
        if not self.lease.try_acquire():
            if not self._standing_by:   # said once per spell of standing by
                self._standing_by = True
                log.info("reconciler: standing by: %s",
                         leadership.describe(leadership.current(self.svc)))
            return False
        self._standing_by = False
        since = self.svc.now()
        leadership.record(self.svc, since, self.lease.description)
        self.leading_since = since
        host, pid = leadership.this_process()
        log.info("reconciler: active on %s:%s (%s)", host, pid, self.lease.description)
        return True

    def step_down(self) -> None:
        """Let the lease go (and the leader record, when it names this process)."""
        was_leading, self.leading_since = self.leading_since is not None, None
        try:
            if was_leading:
                leadership.clear(self.svc)
        except Exception:  # noqa: BLE001 — the database may be what failed; the lease goes anyway
            log.exception("reconciler: could not clear the leader record")
        finally:
            self.lease.release()

    def start_thread(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        t = threading.Thread(target=self.run, args=(stop,), name="slipway-reconciler", daemon=True)
        t.start()
        return t, stop


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
        if wake.wait(min(left, 0.1)) or stop.is_set():   # a wake acts at once
            return stop.is_set()
