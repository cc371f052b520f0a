"""The portal in a real browser against the real thing: `slipway serve` on the live Slurm cluster.

A user logs in, creates a project in the page, pushes to it with real git, watches the job's
state change on its page, cancels it from the page, and the files the job wrote are pushed back.
"""
from __future__ import annotations

import re
import subprocess

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in, shot
from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SLOW = """#!/bin/bash
echo "training started"
for i in $(seq 1 600); do echo "epoch $i" | tee -a progress.txt; sleep 0.5; done
"""


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env)
    try:
        sw.cli("user", "add", "dana", "--unix-user", "sw-carol", "--password", "dana-secret-pw")
        sw.cli("team", "add-funds", "dana", "20.00")
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def test_project_push_watch_and_cancel_in_the_browser(sw, new_page, tmp_path):
    page = new_page(sw.url)
    log_in(page, sw.url, "dana", "dana-secret-pw")
    expect(page.locator("h1")).to_contain_text("Dashboard")

    # create a project from the team page
    page.goto(sw.url + "/teams/dana")
    form = page.locator("#new-project")
    form.locator("input[name=name]").fill("vision")
    form.locator("select[name=gpu_type]").select_option("a4000")
    form.locator("input[name=gpu_count]").fill("2")
    form.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/projects/dana/vision$"))
    remote = page.locator("#remote-url").inner_text().strip()
    assert remote == f"{sw.url}/git/dana/vision.git"

    # a token from the tokens page is the git password
    page.goto(sw.url + "/tokens")
    page.fill("#create-token input[name=name]", "laptop")
    page.click("#create-token button[type=submit]")
    sw.tokens["dana"] = page.locator("#new-token").inner_text().strip()

    work = tmp_path / "vision"
    sw.git("clone", "-q", sw.remote("dana", "dana", "vision"), str(work))
    sw.git("checkout", "-b", "exp-1", cwd=work)
    write_project(work, SLOW)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", "train", cwd=work)
    job_id = job_id_from_push(sw.git("push", "origin", "exp-1", cwd=work).stderr)

    # the job page follows the job: pending/running, then the live log shows its output
    page.goto(f"{sw.url}/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text(re.compile("queued|pending|running"))
    expect(page.locator("#job-state")).to_have_text("running", timeout=60_000)
    expect(page.locator("#log")).to_contain_text("epoch 2", timeout=30_000)
    shot(page, "real-job-running")

    page.click("#cancel")
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=30_000)
    shot(page, "real-job-cancelled")

    # the files the job wrote before the cancel are on the branch
    job = sw.wait_results(job_id, timeout=30)
    assert job["state"] == "cancelled" and job["branch_updated"], job
    sw.git("pull", "-q", "origin", "exp-1", cwd=work)
    assert "epoch 1" in (work / "progress.txt").read_text()
    out = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=work, capture_output=True, text=True)
    assert f"job {job_id}" in out.stdout
