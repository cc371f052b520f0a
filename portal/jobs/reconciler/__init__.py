"""The reconciler: one loop per cluster that makes the database follow Slurm, bills, and cuts off.

Each tick (``Reconciler.tick``):

1. ONE ``backend.jobs()`` call (one lean ``squeue``, slurm_bridge/queue_text.py) for every Slipway job.
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
   push completed; ``recovery.recover_reservation``, the post-receive's own ``submit_job``) or
   failed at once when it does not (the push did not complete: the branch is free); one whose
   submission was claimed but never finished becomes ``unknown`` after ``stale_reservation``
   seconds (Slurm may have it: never failed for that).
7. Submissions whose outcome is unknown (``unknown`` since ``queued``: sbatch had no answer), only
   after a successful poll: adopted from ``squeue`` (with the lost-reply adoptions above) or from
   one bounded ``sacct --name`` call, else submitted again once two polls
   ``unknown_submission_grace`` apart found them in neither (``jobs.unknown``).

All state lives in the database, so the loop is restart-safe; it runs as a thread of
``slipway serve`` and as ``slipway reconcile [--once]``. Exactly one of them is active at a time,
however many servers share the database and data directory (docs/FAULTS.md §4): the one holding
the leader lease (``leader``: a session-level PostgreSQL advisory lock on its own connection, or
an flock on ``<data_dir>/reconciler.lock`` on SQLite; both die with the process). The others
stand by and ask for the lease every ``reconcile_interval``, so ``kill -9`` of the leader hands
over within two ticks; the leader checks the lease before each tick and steps down when it lost
it. It records itself (``jobs.leadership``: host:pid, since when), shown by ``slipway alarms``,
the alarms page and ``GET /api/alarms``. A one-off tick (``--once``) waits for the lease, ticks
and lets it go. Between ticks it sleeps ``reconcile_interval``, or ``reconcile_busy_interval``
while a job is ending (finishing, cancel pending, or out of the queue for under two minutes
with sacct not settled), and a cancel or a runner's finishing/results event wakes it early
(``Services.wake``, in-process: the server's own loop; a separate ``slipway reconcile`` process,
or the leader on another server, is not woken: it only speeds up once it sees the job ending): a cancelled job is recorded with
its results about a second after it ends, not up to a whole interval later.

Where each part lives: ``loop`` (``Reconciler``: the tick's order, the run loop as leader or
standby), ``leader`` (the leader lease),
``queue`` (steps 1, 6 and 7's adoptions: the live mapping), ``ended`` (step 2), ``money`` (steps
3 to 5), ``safety`` (step 6), ``jobs.unknown`` (step 7), ``sync`` (LDAP and Slurm's accounts, at
their intervals), ``report`` (``TickReport`` and the words the parts share).
"""
from __future__ import annotations

from .loop import Reconciler
from .report import (ACCOUNTING_DOWN, BUSY_AFTER_END_S, HOLD_PREFIX, POLL_FAILED, SLURM_HELD_REASONS,
                     STALE_REASONS, TickReport)

__all__ = ["ACCOUNTING_DOWN", "BUSY_AFTER_END_S", "HOLD_PREFIX", "POLL_FAILED", "Reconciler",
           "SLURM_HELD_REASONS", "STALE_REASONS", "TickReport"]
