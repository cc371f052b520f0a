"""Controller failover with a real Slipway (issue 16 item 3, docs/FAULTS.md §3): on a cluster
with a backup slurmctld (`slurm_conf/cluster up --ha`), the primary is killed with SIGKILL while a
job runs. The job runs on and ends normally (its files pushed back, billed exactly as sacct
reports); git pushes made during the failover are never lost (each is queued, or answered
"unknown" and found or submitted later) and the first accepted one is measured; the primary, once
started again, takes control back and pushes are accepted as before."""
from __future__ import annotations

import csv
import io
import math
import time

import pytest

from tests.support.ha_cluster import (ha_destroy, ha_up, in_control, ping, script, started_at,
                                      wait_for, wait_saved)
from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TICKS = 30
SLEEPER = f"""#!/bin/bash
for i in $(seq 1 {TICKS}); do echo "tick $i" >> progress.txt; sleep 1; done
echo done > done.txt
"""
QUICK = """#!/bin/sh
echo "pushed during the failover" > quick.txt
"""


@pytest.fixture(scope="module")
def ha():
    try:
        yield ha_up()
    finally:
        ha_destroy()


@pytest.fixture(scope="module")
def sw(ha):
    sw = start_slipway(ha.env, SLIPWAY_GPU_RATES="a4000:0.50,a6000:1.00")
    try:
        sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "alice", "100.00", "--note", "failover test")
        sw.cli("project", "create", "alice", "p", "--gpus", "a4000:1", "--image", "busybox")
        sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
        yield sw
    finally:
        cleanup(sw, ha.env)


def _push(sw, tmp_path, branch: str, entrypoint: str):
    work = tmp_path / branch
    sw.git("clone", "-q", sw.remote("alice", "alice", "p"), str(work))
    sw.git("checkout", "-qB", branch, cwd=work)
    write_project(work, entrypoint)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", branch, cwd=work)
    return work, sw.git("push", "origin", branch, cwd=work, check=False)


def _push_outcome(res) -> tuple[str, int | None]:
    """("queued", job) | ("unknown", job) | ("refused", None): what the push answered."""
    text = res.stderr
    if res.returncode == 0 and " queued (" in text:
        return "queued", job_id_from_push(text)
    if res.returncode == 0 and "whether it is queued is not known yet" in text:
        return "unknown", int(text.split("slipway: job ", 1)[1].split()[0])
    assert res.returncode != 0 and "slipway:" in text, f"a push neither accepted nor refused:\n{text}"
    return "refused", None


def _ledger(sw) -> list[dict]:
    return list(csv.DictReader(io.StringIO(sw.cli("team", "ledger", "alice", "--csv").stdout)))


def test_primary_killed_job_runs_on_pushes_accepted_and_primary_takes_back(sw, ha, tmp_path):
    work, res = _push(sw, tmp_path, "long", SLEEPER)
    long_job = job_id_from_push(res.stderr)
    sw.wait_job(long_job, {"running"}, timeout=60)
    running_at = started_at(ha, sw.job(long_job)["slurm_job_id"])
    # what a backup takes over is what the primary last wrote (at most every 5 s)
    wait_saved(ha, running_at, sw.job(long_job)["slurm_job_id"],
               "the controller to save the running job")
    assert in_control(ha) == "primary"

    killed = time.monotonic()
    script("kill", "slurmctld", state_dir=ha.dir)
    pushes = []  # (branch, outcome, job, seconds from the kill to the push's answer)
    while not any(outcome == "queued" for _b, outcome, _j, _s in pushes):
        assert time.monotonic() - killed < 60, f"no push accepted within 60 s of the kill: {pushes}"
        branch = f"during-{len(pushes) + 1}"
        _work, res = _push(sw, tmp_path, branch, QUICK)
        outcome, job = _push_outcome(res)
        pushes.append((branch, outcome, job, round(time.monotonic() - killed, 1)))
    gap = pushes[-1][3]
    print(f"controller kill -> first accepted push: {gap} s; pushes: {pushes}")
    assert in_control(ha) == "backup"
    assert ping(ha) == {"primary": "DOWN", "backup": "UP"}
    # running, or "unknown" while a poll of Slurm found no controller (never failed, requeued
    # or cancelled for it: docs/FAULTS.md §3)
    assert sw.job(long_job)["state"] in {"running", "unknown"}, sw.job(long_job)

    # (the backup may hang handing control back this soon after its takeover: `start` restarts
    # it then; docs/FAULTS.md §3)
    script("start", "slurmctld", state_dir=ha.dir)
    assert in_control(ha) == "primary"
    assert ping(ha) == {"primary": "UP", "backup": "UP"}
    _work, res = _push(sw, tmp_path, "after", QUICK)
    outcome, after_job = _push_outcome(res)
    assert outcome == "queued", res.stderr
    assert sw.wait_job(long_job, {"running", "succeeded"}, timeout=30)["state"] in {"running", "succeeded"}

    # the long job ended normally, through both hand-overs, with every tick pushed back
    job = sw.wait_results(long_job, timeout=120)
    assert job["state"] == "succeeded", job
    sw.git("fetch", "-q", "origin", cwd=work)
    progress = sw.git("show", f"origin/{job['results_ref'].removeprefix('refs/heads/')}:progress.txt",
                      cwd=work).stdout
    assert progress.splitlines() == [f"tick {i}" for i in range(1, TICKS + 1)]
    # no push made during the failover is lost: each accepted one ran
    for branch, outcome, job_id, _s in [*pushes, ("after", outcome, after_job, 0)]:
        if outcome == "refused":
            continue
        done = sw.wait_results(job_id, timeout=120)
        assert done["state"] == "succeeded", (branch, done)

    # billed exactly as sacct reports the job: its started minutes, contiguous, once each
    time.sleep(2)  # a few more reconciler ticks: the bill must not change
    acct = ha.run("sacct", "-j", str(job["slurm_job_id"]), "-X", "-D", "-n", "-P", "-S", "now-1hour",
                  "-E", "now", "-o", "State,ElapsedRaw,AllocTRES").stdout.split()
    assert len(acct) == 1, acct
    state, elapsed, tres = acct[0].split("|")
    assert state == "COMPLETED" and "gres/gpu:a4000=1" in tres, acct
    rows = sorted((int(r["from_minute"]), int(r["to_minute"])) for r in _ledger(sw)
                  if r["kind"] == "gpu" and int(r["job"]) == long_job)
    assert [lo for lo, _hi in rows] == [0] + [hi for _lo, hi in rows[:-1]], rows
    assert rows[-1][1] == math.ceil(int(elapsed) / 60), (rows, elapsed)


def test_a_pending_job_the_backup_never_heard_of_is_submitted_again(sw, ha, tmp_path):
    """The primary dies within its state-save interval of a submission (docs/FAULTS.md §3): the
    backup may not have the job. Slipway answered the push "queued"; the job must then be found
    lost and submitted again (never failed), and run. Every a4000 is taken, so it stays pending
    until then."""
    blocker = ha.run("sbatch", "--parsable", "--uid=sw-alice", "-A", "slipway-test",
                     "--gres=gpu:a4000:4", "-N", "2", "--ntasks-per-node=1", "-o", "/dev/null",
                     "--chdir=/tmp", "--wrap", "sleep 600").stdout.strip().split(";")[0]
    wait_for("the blocker to run", lambda: ha.run("squeue", "-h", "-j", blocker, "-o", "%t")
             .stdout.strip() == "R", timeout=60)
    running_at = started_at(ha, blocker)
    wait_saved(ha, running_at, blocker, "the controller to save the blocker")
    work, res = _push(sw, tmp_path, "lost", QUICK)
    script("kill", "slurmctld", state_dir=ha.dir)        # at once: before the next state save
    job = job_id_from_push(res.stderr)
    first = sw.job(job)["slurm_job_id"]
    try:
        wait_for("the backup to take control", lambda: in_control(ha) == "backup", timeout=60)
        q = ha.run("squeue", "-h", "-j", str(first), "-o", "%i", check=False)
        lost = str(first) not in q.stdout
        print(f"Slurm job {first} {'lost' if lost else 'kept'} by the backup")
        if lost:   # found lost (30 s after it was last seen), then submitted again (30 s more)
            j = wait_for("the lost job to be submitted again", lambda: (
                lambda j: j if j["state"] == "pending" and j["slurm_job_id"] not in (None, first)
                else None)(sw.job(job)), timeout=150)
            assert j["reason"].startswith(
                f"submitted again: Slurm lost the first submission before it started "
                f"(Slurm job {first})"), j
        ha.run("scancel", blocker)
        done = sw.wait_results(job, timeout=180)
        assert done["state"] == "succeeded", done
        sw.git("fetch", "-q", "origin", cwd=work)
        assert "pushed during the failover" in sw.git(
            "show", f"origin/{done['results_ref'].removeprefix('refs/heads/')}:quick.txt",
            cwd=work).stdout
    finally:
        ha.run("scancel", blocker, check=False)
        script("start", "slurmctld", state_dir=ha.dir)
    assert in_control(ha) == "primary"
