"""Issue 9 item 10, end to end: a real job's result commit carries trailers that
`git interpret-trailers --parse` reads and that agree with what Slipway knows: the job, the
pushed commit, the image's digest in the catalog, the GPUs Slurm gave, the node, the minutes and
the cost at the configured rate."""
from __future__ import annotations

import re
import subprocess
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from container_images.catalog import Catalog
from tests.support.harness import IMAGE_CACHE, cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

A4000_RATE = Decimal("0.50")      # Config's default gpu_rates (the harness sets none)


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env)
    try:
        sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "alice", "100.00", "--note", "e2e")
        sw.cli("project", "create", "alice", "demo", "--gpus", "a4000:2", "--image", "python")
        sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def trailers_of(sw, cwd, rev: str) -> dict[str, str]:
    body = sw.git("log", "-1", "--format=%B", rev, cwd=cwd).stdout
    out = subprocess.run(["git", "interpret-trailers", "--parse"], input=body, text=True,
                         capture_output=True, check=True).stdout
    pairs = [tuple(line.split(": ", 1)) for line in out.splitlines()]
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), out            # each trailer once
    return dict(pairs)


def test_result_commit_carries_trustworthy_trailers(sw, tmp_path):
    work = tmp_path / "demo"
    sw.git("clone", sw.remote("alice", "alice", "demo"), str(work))
    sw.git("checkout", "-B", "trail-1", cwd=work)
    write_project(work, "#!/bin/bash\nset -e\necho \"gpus=$CUDA_VISIBLE_DEVICES\" > seen.txt\n")
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", "run trail-1", cwd=work)
    pushed = sw.git("rev-parse", "HEAD", cwd=work).stdout.strip()
    out = sw.git("push", "origin", "trail-1", cwd=work)
    job_id = job_id_from_push(out.stderr)

    job = sw.wait_results(job_id)
    assert job["state"] == "succeeded" and job["branch_updated"] is True, job
    sw.git("pull", "-q", "origin", "trail-1", cwd=work)
    results_sha = sw.git("ls-remote", "origin", f"refs/heads/results/trail-1/{job_id}",
                         cwd=work).stdout.split()[0]
    assert sw.git("rev-parse", "HEAD", cwd=work).stdout.strip() == results_sha

    t = trailers_of(sw, work, "HEAD")
    assert t["Slipway-Job"] == str(job_id)
    assert t["Slipway-Commit"] == pushed and t["Slipway-Branch"] == "trail-1"
    assert t["Slipway-Attempt"] == "1" and t["Slipway-Exit-Code"] == "0"
    assert "Slipway-Signal" not in t and "Slipway-Interrupted" not in t
    assert t["Slipway-Image"] == "python"
    assert t["Slipway-Image-Digest"] == Catalog.load().image_digest(
        "python", "charliecloud", IMAGE_CACHE)
    assert t["Slipway-GPUs"] == "a4000 x2"
    seen = re.search(r"gpus=(\S*)", (work / "seen.txt").read_text()).group(1)
    assert t["Slipway-GPU-Devices"] == seen and len(seen.split(",")) == 2
    assert job["node"] and t["Slipway-Node"] == job["node"]

    minutes = int(t["Slipway-Minutes"])
    assert minutes >= 1
    cost = (minutes * 2 * A4000_RATE / 60).quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)
    assert t["Slipway-Cost"] == f"${cost} (a4000 x2 @ $0.50/GPU-hour, {minutes} min)"
