"""The cluster sampler (portal/monitoring/samples.py) driven through the reconciler's tick with a
FakeBackend answering real sinfo output (tests/fixtures/slurm/): the sample equals what sinfo
and squeue said at that tick, one per minute at most, the node table, storage, the hourly
downsampling and retention, and the dashboard (page, API, CLI) — administrators only."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

import portal.api.monitoring  # noqa: F401  (its routes join the API blueprint)
from portal.app import create_app
from portal.cli import Ctx, main
from portal.cli.monitoring import monitoring_group
from portal.db.monitoring_models import STEP_HOUR, STEP_MINUTE, ClusterNode, ClusterSample
from portal.jobs.reconciler import Reconciler
from portal.monitoring import sample_retention, samples
from portal.monitoring.sample_math import epoch_minute
from slurm_bridge.records import QueueRecord, parse_nodes
from tests.support.fakes import Clock, FakeBackend, make_services
from tests.support.web import login, make_world

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def sinfo(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def tres(text: str | None) -> dict[str, int]:
    """``cpu=8,mem=8000M,gres/gpu=4,gres/gpu:a4000=4,gres/shard=8`` -> {"a4000": 4, "shard": 8}
    (written here on its own, not slurm_bridge's parser)."""
    out = {}
    for item in (text or "").split(","):
        key, _, value = item.partition("=")
        if key.startswith("gres/gpu:"):
            out[key[len("gres/gpu:"):]] = int(value)
        elif key == "gres/shard":
            out["shard"] = int(value)
    return out


def expected_from_sinfo(doc: dict) -> dict:
    """What the raw sinfo JSON says, summed by hand: GPUs per type allocated/idle/down, cores
    and memory allocated of the total, nodes down."""
    gpus, out = {}, {"cpus_alloc": 0, "cpus_total": 0, "mem_alloc_mb": 0, "mem_total_mb": 0,
                     "nodes_down": 0}
    bad = {"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "NOT_RESPONDING"}
    for n in doc["nodes"]:
        state = [n["state"]] if isinstance(n["state"], str) else n["state"]
        up = not ({s.upper() for s in state} | {f.upper() for f in n.get("state_flags") or []}) & bad
        used = tres(n.get("tres_used"))
        for t, total in tres(n["tres"]).items():
            g = gpus.setdefault(t, {"total": 0, "alloc": 0, "idle": 0, "down": 0})
            g["total"] += total
            g["alloc"] += used.get(t, 0)
            g["idle" if up else "down"] += total - used.get(t, 0)
        out["cpus_alloc"] += n["alloc_cpus"]
        out["cpus_total"] += n["cpus"]
        out["mem_alloc_mb"] += n["alloc_memory"]
        out["mem_total_mb"] += n["real_memory"]
        out["nodes_down"] += 0 if up else 1
    out["gpus"] = gpus
    return out


def queued(job_id: int, state: str, **kw) -> QueueRecord:
    return QueueRecord(job_id=job_id, state=state, reason=kw.pop("reason", "None"),
                       node=kw.pop("node", "a4k-1" if state == "RUNNING" else ""), start_time=None,
                       submit_time=None, account="other", user="someone", qos="normal",
                       name=f"j{job_id}", comment=kw.pop("comment", ""), **kw)


@pytest.fixture
def env(tmp_path):
    backend, clock = FakeBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, storage_interval=10**9)
    ids = make_world(svc)
    yield svc, backend, clock, ids
    svc.db.dispose()


def sample_rows(svc, step=STEP_MINUTE) -> list[ClusterSample]:
    with svc.db.session() as s:
        return list(s.scalars(select(ClusterSample).where(ClusterSample.step == step)
                              .order_by(ClusterSample.bucket)))


def web_app(svc):
    app = create_app(svc)
    if "monitoring" not in app.blueprints:   # until the lead registers it in portal/web
        from portal.web.monitoring import bp
        app.register_blueprint(bp)
    return app


# --------------------------------------------------------------------------------- samples

@pytest.mark.parametrize("fixture", ["sinfo.json", "sinfo_drained.json"])
def test_sample_equals_what_sinfo_and_squeue_said_at_that_tick(env, fixture):
    svc, backend, clock, _ = env
    doc = sinfo(fixture)
    backend.node_records = parse_nodes(doc)
    # every job of the queue counts, Slipway's or not; an array's pending tasks one each
    backend.queue = {1: queued(1, "RUNNING"), 2: queued(2, "RUNNING", comment="slipway"),
                     3: queued(3, "PENDING", reason="Resources"),
                     40: queued(40, "PENDING", array_job_id=40, array_tasks="2-5%2"),
                     41: queued(41, "COMPLETING")}
    report = Reconciler(svc).tick()
    [row] = sample_rows(svc)
    want = expected_from_sinfo(doc)
    assert (row.jobs_running, row.jobs_pending) == (2, 5)
    assert json.loads(row.gpus) == want["gpus"]
    assert (row.cpus_alloc, row.cpus_total, row.mem_alloc_mb, row.mem_total_mb, row.nodes_down) \
        == (want["cpus_alloc"], want["cpus_total"], want["mem_alloc_mb"], want["mem_total_mb"],
            want["nodes_down"])
    assert row.at == clock() and row.bucket == epoch_minute(clock()) and row.note is None
    assert not [e for e in report.errors if e.startswith("monitoring samples")]
    with svc.db.session() as s:
        nodes = {n.name: n for n in s.scalars(select(ClusterNode))}
    for raw in doc["nodes"]:
        n = nodes[raw["name"]]
        assert n.cpu_load == raw["cpu_load"] / 100 and n.real_memory_mb == raw["real_memory"]
        assert n.alloc_memory_mb == raw["alloc_memory"] and n.seen_at == clock()
        assert n.last_heard.timestamp() == max(raw["last_busy"], raw["slurmd_start_time"])
        assert {t: total for t, (_used, total) in json.loads(n.gpus).items()} == tres(raw["tres"])
    if fixture == "sinfo_drained.json":
        assert nodes["a4k-2"].reason == "fan swap" and not nodes["a4k-2"].available
        assert nodes["a4k-2"].flags == "DRAIN"


def test_one_sample_per_minute_and_the_node_table_follows_sinfo(env):
    svc, backend, clock, _ = env
    backend.node_records = parse_nodes(sinfo("sinfo.json"))
    clock.t = clock.t.replace(second=5)
    for _ in range(3):       # three ticks within one minute: one sample
        Reconciler(svc).tick()
        clock.advance(seconds=15)
    assert len(sample_rows(svc)) == 1
    clock.advance(seconds=30)
    backend.node_records = backend.node_records[:2]    # a node left the configuration
    Reconciler(svc).tick()
    assert len(sample_rows(svc)) == 2
    with svc.db.session() as s:
        assert sorted(s.scalars(select(ClusterNode.name))) == ["a4k-1", "a4k-2"]


def test_a_failed_poll_leaves_a_gap_with_the_reason(env):
    svc, backend, clock, _ = env
    backend.node_records = parse_nodes(sinfo("sinfo.json"))
    Reconciler(svc).tick()
    clock.advance(minutes=1)
    backend.down = True
    Reconciler(svc).tick()
    clock.advance(minutes=1)
    backend.down, backend.nodes_down = False, True
    Reconciler(svc).tick()
    ok, down, no_sinfo = sample_rows(svc)
    assert ok.gpus and down.gpus is None and down.jobs_running is None
    assert down.note.startswith("poll failed") and "sinfo was not asked" in down.note
    assert no_sinfo.jobs_running == 0 and no_sinfo.gpus is None
    assert no_sinfo.note.startswith("sinfo: ") and "down" in no_sinfo.note
    with svc.db.session() as s:   # the node table keeps the last answer it had
        assert s.scalar(select(func.count()).select_from(ClusterNode)) == 3


def test_a_node_not_responding_keeps_when_it_was_last_heard_from(env):
    svc, backend, clock, _ = env
    nodes = parse_nodes(sinfo("sinfo.json"))
    backend.node_records = nodes
    Reconciler(svc).tick()
    heard = clock()
    clock.advance(minutes=2)
    import dataclasses
    backend.node_records = [dataclasses.replace(nodes[0], state="idle",
                                                flags=("NOT_RESPONDING",))] + nodes[1:]
    Reconciler(svc).tick()
    with svc.db.session() as s:
        a, b = s.get(ClusterNode, "a4k-1"), s.get(ClusterNode, "a4k-2")
    assert a.responding_at == heard and not a.available
    assert b.responding_at == clock()
    [_, row] = sample_rows(svc)
    assert json.loads(row.gpus)["a4000"]["down"] == 4 - nodes[0].gpus["a4000"].allocated


def test_storage_is_the_billers_latest_round(tmp_path):
    backend, clock = FakeBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, storage_interval=120)
    make_world(svc)            # real repositories: their bytes on disk are billed
    clock.advance(minutes=5)
    Reconciler(svc).tick()
    from portal.db import LedgerEntry
    with svc.db.session() as s:
        first_round = s.scalar(select(func.sum(LedgerEntry.bytes)).where(LedgerEntry.kind == "storage"))
    assert first_round and sample_rows(svc)[0].storage_bytes == first_round
    clock.advance(seconds=61)
    Reconciler(svc).tick()     # no storage round this minute: the same number
    clock.advance(seconds=90)
    Reconciler(svc).tick()     # a second round
    rows = sample_rows(svc)
    assert [r.storage_bytes for r in rows] == [first_round] * 3


# ------------------------------------------------------------------------- downsampling

def test_hourly_rows_average_and_peak_and_old_rows_are_pruned(env):
    svc, backend, clock, _ = env
    svc.config.sample_minutes_days, svc.config.sample_hours_days = 1, 3
    nodes = parse_nodes(sinfo("sinfo.json"))
    backend.node_records = nodes
    clock.t = clock.t.replace(minute=0, second=10)
    start_hour = clock()
    running = []
    for minute in range(120):        # two full hours, a running job more every 10 minutes
        backend.queue = {i: queued(i, "RUNNING") for i in range(minute // 10 + 1)}
        running.append(minute // 10 + 1)
        Reconciler(svc).tick()
        clock.advance(minutes=1)
    # the tick ran the hourly pass at its first tick and an hour later (hour one folded)
    assert len(sample_rows(svc, STEP_HOUR)) == 1
    done = sample_retention.maybe_run(svc, clock(), force=True)
    assert done["hours"] == 1
    first, second = sample_rows(svc, STEP_HOUR)
    assert first.at == start_hour + timedelta(minutes=59) and first.samples == 60
    assert first.jobs_running == pytest.approx(sum(running[:60]) / 60)
    assert (first.jobs_running_max, second.jobs_running_max) == (6, 12)
    assert json.loads(first.gpus)["a4000"]["total"] == 8
    assert sample_retention.maybe_run(svc, clock()) is None      # once an hour at most
    clock.advance(days=2)
    Reconciler(svc).tick()        # the hourly pass runs from the tick
    assert all(r.bucket >= epoch_minute(clock() - timedelta(days=1))
               for r in sample_rows(svc))
    assert len(sample_rows(svc, STEP_HOUR)) == 2
    clock.advance(days=2)
    Reconciler(svc).tick()     # the first two hours are older than 3 days now: gone
    assert [r.bucket for r in sample_rows(svc, STEP_HOUR)] == \
        [epoch_minute(clock() - timedelta(days=2)) // 60 * 60]   # the sample of two days ago


# -------------------------------------------------------------------- dashboard: page, API

def test_dashboard_page_api_and_cli_show_the_same_numbers_to_administrators_only(env):
    svc, backend, clock, ids = env
    backend.node_records = parse_nodes(sinfo("sinfo_drained.json"))
    backend.queue = {1: queued(1, "RUNNING"), 2: queued(2, "PENDING")}
    for _ in range(3):
        Reconciler(svc).tick()
        clock.advance(minutes=1)
    app = web_app(svc)
    admin, user = app.test_client(), app.test_client()
    login(admin, "dave")
    login(user, "alice")
    data = admin.get("/api/cluster?range=hour").get_json()
    assert data["ok"] and data["now"]["gpus"] == expected_from_sinfo(sinfo("sinfo_drained.json"))["gpus"]
    assert data["series"]["jobs_running"] == [1, 1, 1] and len(data["series"]["x"]) == 3
    assert [n["name"] for n in data["nodes"]] == ["a4k-1", "a4k-2", "a6k-1"]
    assert data["nodes"][1]["reason"] == "fan swap" and data["nodes"][1]["gpus_used"] == 4
    page = admin.get("/admin/cluster?range=hour")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and "fan swap" in body and 'id="cluster-charts"' in body
    charts = json.loads(re.search(r'id="cluster-charts">(.*?)</script>', body, re.S).group(1))
    assert {c["id"] for c in charts} >= {"chart-gpu-a4000", "chart-jobs", "chart-cpus"}
    assert all(len(s["values"]) == 3 for c in charts for s in c["series"])
    assert user.get("/admin/cluster").status_code == 404
    r = user.get("/api/cluster")
    assert r.status_code == 403 and "administrators" in r.get_json()["error"]
    assert admin.get("/api/cluster?range=year").status_code == 400
    for name in ("day", "week", "month"):
        assert admin.get(f"/admin/cluster?range={name}").status_code == 200
    result = CliRunner().invoke(main, ["monitoring", "cluster"], obj=Ctx(services=svc),
                                catch_exceptions=False) if "monitoring" in main.commands else \
        CliRunner().invoke(monitoring_group, ["cluster"], obj=Ctx(services=svc))
    assert result.exit_code == 0, result.output
    assert "fan swap" in result.output and "a4000" in result.output
    refused = CliRunner().invoke(monitoring_group, ["cluster"], obj=Ctx("alice", services=svc))
    assert refused.exit_code != 0 and "administrators" in refused.output
    assert backend.jobs_calls == 3   # the pages asked Slurm nothing


def test_samples_never_stop_the_tick(env, monkeypatch):
    svc, backend, clock, _ = env
    backend.node_records = parse_nodes(sinfo("sinfo.json"))

    def broken(*a, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(samples, "take", broken)
    report = Reconciler(svc).tick()
    assert "monitoring cluster sample: disk full" in report.errors
    assert sample_rows(svc) == []
