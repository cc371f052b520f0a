"""A push while slurmctld is frozen (``kill -STOP``): sbatch gets no answer, but Slurm runs the
job when it wakes. Slipway must not call that job failed: it stays ``unknown`` until Slipway has
found it in Slurm by name and account, then it is followed, finished and billed from sacct like
any other job, and it is never submitted a second time."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.harness import cleanup, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env, SLIPWAY_UNKNOWN_SUBMISSION_GRACE="10")
    try:
        sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "alice", "100.00", "--note", "e2e")
        sw.cli("project", "create", "alice", "frozen", "--gpus", "a4000:1", "--image", "busybox")
        sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def _slurmctld_pid(cluster) -> int:
    pid = int((Path(cluster.dir) / "run" / "slurmctld.pid").read_text().split()[0])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    assert cmdline.endswith(b"slurmctld"), cmdline  # never signal anything but this cluster's
    return pid


def test_push_while_slurmctld_is_frozen_is_unknown_then_adopted_run_and_billed(sw, slurm_cluster, tmp_path):
    work = tmp_path / "frozen"
    sw.git("clone", sw.remote("alice", "alice", "frozen"), str(work))
    sw.git("checkout", "-B", "exp-frozen", cwd=work)
    write_project(work, "#!/bin/sh\necho frozen-but-ran > ran.txt\nsleep 2   # ElapsedRaw 0 would bill nothing (0 s costs nothing)\n")
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", "run while frozen", cwd=work)
    pid = _slurmctld_pid(slurm_cluster)
    os.kill(pid, signal.SIGSTOP)
    try:
        out = sw.git("push", "origin", "exp-frozen", cwd=work, timeout=120)  # the push succeeds
        assert "Slurm did not answer" in out.stderr and "not known yet" in out.stderr, out.stderr
        assert " queued (" not in out.stderr and "could not be submitted" not in out.stderr
        job_id = int(out.stderr.split("slipway: job ", 1)[1].split()[0])
        job = sw.job(job_id)
        assert (job["state"], job["slurm_job_id"]) == ("unknown", None), job
        assert "Slipway is finding out whether Slurm has the job" in job["reason"], job
    finally:
        os.kill(pid, signal.SIGCONT)

    job = sw.wait_results(job_id, timeout=180)
    assert job["state"] == "succeeded" and job["exit_code"] == 0, job
    assert job["slurm_job_id"] and Decimal(job["cost"].lstrip("$")) > 0, job
    assert "Slurm is not answering" not in (job["reason"] or ""), job
    # Slurm ran it exactly once: one allocation named slipway-<id>, the one Slipway adopted.
    # (Slipway may have billed it from slurmdbd's first record, made from the completion
    # message and named "allocation" until the start message is processed: wait for the name.)
    deadline = time.monotonic() + 60
    while True:
        acct = subprocess.run(
            ["sacct", "-nX", "-P", "--allusers", "--format=JobIDRaw,Account,State",
             f"--name=slipway-{job_id}",
             "-S", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 3600)),
             "-E", "now"],
            env={**os.environ, **slurm_cluster.env}, capture_output=True, text=True, check=True)
        ours = [line.split("|") for line in acct.stdout.split() if line.split("|")[1].startswith(
            sw.env["SLIPWAY_SLURM_ACCOUNT_PREFIX"])]
        if ours or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [int(r[0]) for r in ours] == [job["slurm_job_id"]], acct.stdout
    server_log = sw.log_file.read_text(errors="replace")
    assert f"job {job_id}: its submission had no answer" in server_log  # adopted, not resubmitted
    assert f"job {job_id}: Slurm did not have it" not in server_log
    ledger = sw.cli("team", "ledger", "alice", "--csv").stdout
    assert ",gpu," in ledger and str(job_id) in ledger, ledger
    sw.git("pull", "-q", "origin", "exp-frozen", cwd=work)
    assert (work / "ran.txt").read_text() == "frozen-but-ran\n"
