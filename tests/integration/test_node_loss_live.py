"""Node loss against the live cluster (docs/FAULTS.md §1): a job writes a checkpoint on one
a4000 node, the node loses power (its slurmd, slurmstepds and job processes SIGKILLed), Slurm
declares it down after SlurmdTimeout and requeues the job, which resumes on the other a4000
node from the checkpoint the dead attempt left, finishes and pushes its files; Slipway shows
both attempts (node, how each ended) and bills each exactly as sacct reports it."""
from __future__ import annotations

import math
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support import node_power
from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

A4000_NODES = ("a4k-1", "a4k-2")
RESUMABLE = """#!/bin/bash
if [ -f checkpoint.txt ]; then
  echo "resumed from $(cat checkpoint.txt)" > resumed.txt
  echo "resumed from the checkpoint"
  sleep 8
  exit 0
fi
echo "step 41" > checkpoint.txt
echo "checkpoint written"
sleep 600
"""


def _until(what: str, check, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def _squeue(cluster, slurm_id: int) -> tuple[str, str, int] | None:
    """(state, node, restart count) of the job as slurmctld has it, or None once it is gone."""
    out = cluster.run("scontrol", "show", "job", str(slurm_id), check=False).stdout
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    if not fields.get("JobState"):
        return None
    return fields["JobState"], fields.get("NodeList", ""), int(fields.get("Restarts", "0") or 0)


def _sacct(cluster, slurm_id: int) -> list[dict]:
    out = cluster.run("sacct", "-j", str(slurm_id), "-X", "-D", "-n", "-P", "-S", "now-1day",
                      "-E", "now", "-o", "JobID,State,ElapsedRaw,NodeList,AllocTRES").stdout
    keys = ["id", "state", "elapsed", "node", "tres"]
    return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]


@pytest.fixture
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env, SLIPWAY_GPU_RATES="a4000:0.50,a6000:1.00")
    try:
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def test_node_loss_requeues_on_the_other_node_from_the_checkpoint_billed_per_attempt(
        sw, slurm_cluster, tmp_path):
    sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
    sw.cli("team", "add-funds", "alice", "10.00", "--note", "test funds")
    sw.cli("project", "create", "alice", "p", "--gpus", "a4000:1", "--image", "python")
    sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
    work = tmp_path / "work"
    sw.git("clone", "-q", sw.remote("alice", "alice", "p"), str(work))
    sw.git("checkout", "-B", "ckpt", cwd=work)
    write_project(work, RESUMABLE)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", "resumable", cwd=work)
    job_id = job_id_from_push(sw.git("push", "origin", "ckpt", cwd=work).stderr)

    sw.wait_job(job_id, {"running"}, timeout=60)
    # the runner's start event makes it running; the node comes from Slurm's queue a tick later
    job = _until("the node the job runs on", lambda: (j := sw.job(job_id))["node"] and j, 10,
                 every=0.1)
    slurm_id, first = job["slurm_job_id"], job["node"]
    assert first in A4000_NODES, job
    other = next(n for n in A4000_NODES if n != first)
    log = Path(job["log"])
    _until("the checkpoint", lambda: log.exists() and "checkpoint written" in log.read_text(), 60)

    off = node_power.kill_node(slurm_cluster, first)
    try:
        assert len(off.killed) >= 3, off   # slurmd, the batch step's slurmstepd, the job
        # Slurm declares the node dead after SlurmdTimeout and requeues the job elsewhere
        state = _until("the job running again on the other node", lambda: (
            (q := _squeue(slurm_cluster, slurm_id)) and q[0] == "RUNNING" and q[2] >= 1 and q), 90)
        assert state[1] == other, state
        # while it runs again, Slipway lists the dead attempt and the running one
        seen = _until("Slipway showing both attempts", lambda: (
            (a := sw.job(job_id)["attempts"]) and len(a) == 2 and a[1]["ended"] == "running"
            and a), 30, every=0.5)
        assert [(a["node"], a["slurm_state"]) for a in seen] == [(first, "NODE_FAIL"),
                                                                 (other, "RUNNING")], seen
        job = sw.wait_results(job_id, timeout=90)
    finally:
        if node_power.daemon_pid(slurm_cluster, f"slurmd-{first}") is None:
            node_power.restore_node(slurm_cluster, off)
    assert job["state"] == "succeeded", job

    # the new attempt started from the files the dead one had written (checkpoint included)
    sw.git("pull", "-q", "origin", "ckpt", cwd=work)
    assert (work / "checkpoint.txt").read_text() == "step 41\n"
    assert (work / "resumed.txt").read_text() == "resumed from step 41\n"
    history = sw.git("log", "--format=%s", "origin/ckpt", cwd=work).stdout
    assert "(interrupted)" in history, history

    # Slipway shows both attempts: where each ran and how it ended
    attempts = job["attempts"]
    assert [(a["attempt"], a["node"], a["slurm_state"]) for a in attempts] == \
        [(0, first, "NODE_FAIL"), (1, other, "COMPLETED")], attempts
    assert attempts[0]["ended"] == f"node {first} failed; requeued", attempts
    assert attempts[1]["ended"] == "completed (exit code 0)", attempts

    # each attempt billed exactly sacct's ElapsedRaw in started minutes (a4000 x1, $0.50/h)
    acct = _sacct(slurm_cluster, slurm_id)
    assert [(a["state"], a["node"]) for a in acct] == [("NODE_FAIL", first), ("COMPLETED", other)]
    for a, rec in zip(attempts, acct):
        minutes = math.ceil(int(rec["elapsed"]) / 60)
        assert a["elapsed_s"] == int(rec["elapsed"]), (a, rec)
        assert a["minutes"] == minutes, (a, rec)
        assert Decimal(a["cost"]) == (Decimal(minutes) * Decimal("0.50") / 60).quantize(
            Decimal("0.000001")), (a, rec)
    assert Decimal(sw.job(job_id)["cost"]) == sum(Decimal(a["cost"]) for a in attempts)

    # the node is back in service
    state = slurm_cluster.run("sinfo", "-h", "-n", first, "-o", "%T").stdout.strip()
    assert state in ("idle", "mixed", "allocated"), state
