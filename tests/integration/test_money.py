"""Money against the live cluster: per-minute GPU billing from sacct, the $1 start gate (at push,
and for jobs already waiting: held, released after a deposit), the $0 cut-off of every running
job of a team in one tick (files still pushed), and a ledger that equals sacct across a restart
of Slipway made after a minute was billed."""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import sqlite3
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SLEEPER = """#!/bin/bash
echo started > started.txt
for i in $(seq 1 {ticks}); do echo "tick $i" >> progress.txt; sleep 1; done
echo done > done.txt
"""


def _setup(sw, team: str, funds: str | None, project: str = "p") -> None:
    sw.cli("user", "add", team, "--unix-user", "sw-" + team)
    if funds is not None:
        sw.cli("team", "add-funds", team, funds, "--note", "test funds")
    sw.cli("project", "create", team, project, "--gpus", "a4000:2", "--image", "python")
    sw.tokens[team] = sw.cli("token", "create", team).stdout.strip()


def _push(sw, tmp_path, team: str, branch: str, entrypoint: str, check=True, options=()):
    work = tmp_path / f"{team}-{branch}"
    sw.git("clone", "-q", sw.remote(team, team, "p"), str(work))
    sw.git("checkout", "-B", branch, cwd=work)
    write_project(work, entrypoint)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", branch, cwd=work)
    opts = [arg for opt in options for arg in ("-o", opt)]
    return work, sw.git("push", *opts, "origin", branch, cwd=work, check=check)


def _gpu_rows(sw, team: str) -> list[tuple[int, int, int]]:
    """(job, from_minute, to_minute) of the team's GPU charges, in minute order."""
    rows = [r for r in _ledger(sw, team) if r["kind"] == "gpu"]
    return sorted((int(r["job"]), int(r["from_minute"]), int(r["to_minute"])) for r in rows)


def _db(sw) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{sw.data_dir / 'slipway.db'}?mode=ro", uri=True, timeout=30)


def _ledger(sw, team: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(sw.cli("team", "ledger", team, "--csv").stdout)))


def _sacct(cluster, slurm_id: int) -> list[dict]:
    out = cluster.run("sacct", "-j", str(slurm_id), "-X", "-D", "-n", "-P", "-S", "now-1day", "-E", "now",
                      "-o", "JobID,State,ElapsedRaw,AllocTRES").stdout
    keys = ["id", "state", "elapsed", "tres"]
    return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]


# ------------------------------------------------------------------------------ normal rates

@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env, SLIPWAY_GPU_RATES="a4000:0.50,a6000:1.00")
    try:
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def test_ninety_second_two_gpu_job_costs_two_minutes_and_ledger_equals_sacct_across_restart(
        sw, slurm_cluster, tmp_path):
    _setup(sw, "carol", "10.00")
    _work, out = _push(sw, tmp_path, "carol", "ninety", SLEEPER.format(ticks=88))
    job_id = job_id_from_push(out.stderr)
    sw.wait_job(job_id, {"running"})
    # billed while running: the first full minute is charged before the job ends
    deadline = time.monotonic() + 90
    while Decimal(sw.job(job_id)["cost"]) == 0:
        assert time.monotonic() < deadline, "no charge while the job ran"
        assert sw.job(job_id)["state"] == "running"
        time.sleep(1)
    assert [r[1:] for r in _gpu_rows(sw, "carol")] == [(0, 1)]
    started = datetime.fromisoformat(sw.job(job_id)["started_at"])
    while (datetime.now(timezone.utc) - started).total_seconds() < 65:
        time.sleep(0.5)
    # Slipway goes away in the job's second minute, after one was billed, and comes back:
    # the minute already charged is not charged again, the one in progress is not skipped
    sw.restart()
    job = sw.wait_results(job_id, timeout=150)
    assert job["state"] == "succeeded", job

    # let a few more reconciler ticks pass: the final bill must not change
    time.sleep(3)
    rows = _gpu_rows(sw, "carol")
    acct = _sacct(slurm_cluster, job["slurm_job_id"])
    assert len(acct) == 1 and "gres/gpu:a4000=2" in acct[0]["tres"], acct
    elapsed = int(acct[0]["elapsed"])
    assert 65 < elapsed < 120, acct  # ~90 s of work (88 one-second ticks plus checkout and commit-back)
    # the ledger is sacct's minutes exactly: contiguous from 0 to ceil(elapsed / 60), no overlap
    assert [r[0] for r in rows] == [job_id] * len(rows)
    assert [r[1] for r in rows] == [0] + [r[2] for r in rows[:-1]], rows
    assert rows[-1][2] == math.ceil(elapsed / 60) == 2, (rows, elapsed)
    total = sum(Decimal(r["amount"]) for r in _ledger(sw, "carol") if r["kind"] == "gpu")
    assert total == Decimal("-0.033333"), rows  # charges are negative ledger entries
    assert Decimal(sw.job(job_id)["cost"]) == Decimal("0.033333")  # 2 min × 2 GPUs × $0.50/h
    balance = sw.cli("team", "balance", "carol").stdout
    assert "$9.967" in balance, balance  # $10.00 − $0.033333 = $9.966667, shown to a tenth of a cent


def test_push_below_one_dollar_is_refused_with_balance_and_how_to_request_funds(sw, tmp_path):
    _setup(sw, "bob", "0.99")
    work, out = _push(sw, tmp_path, "bob", "poor", SLEEPER.format(ticks=1), check=False)
    assert out.returncode != 0
    assert "$0.99" in out.stderr and "request-funds" in out.stderr, out.stderr
    assert not sw.git("ls-remote", "origin", "refs/heads/poor", cwd=work).stdout.strip()
    assert [j for j in json.loads(sw.cli("job", "list", "--json").stdout) if j["project"] == "bob/p"] == []


def test_owners_request_funds_cluster_admins_add_them(sw):
    sw.cli("team", "create", "lab", "--owner", "carol")
    sw.cli("team", "add-member", "lab", "bob", "--role", "user")
    for who in ("bob", "carol"):  # a member, the owner: neither credits the team
        refused = sw.cli("team", "add-funds", "lab", "5.00", as_user=who, check=False)
        assert refused.returncode != 0 and "request-funds" in (refused.stdout + refused.stderr)
    refused = sw.cli("team", "request-funds", "lab", "5.00", as_user="bob", check=False)
    assert refused.returncode != 0 and "needs role" in (refused.stdout + refused.stderr)
    out = sw.cli("team", "request-funds", "lab", "5.00", "--note", "grant", as_user="carol").stdout
    request_id = out.split()[2].rstrip(":")
    assert _ledger(sw, "lab") == []
    sw.cli("funds", "approve", request_id)  # the operator: a cluster administrator
    sw.cli("funds", "approve", request_id, check=False)  # twice: refused, credited once
    deposits = [r for r in _ledger(sw, "lab") if r["kind"] == "deposit"]
    assert [(r["amount"], r["note"]) for r in deposits] == \
        [("5.000000", f"fund request {request_id} by carol: grant")], deposits


RESUMABLE = """#!/bin/bash
if [ -f ckpt.txt ]; then echo "resumed after tick $(cat ckpt.txt)" > resumed.txt; sleep 3; exit 0; fi
for i in $(seq 1 300); do echo "$i" > ckpt.txt; sleep 1; done
"""


def test_requeued_job_is_billed_per_attempt_exactly_as_sacct_reports(sw, slurm_cluster, tmp_path):
    """A running job requeued by Slurm (as after a node failure): each attempt is billed its own
    started minutes, the ledger equals sacct's attempts, and the second attempt resumes from the
    first one's files (committed back when it was stopped)."""
    _setup(sw, "alice", "10.00")
    work, out = _push(sw, tmp_path, "alice", "requeue", RESUMABLE)
    job_id = job_id_from_push(out.stderr)
    sw.wait_job(job_id, {"running"})
    time.sleep(12)  # the first attempt does some work (a checkpoint per second)
    slurm_id = str(sw.job(job_id)["slurm_job_id"])
    slurm_cluster.run("scontrol", "requeue", slurm_id)
    job = sw.wait_results(job_id, timeout=150)
    assert job["state"] == "succeeded", job
    time.sleep(3)  # a few more ticks: the bill must not change
    acct = _sacct(slurm_cluster, int(slurm_id))
    assert [a["state"] for a in acct] == ["REQUEUED", "COMPLETED"], acct
    assert all("gres/gpu:a4000=2" in a["tres"] for a in acct), acct
    rows = sorted((int(r["attempt"]), int(r["from_minute"]), int(r["to_minute"]))
                  for r in _ledger(sw, "alice") if r["kind"] == "gpu")
    billed: dict[int, int] = {}
    for attempt, lo, hi in rows:
        assert lo == billed.get(attempt, 0), rows  # contiguous within an attempt, no overlap
        billed[attempt] = hi
    assert billed == {n: math.ceil(int(a["elapsed"]) / 60) for n, a in enumerate(acct)}, (rows, acct)
    minutes = sum(billed.values())
    charged = -sum(Decimal(r["amount"]) for r in _ledger(sw, "alice") if r["kind"] == "gpu")
    assert Decimal(sw.job(job_id)["cost"]) == charged, (charged, sw.job(job_id))
    exact = Decimal(minutes) * 2 * Decimal("0.50") / 60  # 2 GPUs at $0.50/h
    assert abs(charged - exact) <= Decimal("0.000001") * len(acct), (charged, exact)  # µ$ per attempt
    sw.git("pull", "-q", "origin", "requeue", cwd=work)
    assert (work / "resumed.txt").read_text().startswith("resumed after tick "), \
        (work / "resumed.txt").read_text()


# ---------------------------------------------------------------------- the $0 cut-off

@pytest.fixture(scope="module")
def pricey(slurm_cluster):
    # $45/GPU-hour: a 2-GPU job burns $1.50 a minute, so $1.50 lasts exactly one billed minute.
    sw = start_slipway(slurm_cluster.env, SLIPWAY_GPU_RATES="a4000:45.00,a6000:90.00")
    try:
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def test_team_at_zero_has_every_running_job_cut_off_in_one_tick_and_files_still_arrive(
        pricey, tmp_path):
    sw = pricey
    _setup(sw, "alice", "3.00")  # two 2-GPU jobs: $3.00 lasts one billed minute of each
    work_a, out_a = _push(sw, tmp_path, "alice", "burn-a", SLEEPER.format(ticks=300))
    work_b, out_b = _push(sw, tmp_path, "alice", "burn-b", SLEEPER.format(ticks=300))
    jobs = [job_id_from_push(out_a.stderr), job_id_from_push(out_b.stderr)]
    for job_id in jobs:
        sw.wait_job(job_id, {"running"})
    ended = [sw.wait_results(job_id, timeout=150) for job_id in jobs]
    for job in ended:
        assert job["state"] == "cancelled", job
        assert "has $0.00" in (job["cancel_reason"] or "") and "request-funds" in job["cancel_reason"], job
    with _db(sw) as db:
        asked = [datetime.fromisoformat(t) for (t,) in db.execute(
            f"SELECT cancel_requested_at FROM jobs WHERE id IN ({jobs[0]}, {jobs[1]})")]
    assert len(asked) == 2 and abs((asked[0] - asked[1]).total_seconds()) < 1, asked  # one tick
    for work, branch in ((work_a, "burn-a"), (work_b, "burn-b")):
        sw.git("pull", "-q", "origin", branch, cwd=work)
        assert (work / "started.txt").exists(), branch
        ticks = (work / "progress.txt").read_text().count("tick")
        assert 55 <= ticks < 110, (branch, ticks)  # cut off after about a minute, not at the end
        assert not (work / "done.txt").exists(), branch
    # The final partial minutes are billed too: the balance is at or below zero, never lost.
    rows = _gpu_rows(sw, "alice")
    assert {r[0] for r in rows} == set(jobs) and all(r[2] >= 1 for r in rows), rows
    bal = sw.cli("team", "balance", "alice").stdout
    assert "-" in bal or "$0.00" in bal, bal


def test_waiting_job_is_held_under_one_dollar_and_released_by_a_deposit(pricey, slurm_cluster, tmp_path):
    """The $1.00 rule for a job already in the queue: the balance drops under $1 while it waits
    (here: an administrator's adjustment) -> held in Slurm, with the reason on the job; a deposit
    -> released, and it runs."""
    from portal.billing import ledger as billing
    from portal import integrations as ig
    from portal.db import Database

    sw = pricey
    _setup(sw, "bob", "1.40")
    blockdir = Path(tempfile.mkdtemp(prefix="money-blocker-", dir="/tmp"))  # sw-carol must reach it
    blockdir.chmod(0o777)
    blocker = slurm_cluster.run(  # both a6000 busy: bob's job waits on Resources
        "sbatch", "--parsable", "--uid=sw-carol", "--gid=slipway-users", "-A", "slipway-test",
        "--gres=gpu:a6000:2", f"--chdir={blockdir}", f"--output={blockdir}/%j.out",
        "--wrap", "sleep 120").stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while (state := slurm_cluster.run("squeue", "-h", "-j", blocker, "-o", "%T %r").stdout.strip()) \
                != "RUNNING None":
            assert time.monotonic() < deadline, f"blocker did not start: {state!r}"
            time.sleep(0.2)
        _work, out = _push(sw, tmp_path, "bob", "wait", SLEEPER.format(ticks=2), options=["gpus=a6000:1"])
        job_id = job_id_from_push(out.stderr)
        sw.wait_job(job_id, {"pending"})
        db = Database(sw.env.get("SLIPWAY_DATABASE_URL") or f"sqlite:///{sw.data_dir / 'slipway.db'}")
        try:
            billing.DbLedgerStore(db).append_if_absent(ig.Adjustment(
                team="bob", amount=Decimal("-0.60"), by="test", at=datetime.now(timezone.utc),
                reason="simulated charge"))
        finally:
            db.dispose()
        deadline = time.monotonic() + 20
        while not (sw.job(job_id)["reason"] or "").startswith("held: balance $0.80 is under $1.00"):
            assert time.monotonic() < deadline, sw.job(job_id)
            time.sleep(0.3)
        slurm_id = str(sw.job(job_id)["slurm_job_id"])
        deadline = time.monotonic() + 10   # the page may say so a moment before scontrol returns
        while (got := slurm_cluster.run("squeue", "-h", "-j", slurm_id, "-o", "%T %r").stdout.split()) \
                != ["PENDING", "JobHeldAdmin"]:
            assert time.monotonic() < deadline, got
            time.sleep(0.3)
        sw.cli("team", "add-funds", "bob", "5.00")
        deadline = time.monotonic() + 20
        while "JobHeldAdmin" in slurm_cluster.run("squeue", "-h", "-j", slurm_id, "-o", "%r").stdout:
            assert time.monotonic() < deadline, "not released after the deposit"
            time.sleep(0.3)
        assert not (sw.job(job_id)["reason"] or "").startswith("held:")
    finally:
        slurm_cluster.run("scancel", blocker, check=False)
        shutil.rmtree(blockdir, ignore_errors=True)
    job = sw.wait_results(job_id, timeout=90)
    assert job["state"] == "succeeded", job
