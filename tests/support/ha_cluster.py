"""A local Slurm cluster with a backup controller (`slurm_conf/cluster up --ha`), for the
controller-failover tests and bench/bench_ctld_failover.py.

It lives next to the session's test cluster (its own state dir, ``<test cluster dir>-ha``, and
ports 50 above the session's), so a module can kill and restart its controllers without
disturbing any other test. Starting it takes about 10 s; it is destroyed afterwards.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

from tests.conftest import CLUSTER_SCRIPT, TEST_CLUSTER_DIR, TEST_PORT_BASE, LiveCluster

HA_CLUSTER_DIR = Path(os.environ.get("SLIPWAY_TEST_HA_CLUSTER_DIR", f"{TEST_CLUSTER_DIR}-ha"))
HA_PORT_BASE = int(os.environ.get("SLIPWAY_TEST_HA_PORT_BASE", str(TEST_PORT_BASE + 50)))
_PING = re.compile(r"^Slurmctld\((primary|backup)\) at (\S+) is (UP|DOWN)", re.MULTILINE)


def script(*args: str, state_dir: Path = HA_CLUSTER_DIR, check: bool = True,
           timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``slurm_conf/cluster ARGS --dir state_dir``."""
    res = subprocess.run([str(CLUSTER_SCRIPT), *args, "--dir", str(state_dir)], capture_output=True,
                         text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"cluster {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def ha_up(state_dir: Path = HA_CLUSTER_DIR, port_base: int = HA_PORT_BASE) -> LiveCluster:
    """A fresh cluster with a primary and a backup slurmctld, both answering."""
    script("destroy", state_dir=state_dir)
    script("up", "--ha", "--port-base", str(port_base), state_dir=state_dir)
    return LiveCluster(dir=state_dir, env={"SLURM_CONF": str(state_dir / "etc" / "slurm.conf"),
                                           "SLIPWAY_CLUSTER_DIR": str(state_dir)})


def ha_destroy(state_dir: Path = HA_CLUSTER_DIR) -> None:
    script("destroy", state_dir=state_dir, check=False)


def ping(cluster: LiveCluster) -> dict[str, str]:
    """``scontrol ping``: {"primary": "UP"|"DOWN", "backup": ...}."""
    out = cluster.run("scontrol", "ping", check=False).stdout
    return {role: state for role, _host, state in _PING.findall(out)}


def in_control(cluster: LiveCluster) -> str | None:
    """Which controller serves the cluster now, from the controllers' own logs: the backup is in
    control when its last word was "Running as primary controller" (it says "running in
    background mode" when it stands by again); the primary when it answers and the backup is not."""
    backup_log = (cluster.dir / "log" / "slurmctld-backup.log").read_text(errors="replace")
    marks = [m.group(0) for m in re.finditer(r"Running as primary controller|running in background mode",
                                             backup_log)]
    state = ping(cluster)
    if marks and marks[-1] == "Running as primary controller" and state.get("backup") == "UP":
        return "backup"
    if state.get("primary") == "UP":
        return "primary"
    return None


SAVE_MAX_WAIT = 5  # slurmctld writes its state files at most this long after a change


def saved_since(cluster: LiveCluster, since: float) -> bool:
    """The controller has written its job state (StateSaveLocation/job_state, what a backup
    taking over reads) since the change made at ``since`` (epoch seconds): slurmctld batches its
    state writes, at most one every SAVE_MAX_WAIT seconds, so a change made just before the
    primary dies is not there. Slurm's times are whole seconds: a write in ``since``'s own second
    may predate the change, so it counts once the batching delay has surely passed."""
    state = cluster.dir / "spool" / "ctld" / "job_state"
    if not state.exists():
        return False
    written = state.stat().st_mtime
    return written >= since + 1 or (written >= since and time.time() > since + SAVE_MAX_WAIT + 1)


def wait_saved(cluster: LiveCluster, since: float, slurm_job: int | str, what: str,
               timeout: float = 40) -> None:
    """Wait until the controller has saved its job state since ``since`` (see ``saved_since``).
    A job's start normally schedules that write within SAVE_MAX_WAIT, but a CI run once saw none
    for 30 s after a start; when none came within 2 * SAVE_MAX_WAIT, the job's comment is updated,
    an RPC after which slurmctld schedules a job-state save (seen written at once)."""
    deadline = time.monotonic() + timeout
    poke_at = time.monotonic() + 2 * SAVE_MAX_WAIT
    while not saved_since(cluster, since):
        now = time.monotonic()
        if now > deadline:
            state = cluster.dir / "spool" / "ctld" / "job_state"
            written = state.stat().st_mtime if state.exists() else None
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}: job_state written at {written}, "
                f"change at {since}, now {time.time():.1f}; controllers {ping(cluster)}, in control "
                f"{in_control(cluster)}")
        if now > poke_at:
            cluster.run("scontrol", "update", f"JobId={slurm_job}", "Comment=slipway-test-save",
                        check=False)
            poke_at = now + 2 * SAVE_MAX_WAIT
        time.sleep(0.2)


def started_at(cluster: LiveCluster, slurm_job: int | str) -> float:
    """The Slurm job's StartTime (epoch seconds) as the controller reports it."""
    out = cluster.run("squeue", "-h", "-j", str(slurm_job), "-O", "StartTime").stdout.strip()
    return datetime.fromisoformat(out).timestamp()


def wait_for(what: str, predicate, timeout: float = 60, interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
