"""Monitoring against the live cluster: a real ``slipway serve`` samples the cluster from its
reconciler's own squeue/sinfo answers; the dashboard's GPU numbers (and cores, memory) equal what
``sinfo --json`` says at the same tick, with a job Slipway did not submit holding a GPU too; and a
team's usage (GPU-hours per type per day) equals sacct's sums over the same window.

Run with its own cluster: SLIPWAY_TEST_CLUSTER_DIR=var/test-cluster-h8 SLIPWAY_TEST_PORT_BASE=18700.
The dashboard and usage numbers are read as the pages read them (the service layer on the
server's database, with a Slurm backend that refuses every call), and through the HTTP API when
the server has the monitoring routes registered."""
from __future__ import annotations

import json
import math
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from portal.bootstrap import bootstrap
from portal.config import load_config
from portal.monitoring import sample_views, usage
from portal.teams.access import Actor
from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Actor(id=0, name="root", is_cluster_admin=True)
SLEEPER = "#!/bin/bash\nsleep {seconds}\necho done > done.txt\n"


class NoSlurm:
    """The pages must not ask Slurm: every call fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"a monitoring read called Slurm: backend.{name}")


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env, SLIPWAY_GPU_RATES="a4000:0.50,a6000:1.00")
    try:
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


@pytest.fixture(scope="module")
def reader(sw):
    svc = bootstrap(load_config(sw.env), backend=NoSlurm(), upgrade=False)
    yield svc
    svc.db.dispose()


def _sinfo(cluster) -> dict:
    """What the hand-written sum of ``sinfo --json`` says: GPUs per type (allocated, total),
    cores and memory allocated."""
    doc = json.loads(cluster.run("sinfo", "--json").stdout)
    gpus: dict[str, list[int]] = {}
    out = {"cpus_alloc": 0, "mem_alloc_mb": 0}
    for n in doc["nodes"]:
        used = _tres(n.get("tres_used"))
        for t, total in _tres(n["tres"]).items():
            g = gpus.setdefault(t, [0, 0])
            g[0] += used.get(t, 0)
            g[1] += total
        out["cpus_alloc"] += n["alloc_cpus"]
        out["mem_alloc_mb"] += n["alloc_memory"]
    out["gpus"] = gpus
    return out


def _tres(text: str | None) -> dict[str, int]:
    out = {}
    for item in (text or "").split(","):
        key, _, value = item.partition("=")
        if key.startswith("gres/gpu:"):
            out[key[len("gres/gpu:"):]] = int(value)
        elif key == "gres/shard":
            out["shard"] = int(value)
    return out


def _latest(reader) -> dict | None:
    return sample_views.dashboard(reader, ROOT, "hour")["now"]


def _wait(what, fn, timeout=120.0, every=1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def test_dashboard_gpu_numbers_equal_sinfo_at_the_same_tick(sw, reader, slurm_cluster, tmp_path):
    # a job Slipway did not submit holds an a4000 too: sinfo counts it, so must the dashboard
    foreign = slurm_cluster.run("sbatch", "--parsable", "--gres=gpu:a4000:1", "--mem=500M",
                                "--output=/dev/null", "--chdir=/tmp",   # no slurm-N.out here
                                "--wrap", "sleep 300").stdout.strip().split(";")[0]
    try:
        sw.cli("user", "add", "dash", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "dash", "50")
        sw.cli("project", "create", "dash", "p", "--gpus", "a4000:2", "--image", "python")
        sw.tokens["dash"] = sw.cli("token", "create", "dash").stdout.strip()
        work = tmp_path / "dash"
        sw.git("clone", "-q", sw.remote("dash", "dash", "p"), str(work))
        sw.git("checkout", "-B", "busy", cwd=work)
        write_project(work, SLEEPER.format(seconds=240))
        sw.git("add", "-A", cwd=work)
        sw.git("commit", "-qm", "busy", cwd=work)
        job = job_id_from_push(sw.git("push", "origin", "busy", cwd=work).stderr)
        sw.wait_job(job, states={"running"}, timeout=120)
        # the same tick: sinfo before and after a sample agree, so the sample saw that answer
        for _attempt in range(20):
            before = _sinfo(slurm_cluster)
            asked = datetime.now(timezone.utc)
            now = _wait("a sample after sinfo", lambda: (n := _latest(reader)) and
                        datetime.fromisoformat(n["at"]) > asked + timedelta(seconds=1) and n,
                        timeout=90)
            after = _sinfo(slurm_cluster)
            if before == after:
                break
        else:
            pytest.fail("the cluster never held still for two sinfo calls around a sample")
        assert {t: [g["alloc"], g["total"]] for t, g in now["gpus"].items()} == after["gpus"]
        assert after["gpus"]["a4000"][0] >= 3          # Slipway's 2 and the foreign one
        for g in now["gpus"].values():
            assert g["alloc"] + g["idle"] + g["down"] == g["total"]
        assert (now["cpus_alloc"], now["mem_alloc_mb"]) == (after["cpus_alloc"],
                                                             after["mem_alloc_mb"])
        nodes = {n["name"]: n for n in sample_views.dashboard(reader, ROOT)["nodes"]}
        assert set(nodes) == {"a4k-1", "a4k-2", "a6k-1"}
        assert sum(n["gpus_used"] for n in nodes.values() if "a4000" in n["gpus"]) == \
            after["gpus"]["a4000"][0]
        assert all(n["cpu_load"] is not None and n["responding_at"] for n in nodes.values())
        # the HTTP API answers the same numbers, when the server has the routes
        req = urllib.request.Request(sw.url + "/api/cluster", headers={
            "Authorization": f"Bearer {sw.tokens['dash']}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                pytest.fail(f"a non-administrator read /api/cluster: {r.status}")
        except urllib.error.HTTPError as exc:
            assert exc.code in (403, 404)      # 404: the routes are not registered yet
        sw.cli("job", "cancel", str(job))
        sw.wait_job(job, timeout=120)
    finally:
        slurm_cluster.run("scancel", foreign, check=False)


def test_team_usage_equals_saccts_sums(sw, reader, slurm_cluster, tmp_path):
    sw.cli("user", "add", "use", "--unix-user", "sw-bob")
    sw.cli("team", "add-funds", "use", "50")
    sw.cli("project", "create", "use", "p", "--gpus", "a4000:2", "--image", "python")
    sw.tokens["use"] = sw.cli("token", "create", "use").stdout.strip()
    jobs = []
    for i, (seconds, gpus) in enumerate(((8, "a4000:2"), (5, "a6000:1"))):
        work = tmp_path / f"use{i}"
        sw.git("clone", "-q", sw.remote("use", "use", "p"), str(work))
        sw.git("checkout", "-B", f"b{i}", cwd=work)
        write_project(work, SLEEPER.format(seconds=seconds))
        sw.git("add", "-A", cwd=work)
        sw.git("commit", "-qm", f"b{i}", cwd=work)
        out = sw.git("push", "-o", f"gpus={gpus}", "origin", f"b{i}", cwd=work).stderr
        jobs.append(job_id_from_push(out))
    ended = [sw.wait_job(j, timeout=240) for j in jobs]
    assert all(j["state"] == "succeeded" for j in ended), ended
    slurm_ids = [str(j["slurm_job_id"]) for j in ended]
    today = datetime.now(timezone.utc).date()
    first = today - timedelta(days=1)
    records = _wait("sacct to settle", lambda: _sacct(slurm_cluster, slurm_ids, first), 60)
    want: dict[int, dict[str, int]] = {}
    for start, elapsed, tres in records:
        for k in range(math.ceil(elapsed / 60)):
            day = (start + timedelta(minutes=k)).date()
            for t, n in _tres(tres).items():
                by_day = want.setdefault((day - first).days, {})
                by_day[t] = by_day.get(t, 0) + n
    total = {t: sum(d.get(t, 0) for d in want.values()) for t in {"a4000", "a6000"}}
    assert total["a4000"] >= 2 and total["a6000"] >= 1   # 2 GPUs × ≥ 1 started minute

    def stats():
        s = usage.statistics(reader, ROOT, "team:use", "day", first.isoformat(), today.isoformat())
        return s if {t: sum(v) for t, v in s["gpu_minutes"].items()} == total else None

    got = _wait("the usage rollup to hold every billed minute", stats, timeout=60)
    for i in range(2):
        assert {t: v[i] for t, v in got["gpu_minutes"].items() if v[i]} == want.get(i, {})
    assert sum(got["jobs"]["succeeded"]) == 2
    assert got["top_projects"][0]["project"] == "p"


def _sacct(cluster, ids: list[str], first) -> list[tuple[datetime, int, str]] | None:
    """(start, ElapsedRaw, AllocTRES) of each job, once sacct has settled them all."""
    out = cluster.run("sacct", "-j", ",".join(ids), "-X", "-D", "-n", "-P", "-S", first.isoformat(),
                      "-E", "now", "-o", "JobID,State,Start,ElapsedRaw,AllocTRES")
    rows = [line.split("|") for line in out.stdout.splitlines() if line.strip()]
    if len(rows) != len(ids) or any(r[1] != "COMPLETED" or not r[4] for r in rows):
        return None
    # sacct prints local wall-clock time without a zone: read it as this host's local time
    return [(datetime.fromisoformat(r[2]).astimezone(timezone.utc), int(r[3]), r[4])
            for r in rows]


def test_usage_rollups_and_statistics_on_postgresql(postgres_url, tmp_path):
    """The same world as tests/unit/test_usage_stats.py on a real PostgreSQL: upserts, window
    functions and bucket arithmetic give the numbers SQLite gives."""
    from tests.pg_server import create_database
    from tests.unit.test_usage_stats import DAY_D, DAY_E, at, sacct_minutes, usage_world

    svc, backend, _clock, _ids = usage_world(tmp_path, database_url=create_database(
        postgres_url, "monitoring_usage"))
    try:
        stats = usage.statistics(svc, ROOT, "team:ml", "day", DAY_D, DAY_E)
        for i in range(2):
            want = sacct_minutes(backend.acct, "ml", at(0, 0, day=i), at(0, 0, day=i + 1))
            assert {t: v[i] for t, v in stats["gpu_minutes"].items() if v[i]} == want
        assert stats["jobs"] == {"cancelled": [0, 1], "failed": [0, 1], "succeeded": [0, 2]}
        assert stats["wait_started"] == [2, 1] and stats["totals"]["wait_p95_s"] is not None
        months = usage.statistics(svc, ROOT, "team:ml", "month", "2026-02-01", "2026-04-30")
        assert months["gpu_minutes"]["a4000"] == [0, sum(stats["gpu_minutes"]["a4000"]), 0]
        weeks = usage.statistics(svc, ROOT, "cluster", "week", "2026-03-01", "2026-03-16")
        assert sum(weeks["gpu_minutes"]["a6000"]) == 55
        assert [p["project"] for p in stats["top_projects"]] == ["train", "eval"]
    finally:
        svc.db.dispose()
