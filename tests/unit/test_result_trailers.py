"""Issue 9 item 10: result commits carry trailers a reader can trust (git_gateway.node.trailers), the
runner fills them from its spec and its node, the portal writes the spec's facts, and images get
a stable content digest (container_images.digest)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from accounting.billing import cumulative_amount, gpu_lines, target_minutes
from accounting.rates import Rates
from container_images import digest
from container_images.catalog import Catalog
from git_gateway.node import runner as rn
from git_gateway.node import trailers
from git_gateway.node.checkout import attempt_start
from git_gateway.node.spec import RunnerSpec, SpecError

SHA = "ab" * 20
KEYS = ["Slipway-Job", "Slipway-Attempt", "Slipway-Commit", "Slipway-Branch", "Slipway-Image",
        "Slipway-Image-Digest", "Slipway-GPUs", "Slipway-GPU-Devices", "Slipway-Node",
        "Slipway-Exit-Code", "Slipway-Minutes", "Slipway-Cost"]


def parse(message: str) -> list[tuple[str, str]]:
    """What `git interpret-trailers --parse` reads from a commit message."""
    out = subprocess.run(["git", "interpret-trailers", "--parse"], input=message.encode(),
                         capture_output=True, check=True).stdout.decode()
    return [tuple(line.split(": ", 1)) for line in out.splitlines()]


def message(block: str) -> str:
    # what `git commit -m SUBJECT -m TRAILERS` records
    return f"slipway: results of job 42 (exit 0)\n\n{block}\n"


def facts(**over):
    kw = dict(job_id=42, commit=SHA, branch="exp-1", attempt=1, image="python",
              image_digest="sha256:" + "cd" * 32, gpu_type="a4000", gpu_count=2,
              gpu_devices="0,1", node="a4k-1", exit_code=0, elapsed_seconds=150,
              gpu_rate="0.50")
    kw.update(over)
    return trailers.result_trailers(**kw)


def test_git_parses_exactly_the_fields():
    got = parse(message(trailers.format_trailers(facts())))
    assert got == [
        ("Slipway-Job", "42"), ("Slipway-Attempt", "1"), ("Slipway-Commit", SHA),
        ("Slipway-Branch", "exp-1"), ("Slipway-Image", "python"),
        ("Slipway-Image-Digest", "sha256:" + "cd" * 32), ("Slipway-GPUs", "a4000 x2"),
        ("Slipway-GPU-Devices", "0,1"), ("Slipway-Node", "a4k-1"), ("Slipway-Exit-Code", "0"),
        ("Slipway-Minutes", "3"),
        ("Slipway-Cost", "$0.050 (a4000 x2 @ $0.50/GPU-hour, 3 min)")]


def test_signal_and_interrupted_and_unknowns():
    got = dict(parse(message(trailers.format_trailers(facts(
        exit_code=None, signal="TERM", interrupted=True, elapsed_seconds=None, node=None,
        gpu_devices=None, image_digest=None, gpu_rate=None)))))
    assert got["Slipway-Signal"] == "TERM" and got["Slipway-Interrupted"] == "yes"
    for key in ("Slipway-Exit-Code", "Slipway-Minutes", "Slipway-Cost", "Slipway-Node",
                "Slipway-Image-Digest"):
        assert got[key] == "unknown", key
    assert got["Slipway-GPU-Devices"] == "unset"


@pytest.mark.parametrize("hostile", [
    "x\nSlipway-Cost: $0.000",
    "x\r\nSlipway-Job: 1",
    "x\n\nSigned-off-by: Mallory <m@evil>",
    "x\n Slipway-Node: continuation",
    "x\u2028Slipway-Minutes: 0",
    "x\x00y\x1bz\tSlipway-Exit-Code: 0",
    "Slipway-Job: 7",
])
def test_hostile_branch_or_image_cannot_add_a_trailer(hostile):
    got = parse(message(trailers.format_trailers(facts(branch=hostile, image=hostile))))
    assert [k for k, _ in got] == KEYS
    values = dict(got)
    assert values["Slipway-Job"] == "42" and values["Slipway-Minutes"] == "3"
    for key in ("Slipway-Branch", "Slipway-Image"):
        assert "\n" not in values[key] and values[key] == trailers.clean_value(hostile)


def test_clean_value_is_one_bounded_line():
    assert trailers.clean_value("a\nb\rc\u2028d\u202ee") == "a?b?c?d?e"
    assert trailers.clean_value("  feat/x  \t y ") == "feat/x y"
    assert trailers.clean_value("") == "unknown" and trailers.clean_value(None) == "unknown"
    assert len(trailers.clean_value("b" * 5000)) == trailers.MAX_VALUE
    with pytest.raises(ValueError):
        trailers.format_trailers([("Bad Key", "x")])


@pytest.mark.parametrize("seconds,minutes", [(0, 0), (1, 1), (59.2, 1), (60, 1), (61, 2),
                                             (3600, 60), (3601, 61)])
def test_minutes_follow_the_ledger_rule(seconds, minutes):
    start = datetime(2026, 1, 1)
    record = SimpleNamespace(job_id="1", start=start, end=start + timedelta(seconds=seconds),
                             elapsed_s=None, state="COMPLETED", gpus={"a4000": 1}, shards=0)
    assert target_minutes(record, start + timedelta(hours=2)) == minutes
    assert trailers.attempt_minutes(seconds) == minutes


@pytest.mark.parametrize("gpu_type,count,rate,minutes", [
    ("a4000", 2, "0.50", 3), ("a6000", 1, "1.00", 1), ("a4000", 3, "0.123457", 7),
    ("shard", 8, "0.07", 61), ("a4000", 1, "0", 5)])
def test_cost_equals_what_the_ledger_bills(gpu_type, count, rate, minutes):
    rates = Rates(gpu_hourly={gpu_type: rate})
    ledger = cumulative_amount(minutes, gpu_lines({gpu_type: count}, rates))
    assert trailers.attempt_cost(minutes, count, Decimal(rate)) == ledger
    text = trailers.cost_text(minutes, gpu_type, count, Decimal(rate))
    assert text.startswith(f"${ledger.quantize(Decimal('0.001'))} ({gpu_type} x{count} @ $")
    assert text.endswith(f"/GPU-hour, {minutes} min)")


def test_rate_shown_with_all_its_decimals():
    assert trailers.usd_rate(Decimal("0.5")) == "$0.50"
    assert trailers.usd_rate(Decimal("2")) == "$2.00"
    assert trailers.usd_rate(Decimal("0.123457")) == "$0.123457"


# ------------------------------------------------------------------------------ runner spec
def spec_dict(tmp_path, **over):
    d = {"job_id": 42, "repo_url": "http://127.0.0.1:1/git/t/p.git", "username": "job:42",
         "token": "t", "commit": SHA, "branch": "exp-1", "workdir": str(tmp_path / "work"),
         "container_argv": ["true"], "image": "python", "image_digest": "sha256:" + "cd" * 32,
         "gpu_type": "a4000", "gpu_count": 2, "gpu_rate": "0.50"}
    d.update(over)
    return d


@pytest.mark.parametrize("key,bad", [("gpu_rate", 0.5), ("gpu_rate", "cheap"), ("gpu_rate", "-1"),
                                     ("gpu_count", True), ("gpu_count", 1.9), ("gpu_count", -1),
                                     ("image", 5), ("image_digest", ["x"]), ("gpu_type", 2)])
def test_spec_refuses_loose_facts(tmp_path, key, bad):
    with pytest.raises(SpecError, match=key):
        RunnerSpec.from_dict(spec_dict(tmp_path, **{key: bad}))


def test_spec_without_facts_still_loads(tmp_path):
    d = spec_dict(tmp_path)
    for key in ("image", "image_digest", "gpu_type", "gpu_count", "gpu_rate"):
        del d[key]
    spec = RunnerSpec.from_dict(d)
    assert (spec.image, spec.gpu_count, spec.gpu_rate) == (None, None, None)


def test_runner_trailer_has_node_devices_and_interrupted_attempt(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURMD_NODENAME", "a4k-2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    spec = RunnerSpec.from_dict(spec_dict(tmp_path))
    os.makedirs(os.path.join(spec.workdir, ".git"))
    first = rn.Runner(spec)
    first.attempt = 1
    first._record_attempt()
    first.started -= 61
    got = dict(parse(message(first.trailer(0, None))))
    assert got["Slipway-Node"] == "a4k-2" and got["Slipway-GPU-Devices"] == "2,3"
    assert got["Slipway-Minutes"] == "2" and got["Slipway-Commit"] == SHA
    assert got["Slipway-Cost"] == "$0.033 (a4000 x2 @ $0.50/GPU-hour, 2 min)"

    # attempt 2 runs elsewhere and saves what attempt 1 left: attempt 1's node, unknown minutes
    monkeypatch.setenv("SLURMD_NODENAME", "a6k-1")
    second = rn.Runner(spec)
    second.attempt = 2
    got = dict(parse(message(second.trailer(None, None, attempt=1, interrupted=True))))
    assert got["Slipway-Attempt"] == "1" and got["Slipway-Node"] == "a4k-2"
    assert got["Slipway-GPU-Devices"] == "2,3" and got["Slipway-Interrupted"] == "yes"
    assert got["Slipway-Minutes"] == "unknown" and got["Slipway-Exit-Code"] == "unknown"


def test_attempt_start_uses_slurm_when_it_says():
    assert attempt_start({"SLURM_JOB_START_TIME": "1000"}, now=1100.0) == 1000.0
    assert attempt_start({"SLURM_JOB_START_TIME": "2000"}, now=1100.0) == 1100.0  # future
    assert attempt_start({"SLURM_JOB_START_TIME": "soon"}, now=1100.0) == 1100.0
    assert attempt_start({}, now=1100.0) == 1100.0


# ------------------------------------------------------------------------------- digests
def make_tree(root):
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("NAME=test\n")
    os.symlink("bin/tool", root / "tool")


def test_tree_digest_is_stable_and_sees_contents_modes_and_links(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a)
    make_tree(b)
    base = digest.tree_digest(a)
    assert base.startswith("sha256:") and base == digest.tree_digest(b)  # path-independent
    (b / "etc" / "os-release").write_text("NAME=tampered\n")
    assert digest.tree_digest(b) != base
    (b / "etc" / "os-release").write_text("NAME=test\n")
    assert digest.tree_digest(b) == base
    os.chmod(b / "bin" / "tool", 0o700)
    assert digest.tree_digest(b) != base
    os.chmod(b / "bin" / "tool", 0o755)
    os.unlink(b / "tool")
    os.symlink("etc/os-release", b / "tool")
    assert digest.tree_digest(b) != base


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path):
    sif = tmp_path / "img.sif"
    sif.write_bytes(b"\x00sif" * 1000)
    assert digest.file_digest(sif) == "sha256:" + hashlib.sha256(b"\x00sif" * 1000).hexdigest()


def test_image_digest_is_cached_until_the_image_is_replaced(tmp_path, monkeypatch):
    digest.clear_cache()
    img = tmp_path / "python"
    make_tree(img)
    calls = []
    real = digest.tree_digest
    monkeypatch.setattr(digest, "tree_digest", lambda p: calls.append(p) or real(p))
    first = digest.image_digest(img)
    assert digest.image_digest(img) == first and len(calls) == 1
    # a rebuild: a new tree renamed into place (what container_images/build does)
    new = tmp_path / ".python.new"
    make_tree(new)
    (new / "etc" / "os-release").write_text("NAME=rebuilt\n")
    os.rename(img, tmp_path / ".python.old")
    os.rename(new, img)
    second = digest.image_digest(img)
    assert second != first and len(calls) == 2


def test_catalog_digest_per_runtime(tmp_path):
    digest.clear_cache()
    cat = Catalog.load()
    make_tree(tmp_path / "python")
    assert cat.image_digest("python", "charliecloud", tmp_path) == digest.tree_digest(
        tmp_path / "python")
    sif = cat.sif_path("python", tmp_path)
    sif.parent.mkdir(parents=True)
    sif.write_bytes(b"SIF")
    assert cat.image_digest("python", "apptainer", tmp_path) == digest.file_digest(sif)
    with pytest.raises(OSError):
        cat.image_digest("busybox", "apptainer", tmp_path)   # no SIF there


# --------------------------------------------------------------------------- portal spec
def test_prepare_job_writes_the_trailer_facts(tmp_path):
    import dataclasses

    from portal.jobs import runner_spec
    from slurm_bridge.request import GpuRequest
    from tests.support.fakes import make_services

    digest.clear_cache()
    make_tree(tmp_path / "images" / "python")
    svc = make_services(tmp_path, images_root=tmp_path / "images",
                        gpu_rates={"a4000": Decimal("0.50"), "a6000": Decimal("1.25")})
    try:
        snap = runner_spec.JobSnapshot(
            job_id=7, team="nlp", project="proj", commit=SHA, branch="exp-1", image="python",
            port=12345, unix_user="root", account="team-nlp", gpus=GpuRequest("a6000", 2),
            time_limit_min=60)
        path, spec, _cmd = runner_spec.prepare_job(svc, snap, "token")
        on_disk = json.loads(path.read_text())
        assert on_disk["image"] == "python" and on_disk["gpu_type"] == "a6000"
        assert on_disk["gpu_count"] == 2 and isinstance(on_disk["gpu_rate"], str)
        assert Decimal(on_disk["gpu_rate"]) == Decimal("1.25")
        assert on_disk["image_digest"] == digest.tree_digest(tmp_path / "images" / "python")
        loaded = RunnerSpec.from_dict(on_disk)           # the runner accepts what it gets
        assert loaded.gpu_rate == on_disk["gpu_rate"]
        assert isinstance(spec, RunnerSpec) and loaded == spec  # one contract: written = read

        snap = dataclasses.replace(snap, job_id=8, image="busybox")  # not built here: unknown, not fatal
        _p, spec, _c = runner_spec.prepare_job(svc, snap, "token")
        assert spec.image_digest is None
    finally:
        svc.db.dispose()
