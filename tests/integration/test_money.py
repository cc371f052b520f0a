"""Money against the live cluster: per-minute GPU billing from sacct, the $1 start gate, the $0
cut-off (files still pushed), and a ledger that equals sacct across a restart of Slipway."""
from __future__ import annotations

import csv
import io
import json
import math
import time
from decimal import Decimal

import pytest

from tests.integration.slipway_harness import cleanup, job_id_from_push, start_slipway, write_project

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


def _push(sw, tmp_path, team: str, branch: str, entrypoint: str, check=True):
    work = tmp_path / f"{team}-{branch}"
    sw.git("clone", "-q", sw.remote(team, team, "p"), str(work))
    sw.git("checkout", "-B", branch, cwd=work)
    write_project(work, entrypoint)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", branch, cwd=work)
    return work, sw.git("push", "origin", branch, cwd=work, check=check)


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
    time.sleep(20)
    sw.restart()  # Slipway goes away mid-job and comes back: nothing is lost or billed twice
    # billed while running: the first full minute is charged before the job ends
    deadline = time.monotonic() + 90
    while Decimal(sw.job(job_id)["cost"]) == 0:
        assert time.monotonic() < deadline, "no charge while the job ran"
        assert sw.job(job_id)["state"] == "running"
        time.sleep(1)
    job = sw.wait_results(job_id, timeout=150)
    assert job["state"] == "succeeded", job

    # let a few more reconciler ticks pass: the final bill must not change
    time.sleep(3)
    rows = [r for r in _ledger(sw, "carol") if r["kind"] == "gpu"]
    minutes = sum(int(r["to_minute"]) - int(r["from_minute"]) for r in rows)
    total = sum(Decimal(r["amount"]) for r in rows)
    acct = _sacct(slurm_cluster, job["slurm_job_id"])
    assert len(acct) == 1 and "gres/gpu:a4000=2" in acct[0]["tres"], acct
    elapsed = int(acct[0]["elapsed"])
    assert 60 < elapsed < 120, acct  # ~90 s of work (88 one-second ticks plus checkout and commit-back)
    assert minutes == math.ceil(elapsed / 60) == 2
    assert total == Decimal("-0.033333"), rows  # charges are negative ledger entries
    assert Decimal(sw.job(job_id)["cost"]) == Decimal("0.033333")  # 2 min × 2 GPUs × $0.50/h
    balance = sw.cli("team", "balance", "carol").stdout
    assert "$9.97" in balance, balance  # $10.00 − $0.033333 = $9.966667, shown to the cent


def test_push_below_one_dollar_is_refused_with_balance_and_how_to_add_funds(sw, tmp_path):
    _setup(sw, "bob", "0.99")
    work, out = _push(sw, tmp_path, "bob", "poor", SLEEPER.format(ticks=1), check=False)
    assert out.returncode != 0
    assert "$0.99" in out.stderr and "add-funds" in out.stderr, out.stderr
    assert not sw.git("ls-remote", "origin", "refs/heads/poor", cwd=work).stdout.strip()
    assert [j for j in json.loads(sw.cli("job", "list", "--json").stdout) if j["project"] == "bob/p"] == []


def test_users_cannot_add_funds_admins_can(sw):
    sw.cli("team", "create", "lab", "--owner", "carol")
    sw.cli("team", "add-member", "lab", "bob", "--role", "user")
    refused = sw.cli("team", "add-funds", "lab", "5.00", as_user="bob", check=False)
    assert refused.returncode != 0 and "add funds" in (refused.stdout + refused.stderr)
    sw.cli("team", "add-funds", "lab", "5.00", "--note", "grant", as_user="carol")
    deposits = [r for r in _ledger(sw, "lab") if r["kind"] == "deposit"]
    assert [(r["amount"], r["note"]) for r in deposits] == [("5.000000", "grant")], deposits


# ---------------------------------------------------------------------- the $0 cut-off

@pytest.fixture(scope="module")
def pricey(slurm_cluster):
    # $45/GPU-hour: a 2-GPU job burns $1.50 a minute, so $1.50 lasts exactly one billed minute.
    sw = start_slipway(slurm_cluster.env, SLIPWAY_GPU_RATES="a4000:45.00,a6000:90.00")
    try:
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def test_team_at_zero_is_cut_off_and_files_still_arrive(pricey, tmp_path):
    sw = pricey
    _setup(sw, "alice", "1.50")
    work, out = _push(sw, tmp_path, "alice", "burn", SLEEPER.format(ticks=300))
    job_id = job_id_from_push(out.stderr)
    sw.wait_job(job_id, {"running"})
    job = sw.wait_results(job_id, timeout=150)
    assert job["state"] == "cancelled", job
    assert "has $0.00" in (job["cancel_reason"] or "") and "add-funds" in job["cancel_reason"], job
    sw.git("pull", "-q", "origin", "burn", cwd=work)
    assert (work / "started.txt").exists()
    ticks = (work / "progress.txt").read_text().count("tick")
    assert 55 <= ticks < 100, ticks  # cut off after about one minute, not at the end
    assert not (work / "done.txt").exists()
    # The final partial minute is billed too: the balance is at or below zero, never lost.
    rows = [r for r in _ledger(sw, "alice") if r["kind"] == "gpu"]
    assert sum(int(r["to_minute"]) - int(r["from_minute"]) for r in rows) >= 1
    bal = sw.cli("team", "balance", "alice").stdout
    assert "-" in bal or "$0.00" in bal, bal
