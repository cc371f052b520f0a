"""Accounting down against the live cluster (docs/FAULTS.md §5): slurmdbd (or MariaDB behind
it) is killed while a job runs and ends. Jobs keep running and a new push still runs; the job
that ended while ``sacct`` cannot answer is ``unknown`` with the reason in words (never failed,
never billed twice); when accounting is back it reaches its true state and the ledger equals
sacct exactly. The daemon is killed and started again with the cluster script's own
``kill DAEMON`` / ``start DAEMON``."""
from __future__ import annotations

import csv
import io
import math
import os
import time
from decimal import Decimal

import pytest

from tests.support import node_power
from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# seconds each daemon stays down (the 60 s for slurmdbd; MariaDB's shorter outage keeps
# the module near two minutes: the behaviour is the same, sacct fails at once either way)
OUTAGES = {"slurmdbd": int(os.environ.get("SLIPWAY_TEST_SLURMDBD_OUTAGE_S", "60")),
           "mariadb": int(os.environ.get("SLIPWAY_TEST_MARIADB_OUTAGE_S", "20"))}
SHORT = """#!/bin/bash
echo "started" > started.txt
sleep {seconds}
echo "done after {seconds} s" > done.txt
"""


def _until(what: str, check, timeout: float, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def _push(sw, tmp_path, branch: str, entrypoint: str) -> int:
    work = tmp_path / branch
    sw.git("clone", "-q", sw.remote("alice", "alice", "p"), str(work))
    sw.git("checkout", "-B", branch, cwd=work)
    write_project(work, entrypoint)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", branch, cwd=work)
    return job_id_from_push(sw.git("push", "origin", branch, cwd=work).stderr)


def _ledger_minutes(sw, job_id: int) -> dict[int, int]:
    """attempt -> minutes billed (the highest to_minute of its contiguous GPU charges)."""
    rows = csv.DictReader(io.StringIO(sw.cli("team", "ledger", "alice", "--csv").stdout))
    spans = sorted((int(r["attempt"]), int(r["from_minute"]), int(r["to_minute"]))
                   for r in rows if r["kind"] == "gpu" and int(r["job"]) == job_id)
    billed: dict[int, int] = {}
    for attempt, lo, hi in spans:
        assert lo == billed.get(attempt, 0), spans   # contiguous, nothing billed twice
        billed[attempt] = hi
    return billed


def _sacct_elapsed(cluster, slurm_id: int) -> dict[int, int]:
    """attempt -> ElapsedRaw of the job's ended attempts (empty until it has ended in sacct)."""
    out = cluster.run("sacct", "-j", str(slurm_id), "-X", "-D", "-n", "-P", "-S", "now-1day",
                      "-E", "now", "-o", "State,ElapsedRaw").stdout
    recs = [line.split("|") for line in out.splitlines() if line.strip()]
    if not recs or any(state in ("RUNNING", "PENDING") for state, _ in recs):
        return {}
    return {n: int(elapsed) for n, (_state, elapsed) in enumerate(recs)}


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env, SLIPWAY_GPU_RATES="a4000:0.50,a6000:1.00")
    sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
    sw.cli("team", "add-funds", "alice", "10.00", "--note", "test funds")
    sw.cli("project", "create", "alice", "p", "--gpus", "a4000:1", "--image", "python")
    sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
    try:
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


@pytest.mark.parametrize("daemon", ["slurmdbd", "mariadb"])
def test_accounting_outage_jobs_run_on_unknown_says_why_billing_catches_up(
        sw, slurm_cluster, tmp_path, daemon):
    outage = OUTAGES[daemon]
    ends = _push(sw, tmp_path, f"ends-{daemon}", SHORT.format(seconds=12))
    sw.wait_job(ends, {"running"}, timeout=60)
    stopped = node_power.stop_daemon(slurm_cluster, daemon)
    down_at = time.monotonic()
    try:
        failed = slurm_cluster.run("sacct", "-X", "-n", "-S", "now-1hour", "-E", "now",
                                   check=False)
        assert failed.returncode != 0, failed    # accounting really is down
        # the job ends during the outage: Slipway cannot know how, so it says unknown and why
        job = sw.wait_job(ends, {"unknown"}, timeout=outage - 5)
        assert job["previous_state"] in ("running", "finishing"), job
        assert "Slurm accounting is not answering" in job["reason"], job
        assert "nothing is lost" in job["reason"], job
        later = None
        if daemon == "slurmdbd":   # the queue is still reconciled: a new push runs
            later = _push(sw, tmp_path, "during", SHORT.format(seconds=3))
            assert sw.wait_job(later, {"running", "unknown"}, timeout=30)["state"] in \
                ("running", "unknown")
        assert sw.job(ends)["state"] == "unknown"   # never failed while accounting is down
        time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
    finally:
        node_power.start_daemon(slurm_cluster, stopped)
    # accounting is back: the true final state, and the bill equals sacct exactly
    job = sw.wait_results(ends, timeout=60)
    assert (job["state"], job["exit_code"], job["reason"]) == ("succeeded", 0, None), job
    jobs = [ends] + ([later] if later else [])
    for jid in jobs:
        job = sw.wait_job(jid, timeout=60)
        assert job["state"] == "succeeded", job
        slurm_id = job["slurm_job_id"]
        elapsed = _until(f"job {jid} ended in sacct", lambda: _sacct_elapsed(slurm_cluster,
                                                                            slurm_id), 30)
        acct = {a: math.ceil(e / 60) for a, e in elapsed.items()}
        try:
            billed = _until(f"job {jid} billed", lambda: (
                b := _ledger_minutes(sw, jid)) == acct and b, 30)
        except AssertionError as exc:   # say what was billed, and what the reconciler said
            log = sw.log_file.read_text(errors="replace")[-4000:] if sw.log_file else ""
            raise AssertionError(f"{exc}: ledger {_ledger_minutes(sw, jid)}, sacct {elapsed}, "
                                 f"job {sw.job(jid)}\nserver log tail:\n{log}") from None
        assert billed == acct and list(acct) == [0], (billed, elapsed)   # one attempt, exact
        job = sw.job(jid)
        assert Decimal(job["cost"]) == (acct[0] * Decimal("0.50") / 60).quantize(
            Decimal("0.000001")), (job, acct)   # a4000 x1 at $0.50/h
