"""The reconciler's loop: the order of a tick, the tick lock, the run loop and its sleep."""
from __future__ import annotations

import fcntl
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from ...billing import ledger as billing
from ... import integrations as ig
from ...policy import turns
from ...private_files import opener as private_opener
from ...services import Services, log
from .. import unknown
from . import arrays, data, ended, monitor, money, queue, safety, sweep_results, sync, \
    workspaces
from .report import TickReport, move


class Reconciler:
    def __init__(self, svc: Services):
        self.svc = svc
        self.store = billing.DbLedgerStore(svc.db)
        self.biller = ig.make_biller(self.store, svc.config)
        # when Slurm's accounts were last converged (None: at the first tick)
        self._accounts_synced_at: datetime | None = None

    # ----------------------------------------------------------------------------- the tick
    def tick(self) -> TickReport:
        """One tick; ticks of every reconciler of this Slipway (the server's thread, a
        ``slipway reconcile`` process) run one at a time (a lock file in the data dir)."""
        with _tick_lock(self.svc):
            return self._tick()

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
