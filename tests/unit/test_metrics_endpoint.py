"""``GET /metrics`` (issue 15 part 4, docs/MONITORING.md): Prometheus' text format from the
official client, read from the database (never Slurm) — jobs by team and state, GPUs allocated
by type, queue-wait and push-to-pending histograms, tick durations, Slurm command errors, team
balances; who may scrape (token, networks, proxies); and the Grafana dashboard that ships
with Slipway names only metrics /metrics exposes."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from portal.app import create_app
from portal.db import Job, JobPart
from portal.jobs.reconciler.report import TickReport
from portal.monitoring import prom, prom_queries, prom_ticks
from portal.web import metrics
from tests.support.fakes import make_services
from tests.support.web import add_job, make_world

DASHBOARD = Path(__file__).resolve().parents[2] / "portal" / "monitoring" / "grafana" / "slipway.json"
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


class NoSlurm:
    """Every Slurm call fails the test: /metrics reads the database only."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def boom(*a, **kw):
            raise AssertionError(f"/metrics called Slurm: backend.{name}()")
        return boom


# the default allows no network (the token is needed): these tests scrape from localhost
LOCAL_NETS = "127.0.0.1/32,::1/128"

def make_app(svc):
    app = create_app(svc)
    if "metrics" not in app.blueprints:   # until the lead registers it in portal.web
        app.register_blueprint(metrics.bp)
    return app


@pytest.fixture
def world(tmp_path):
    svc = make_services(tmp_path, backend=NoSlurm(), metrics_allow=LOCAL_NETS)
    ids = make_world(svc)
    yield svc, ids
    svc.db.dispose()


def scrape(app, environ=LOCAL, **headers):
    return app.test_client().get("/metrics", environ_base=environ, headers=headers)


def samples(body: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found, name, **labels):
    return found[(name, tuple(sorted(labels.items())))]


# ------------------------------------------------------------------------------- values

def test_metrics_from_the_database(world):
    svc, ids = world
    now = svc.now()
    proj = ids["proj"]
    # a sweep with 2 of 3 tasks running (a6000 x2 each), a 2-node job (a4000 x2 per node),
    # a CPU-only job (its cores are no GPUs), shards of a shared a6000
    sweep = add_job(svc, proj, branch="sweep", state="running", slurm_job_id=2000, task_count=3)
    with svc.db.transaction() as s:
        s.get(Job, sweep).gpu_type, s.get(Job, sweep).gpu_count = "a6000", 2
        for i, state in enumerate(("running", "running", "succeeded")):
            s.add(JobPart(job_id=sweep, kind="task", index=i, state=state))
    multi = add_job(svc, proj, branch="multi", state="finishing", slurm_job_id=2001, nodes=2)
    cpu = add_job(svc, proj, branch="cpu", state="running", slurm_job_id=2002)
    shard = add_job(svc, ids["secret"], branch="shard", state="running", slurm_job_id=2003)
    with svc.db.transaction() as s:
        s.get(Job, multi).gpu_count = 2
        s.get(Job, cpu).gpu_type, s.get(Job, cpu).gpu_count = "cpu", 8
        s.get(Job, shard).gpu_type, s.get(Job, shard).gpu_count = "a6000-shard", 3
        # queue waits: 10 s, 100 s; push to pending: 0.3 s, 4 s
        for job_id, wait, push in ((ids["running"], 10, 0.3), (ids["succeeded"], 100, 4)):
            job = s.get(Job, job_id)
            job.created_at = now - timedelta(hours=1)
            job.submitted_at = job.created_at + timedelta(seconds=push)
            job.started_at = job.submitted_at + timedelta(seconds=wait)
        for job_id in (ids["pending"], ids["vision_job"], sweep, multi, cpu, shard):
            job = s.get(Job, job_id)   # started: no; and no submission time: not observed
            job.started_at = job.submitted_at = None
    prom_ticks.observe_tick(svc, now, TickReport(duration_s=0.2, errors=[
        "poll failed: Slurm is not answering", "nodes: sinfo timed out", "storage nlp/x: full"]))
    prom_ticks.observe_tick(svc, now + timedelta(seconds=5), TickReport(duration_s=3.0))

    r = scrape(make_app(svc))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(r.get_data(as_text=True))

    assert value(found, "slipway_database_up") == 1
    assert value(found, "slipway_team_balance_dollars", team="nlp") == 24.25   # $25 - $0.75
    assert value(found, "slipway_team_balance_dollars", team="vision") == 39.0
    assert value(found, "slipway_jobs", team="nlp", state="running") == 3    # running, sweep, cpu
    assert value(found, "slipway_jobs", team="nlp", state="finishing") == 1
    assert value(found, "slipway_jobs", team="nlp", state="pending") == 1
    assert value(found, "slipway_jobs", team="nlp", state="failed") == 0     # every state shown
    assert value(found, "slipway_jobs", team="vision", state="running") == 2
    # a4000: nlp's running job 1 + vision's 1 + the 2-node job 2 x 2; a6000: 2 tasks x 2
    assert value(found, "slipway_gpus_allocated", gpu_type="a4000") == 6
    assert value(found, "slipway_gpus_allocated", gpu_type="a6000") == 4
    assert value(found, "slipway_gpus_allocated", gpu_type="a6000-shard") == 3
    assert ("slipway_gpus_allocated", (("gpu_type", "cpu"),)) not in found

    wait = "slipway_job_queue_wait_seconds"
    assert value(found, wait + "_count") == 2 and value(found, wait + "_sum") == pytest.approx(110, abs=1e-3)
    assert value(found, wait + "_bucket", le="5.0") == 0
    assert value(found, wait + "_bucket", le="15.0") == 1
    assert value(found, wait + "_bucket", le="120.0") == 2
    assert value(found, wait + "_bucket", le="+Inf") == 2
    push = "slipway_job_push_to_pending_seconds"
    assert value(found, push + "_count") == 2 and value(found, push + "_sum") == pytest.approx(4.3, abs=1e-3)
    assert value(found, push + "_bucket", le="0.25") == 0
    assert value(found, push + "_bucket", le="0.5") == 1
    assert value(found, push + "_bucket", le="5.0") == 2

    tick = "slipway_reconcile_tick_duration_seconds"
    assert value(found, tick + "_count") == 2 and value(found, tick + "_sum") == pytest.approx(3.2)
    assert value(found, tick + "_bucket", le="0.25") == 1
    assert value(found, tick + "_bucket", le="5.0") == 2
    assert value(found, "slipway_reconcile_errors_total") == 3
    assert value(found, "slipway_slurm_command_errors_total", command="squeue") == 1
    assert value(found, "slipway_slurm_command_errors_total", command="sinfo") == 1
    assert value(found, "slipway_slurm_command_errors_total", command="sacct") == 0
    assert value(found, "slipway_reconcile_last_tick_timestamp_seconds") == (
        now + timedelta(seconds=5)).timestamp()
    # this process: the scrapes themselves, and the client's process collector
    assert value(found, "slipway_metrics_scrapes_total", code="200") == 1
    assert any(name == "process_cpu_seconds_total" for name, _ in found)


def test_a_database_that_fails_gives_database_up_0(world, monkeypatch):
    svc, _ = world
    app = make_app(svc)

    def broken(s):
        raise RuntimeError("database is gone")
    monkeypatch.setattr(prom_queries, "jobs_by_team_state", broken)
    r = scrape(app)
    assert r.status_code == 200
    found = samples(r.get_data(as_text=True))
    assert value(found, "slipway_database_up") == 0
    assert not any(name.startswith("slipway_jobs") for name, _ in found)


def test_each_app_has_its_own_registry(tmp_path):
    apps = []
    for name in ("one", "two"):
        svc = make_services(tmp_path / name, metrics_allow=LOCAL_NETS)
        make_world(svc)
        apps.append(make_app(svc))
    for app in apps:
        assert scrape(app).status_code == 200
    found = samples(scrape(apps[0]).get_data(as_text=True))
    assert value(found, "slipway_metrics_scrapes_total", code="200") == 2   # its own two


# ------------------------------------------------------------------------------- access

def test_without_a_token_only_allowed_networks_scrape(world):
    svc, _ = world
    app = make_app(svc)
    assert scrape(app).status_code == 200
    assert scrape(app, {"REMOTE_ADDR": "::1"}).status_code == 200
    assert scrape(app, {"REMOTE_ADDR": "::ffff:127.0.0.1"}).status_code == 200
    r = scrape(app, {"REMOTE_ADDR": "10.1.2.3"})
    assert r.status_code == 403
    assert "10.1.2.3 is not in metrics_allow" in r.get_data(as_text=True)
    assert r.mimetype == "text/plain"
    # a token sent where none is configured grants nothing
    assert scrape(app, {"REMOTE_ADDR": "10.1.2.3"}, Authorization="Bearer x").status_code == 403


def test_with_a_token(tmp_path):
    svc = make_services(tmp_path, backend=NoSlurm(), metrics_token="s3cret-token",
                        metrics_allow="10.0.0.0/8")
    app = make_app(svc)
    far = {"REMOTE_ADDR": "192.0.2.7"}
    assert scrape(app, far, Authorization="Bearer s3cret-token").status_code == 200
    assert scrape(app, far, Authorization="bearer  s3cret-token ").status_code == 200
    r = scrape(app, far)
    assert r.status_code == 401 and "Authorization: Bearer" in r.get_data(as_text=True)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = scrape(app, {"REMOTE_ADDR": "10.9.9.9"}, Authorization="Bearer wrong")
    assert r.status_code == 401 and "wrong metrics token" in r.get_data(as_text=True)
    assert scrape(app, {"REMOTE_ADDR": "10.9.9.9"}).status_code == 200   # an allowed network
    assert scrape(app).status_code == 401                                # localhost: not listed
    refused = samples(scrape(app, far, Authorization="Bearer s3cret-token").get_data(as_text=True))
    assert value(refused, "slipway_metrics_scrapes_total", code="401") == 3


def test_none_allows_no_network(tmp_path):
    svc = make_services(tmp_path, backend=NoSlurm(), metrics_token="t", metrics_allow="none")
    app = make_app(svc)
    assert scrape(app).status_code == 401
    assert scrape(app, Authorization="Bearer t").status_code == 200


def test_the_client_address_behind_trusted_proxies(tmp_path):
    svc = make_services(tmp_path / "a", backend=NoSlurm(), trusted_proxies=1,
                        metrics_allow=LOCAL_NETS)
    behind = make_app(svc)
    # the proxy (localhost) forwards a far client: the client's address counts
    assert scrape(behind, LOCAL, **{"X-Forwarded-For": "203.0.113.5"}).status_code == 403
    assert scrape(behind, LOCAL, **{"X-Forwarded-For": "127.0.0.1"}).status_code == 200
    direct = make_app(make_services(tmp_path / "b", backend=NoSlurm(), metrics_allow=LOCAL_NETS))
    # no trusted proxy: a forged header changes nothing
    assert scrape(direct, {"REMOTE_ADDR": "203.0.113.5"},
                  **{"X-Forwarded-For": "127.0.0.1"}).status_code == 403


def test_a_bad_network_stops_the_app_with_the_reason(tmp_path):
    svc = make_services(tmp_path, metrics_allow="127.0.0.1/32, localhost")
    with pytest.raises(prom.MetricsConfigError, match="'localhost' is not a network"):
        make_app(svc)


# ---------------------------------------------------------------------- Grafana dashboard

def test_the_dashboard_is_a_grafana_model_on_exposed_metrics(world):
    svc, _ = world
    prom_ticks.observe_tick(svc, svc.now(), TickReport(duration_s=0.1))
    app = make_app(svc)
    scrape(app)   # so the scrape histogram has been observed once
    body = scrape(app).get_data(as_text=True)
    exposed, labels = set(), set()
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            exposed.add(s.name)
            labels.update(s.labels)

    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] == "Slipway" and dash["schemaVersion"] >= 36
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "team"}
    ids, exprs = set(), []
    for panel in dash["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat") and panel["datasource"]["type"] == "prometheus"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        exprs += [t["expr"] for t in panel["targets"]]
    exprs.append(dash["templating"]["list"][1]["query"]["query"])
    assert len(exprs) >= 15
    for expr in exprs:
        names = set(re.findall(r"\b((?:slipway|process)_[a-z0-9_]+)", expr))
        assert names, expr
        assert names <= exposed, (expr, names - exposed)
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            used = {x.strip() for x in group.split(",")}
            assert used <= labels | {"le"}, (expr, used - labels)
    # every family of ours appears on the dashboard
    named = " ".join(exprs)
    for family in prom.METRIC_NAMES:
        assert family in named, family
