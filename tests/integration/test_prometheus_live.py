"""Prometheus against a real Slipway (issue 15 part 4): Debian's ``prometheus`` scrapes
``/metrics`` every second with the bearer token (the server allows no network without it), and
values come back through Prometheus' HTTP API (``/api/v1/query``): a team's $25.00 balance, then
the running job and its GPU. Meanwhile the job's own CPU and memory are sampled from ``sstat``
(issue 15 part 3): its points reach the database and its peak stays after it ends.

Prometheus missing: skipped, naming the package (``slurm_conf/install-deps`` installs it)."""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from portal.db import Database
from portal.db.usage_models import JobUsagePoint, JobUsageSummary
from tests.support.harness import (cleanup, free_port, job_id_from_push, start_slipway,
                                   write_project)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
PROMETHEUS = shutil.which("prometheus")

# 200 MB held, one core busy, for 40 s
BUSY = """#!/bin/bash
python3 - <<'EOF'
import time
block = bytearray(200 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
end = time.time() + 40
while time.time() < end:
    pass
EOF
"""


def _wait(what, fn, timeout=30.0, every=0.25):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    if PROMETHEUS is None:
        pytest.skip("Debian's 'prometheus' package is not installed (slurm_conf/install-deps "
                    "installs it): no Prometheus server to scrape Slipway")
    token = secrets.token_urlsafe(24)
    # TEST-NET-1 only: 127.0.0.1 may scrape with the token, never without it
    sw = start_slipway(slurm_cluster.env, SLIPWAY_METRICS_TOKEN=token,
                       SLIPWAY_METRICS_ALLOW="192.0.2.0/24", SLIPWAY_USAGE_SAMPLE_INTERVAL="3")
    sw.metrics_token = token
    try:
        sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "alice", "25.00", "--note", "prometheus e2e")
        sw.cli("project", "create", "alice", "p", "--gpus", "a4000:1", "--image", "python")
        sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


@pytest.fixture
def prometheus(sw, tmp_path):
    port = free_port()
    target = sw.url.split("://", 1)[1]
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({   # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "slipway", "scrape_interval": "1s", "scrape_timeout": "1s",
            "metrics_path": "/metrics",
            "authorization": {"type": "Bearer", "credentials": sw.metrics_token},
            "static_configs": [{"targets": [target]}],
        }],
    }))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}")
        try:
            with urllib.request.urlopen(base + "/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False
    try:
        _wait("Prometheus to be ready", ready, timeout=30)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(base: str, promql: str) -> list[dict]:
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        answer = json.load(r)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def scalar(base: str, promql: str) -> float | None:
    result = query(base, promql)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def _push(sw, tmp_path: Path, entry: str) -> int:
    work = tmp_path / "alice-p"
    sw.git("clone", "-q", sw.remote("alice", "alice", "p"), str(work))
    sw.git("checkout", "-q", "-B", "busy", cwd=work)
    write_project(work, entry)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", "busy", cwd=work)
    return job_id_from_push(sw.git("push", "-q", "origin", "busy", cwd=work).stderr)


def test_prometheus_scrapes_slipway_and_answers(sw, prometheus, tmp_path):
    # without the token Slipway refuses (Prometheus sends it)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(sw.url + "/metrics", timeout=5)
    assert refused.value.code == 401, (
        f"/metrics answered {refused.value.code}" + (": the blueprint portal.web.metrics.bp is "
                                                    "not registered" if refused.value.code == 404
                                                    else ""))

    _wait("a successful scrape", lambda: scalar(prometheus, 'up{job="slipway"}') == 1)
    balance = _wait("the balance through Prometheus", lambda: scalar(
        prometheus, 'slipway_team_balance_dollars{team="alice"}'))
    assert balance == 25.0

    job_id = _push(sw, tmp_path, BUSY)
    sw.wait_job(job_id, states={"running"}, timeout=60)
    assert _wait("the running job through Prometheus", lambda: scalar(
        prometheus, 'slipway_jobs{team="alice",state="running"}') == 1)
    assert _wait("its GPU through Prometheus", lambda: scalar(
        prometheus, 'slipway_gpus_allocated{gpu_type="a4000"}') == 1)
    ticks = scalar(prometheus, "slipway_reconcile_tick_duration_seconds_count")
    assert ticks is not None and ticks >= 1

    # the job's usage, from sstat: a point once it holds its 200 MB (one sample each 3 s here)
    db = Database(f"sqlite:///{sw.data_dir / 'slipway.db'}")
    try:
        def big_point():
            with db.session() as s:
                return s.scalars(select(JobUsagePoint).where(
                    JobUsagePoint.job_id == job_id, JobUsagePoint.rss_mb >= 150)).first()
        point = _wait("a usage point with the job's 200 MB", big_point, timeout=45, every=1)
        # CPU time: Slurm's gatherer adds it every 5 s (the unit tests read its numbers)
        assert point.cpu_seconds >= 0 and point.gpu_util_percent is None   # fake GPUs: none
        sw.cli("job", "cancel", str(job_id))
        sw.wait_job(job_id, timeout=60)

        def closed():
            with db.session() as s:
                row = s.get(JobUsageSummary, job_id)
                return row if row is not None and row.ended_at is not None else None
        summary = _wait("the usage summary to close", closed, timeout=30)
        assert summary.max_rss_mb >= 150 and summary.cpu_seconds >= point.cpu_seconds
    finally:
        db.dispose()
