"""The four faults of the chaos run (issue 16 item 7, docs/FAULTS.md §7), each made the way its own
section's tests make it, undone, and timed from the kill to the thing working again:

* ``node``       — power loss of an a4000 node (tests/support/node_power.kill_node: its slurmd,
  slurmstepds and job processes SIGKILLed); Slurm declares it DOWN and requeues its jobs; it is
  powered on again (restore_node) once DOWN. Recovered: the node is back in service.
* ``slurmctld``  — SIGKILL of the primary controller; recovered: the backup is in control. The
  primary is started again later (``took_back_s``: start → primary in control).
* ``slipway``    — ``kill -9`` of the Slipway server holding the reconciler lease; recovered: the
  other server leads and has ended a tick. The killed server is started again afterwards.
* ``slurmdbd``   — slurmdbd SIGKILLed for ``outage_s`` seconds, then started again; recovered:
  ``sacct`` answers.

Every fault is recorded as a ``Fault`` (what, when, recovery seconds, details) for the report."""
from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import text

from portal.jobs.leadership import LEADER_KEY
from portal.monitoring.alarm_store import TICK_KEY
from tests.support import node_power
from tests.support.ha_cluster import in_control, saved_since, script, wait_for

A4000_NODES = ("a4k-1", "a4k-2")


@dataclass
class Fault:
    kind: str                      # node | slurmctld | slipway | slurmdbd
    at_s: float                    # seconds since the run began
    target: str = ""
    recovered_s: float | None = None   # kill -> working again
    details: dict = field(default_factory=dict)

    def line(self) -> str:
        extra = ", ".join(f"{k} {v}" for k, v in self.details.items())
        rec = f"{self.recovered_s:.1f} s" if self.recovered_s is not None else "NOT RECOVERED"
        return f"t+{self.at_s:5.1f} s  {self.kind:<9} {self.target:<12} recovered in {rec}" + \
            (f" ({extra})" if extra else "")


def _node_state(cluster, node: str) -> str:
    return cluster.run("sinfo", "-h", "-n", node, "-o", "%T", check=False).stdout.strip()


def kill_a_node(world, fault: Fault, busy_nodes) -> None:
    """Power off the a4000 node running the most jobs (a checkpointing one first: ``busy_nodes``
    returns nodes in that order), wait for Slurm to declare it DOWN, power it on again."""
    nodes = [n for n in busy_nodes() if n in A4000_NODES] or list(A4000_NODES)
    node = nodes[0]
    fault.target = node
    t0 = time.monotonic()
    off = node_power.kill_node(world.cluster, node)
    fault.details["killed_pids"] = len(off.killed)
    try:
        wait_for(f"node {node} DOWN", lambda: _node_state(world.cluster, node).startswith("down"),
                 timeout=120, interval=0.5)
        fault.details["down_after_s"] = round(time.monotonic() - t0, 1)
    finally:
        if node_power.daemon_pid(world.cluster, f"slurmd-{node}") is None:
            node_power.restore_node(world.cluster, off, timeout=90)
    fault.recovered_s = round(time.monotonic() - t0, 1)


def kill_primary_controller(world, fault: Fault, last_submit: float, hold_s: float) -> None:
    """SIGKILL the primary slurmctld; the backup takes over; ``hold_s`` later the primary is started
    again and takes control back. slurmctld saves its state at most every 5 s and a job submitted
    just before the kill can be unknown to the backup (docs/FAULTS.md §3, a known Slurm/Slipway
    limit outside this run's scope): the kill waits (≤ 20 s) for a state save after the last
    submission, and records whether it came."""
    fault.target = "primary"
    fault.details["state_saved"] = _wait_saved(world.cluster, max(last_submit,
                                                                  last_job_change(world.cluster)))
    t0 = time.monotonic()
    script("kill", "slurmctld", state_dir=world.cluster.dir)
    wait_for("the backup slurmctld in control", lambda: in_control(world.cluster) == "backup",
             timeout=60, interval=0.2)
    fault.recovered_s = round(time.monotonic() - t0, 1)
    time.sleep(hold_s)
    t1 = time.monotonic()
    script("start", "slurmctld", state_dir=world.cluster.dir)
    wait_for("the primary slurmctld in control again", lambda: in_control(world.cluster) == "primary",
             timeout=90, interval=0.3)
    fault.details["took_back_s"] = round(time.monotonic() - t1, 1)


_CHANGE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d+\] (?:_job_complete|sched: Allocate|"
                     r"sched/backfill: _start_job|_slurm_rpc_submit_batch_job|Requeuing|"
                     r"_slurm_rpc_kill_job)", re.MULTILINE)


def last_job_change(cluster) -> float:
    """When a controller last changed a job (start, end, submit, requeue, cancel; epoch seconds,
    from its log): what a backup must find saved. A job that ENDED < 5 s before the primary dies
    comes back on the backup as running (seen in the full run: it was then requeued by a node
    loss and ran a second time), like a submission (§3's known limit)."""
    last = 0.0
    for name in ("slurmctld.log", "slurmctld-backup.log"):
        try:
            text_ = (Path(cluster.dir) / "log" / name).read_text(errors="replace")[-200_000:]
        except OSError:
            continue
        for m in _CHANGE.finditer(text_):
            last = max(last, datetime.fromisoformat(m.group(1)).timestamp())
    return last


def _wait_saved(cluster, since: float, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if saved_since(cluster, since):
            return True
        time.sleep(0.3)
    return False


def leader_pid(engine) -> int | None:
    with engine.connect() as c:
        raw = c.execute(text("SELECT value FROM reconciler_state WHERE key = :k"),
                        {"k": LEADER_KEY}).scalar()
    return json.loads(raw).get("pid") if raw else None


def last_tick_end(engine) -> str | None:
    with engine.connect() as c:
        raw = c.execute(text("SELECT value FROM reconciler_state WHERE key = :k"),
                        {"k": TICK_KEY}).scalar()
    return json.loads(raw).get("end") if raw else None


def kill_leading_server(world, fault: Fault, hold_s: float) -> None:
    """``kill -9`` of the server whose process holds the reconciler lease; the other must lead and
    end a tick (recovered); ``hold_s`` later the killed one is started again (it stands by)."""
    pid = wait_for("a reconciler leader", lambda: leader_pid(world.engine), timeout=30)
    victim = next((s for s in world.servers if s.proc and s.proc.pid == pid), None)
    if victim is None:
        raise AssertionError(f"the leader pid {pid} is none of this run's servers")
    other = next(s for s in world.servers if s is not victim)
    fault.target = victim.url.rsplit(":", 1)[1]
    before = last_tick_end(world.engine)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    victim.proc.wait(10)
    wait_for("the other Slipway server leading and ticking", lambda: (
        leader_pid(world.engine) == other.proc.pid and last_tick_end(world.engine) != before),
        timeout=60, interval=0.1)
    fault.recovered_s = round(time.monotonic() - t0, 1)
    time.sleep(hold_s)
    victim.start()
    fault.details["restarted"] = "yes"


def stop_accounting(world, fault: Fault, outage_s: float) -> None:
    """slurmdbd down for ``outage_s`` s, started again; recovered when sacct answers."""
    fault.target = "slurmdbd"
    t0 = time.monotonic()
    handle = node_power.stop_daemon(world.cluster, "slurmdbd")
    try:
        refused = world.cluster.run("sacct", "-X", "-n", "-S", "now-1hour", "-E", "now", check=False)
        fault.details["sacct_refused"] = "yes" if refused.returncode != 0 else "NO"
        time.sleep(max(0.0, outage_s - (time.monotonic() - t0)))
    finally:
        node_power.start_daemon(world.cluster, handle)
    fault.details["down_s"] = round(time.monotonic() - t0, 1)
    wait_for("sacct answering", lambda: world.cluster.run(
        "sacct", "-X", "-n", "-S", "now-1hour", "-E", "now", check=False).returncode == 0,
        timeout=60, interval=0.2)
    fault.recovered_s = round(time.monotonic() - t0, 1)
