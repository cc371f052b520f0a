"""A job that runs past its time limit, on the live cluster (docs/FAULTS.md, "2. Time limit"):
Slurm's warning (``--signal=B:USR1@15`` for a 1-minute job) reaches the entrypoint, which writes
a checkpoint; the runner stops it before the limit, pushes its files and has Slurm end the job as
TIMEOUT. Its files are on the branch, the job says "time limit reached", and the ledger is
sacct's minutes."""
from __future__ import annotations

import csv
import io
import math
import sqlite3
from datetime import datetime
from decimal import Decimal

import pytest

from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# A result at once, a checkpoint on the warning (SIGUSR1), then sleeps far past its limit.
PAST_ITS_LIMIT = """#!/bin/bash
echo "result" > result.txt
trap 'echo "checkpoint at step $i" > checkpoint.txt' USR1
for i in $(seq 1 600); do echo "$i" > progress.txt; sleep 1; done
echo done > done.txt
"""


def _sacct(cluster, slurm_id: int) -> dict:
    out = cluster.run("sacct", "-j", str(slurm_id), "-X", "-D", "-n", "-P", "-S", "now-1day",
                      "-E", "now", "-o", "JobID,State,ElapsedRaw,AllocTRES,Start").stdout
    rows = [dict(zip(["id", "state", "elapsed", "tres", "start"], line.split("|")))
            for line in out.splitlines() if line.strip()]
    assert len(rows) == 1, rows
    return rows[0]


def test_a_job_past_its_limit_pushes_its_files_and_ends_as_timeout(slurm_cluster, tmp_path):
    sw = start_slipway(slurm_cluster.env, SLIPWAY_GPU_RATES="a4000:0.50,a6000:1.00")
    try:
        sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "alice", "10.00", "--note", "test funds")
        sw.cli("project", "create", "alice", "p", "--gpus", "a4000:1", "--image", "python")
        sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
        work = tmp_path / "w"
        sw.git("clone", "-q", sw.remote("alice", "alice", "p"), str(work))
        sw.git("checkout", "-B", "late", cwd=work)
        write_project(work, PAST_ITS_LIMIT)
        sw.git("add", "-A", cwd=work)
        sw.git("commit", "-qm", "late", cwd=work)
        out = sw.git("push", "-o", "time=1", "origin", "late", cwd=work)
        job_id = job_id_from_push(out.stderr)

        job = sw.wait_results(job_id, timeout=150)
        assert (job["state"], job["reason"]) == ("failed", "time limit reached"), job
        acct = _sacct(slurm_cluster, job["slurm_job_id"])
        assert acct["state"] == "TIMEOUT", acct       # Slurm's own word, not a plain failure
        with sqlite3.connect(f"file:{sw.data_dir / 'slipway.db'}?mode=ro", uri=True) as db:
            message = db.execute("SELECT results_message FROM jobs WHERE id = ?",
                                 (job_id,)).fetchone()[0]
        assert message.startswith(f"slipway: time limit reached: job {job_id} was stopped at "
                                  "the warning and its files committed"), message

        # the files are on the branch: the result, the checkpoint written on the warning and
        # the progress up to the stop; the job never got to its end
        sw.git("pull", "-q", "origin", "late", cwd=work)
        assert (work / "result.txt").read_text() == "result\n"
        assert (work / "checkpoint.txt").read_text().startswith("checkpoint at step ")
        assert int((work / "progress.txt").read_text()) >= 1
        assert not (work / "done.txt").exists()
        # ... committed before the time limit (Slurm's start + 1 minute), whatever KillWait is
        committed = int(sw.git("log", "-1", "--format=%ct", cwd=work).stdout)
        started = datetime.fromisoformat(acct["start"]).timestamp()
        assert committed < started + 60, (committed, acct)
        log = (sw.data_dir / "jobs" / str(job_id) / "output.log").read_text()
        assert "received SIGUSR1: the time-limit warning" in log, log
        assert "time limit lowered to 0 min" in log, log

        # billing stays sacct's: the ledger's minutes are sacct's elapsed, rounded up
        ledger = list(csv.DictReader(io.StringIO(
            sw.cli("team", "ledger", "alice", "--csv").stdout)))
        rows = sorted((int(r["from_minute"]), int(r["to_minute"]))
                      for r in ledger if r["kind"] == "gpu" and int(r["job"]) == job_id)
        assert "gres/gpu:a4000=1" in acct["tres"], acct
        minutes = math.ceil(int(acct["elapsed"]) / 60)
        assert [r[0] for r in rows] == [0] + [r[1] for r in rows[:-1]], rows
        assert rows[-1][1] == minutes, (rows, acct)
        charged = -sum(Decimal(r["amount"]) for r in ledger
                       if r["kind"] == "gpu" and int(r["job"]) == job_id)
        assert charged > 0 and Decimal(sw.job(job_id)["cost"]) == charged, (ledger, acct)
    finally:
        cleanup(sw, slurm_cluster.env)
