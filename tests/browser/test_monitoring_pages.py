"""The monitoring pages in Debian's chromium (Playwright): a cluster administrator opens the
cluster dashboard and the usage page, and every plot is drawn by uPlot (a canvas, with the data
points of the JSON the page embeds); a team owner's billing page draws its spending plot the
same way. The data comes from real reconciler ticks over a FakeBackend (samples, charges)."""
from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from portal.jobs.reconciler import Reconciler
from slurm_bridge.records import parse_nodes
from tests.support.fakes import Clock, FakeBackend, make_services
from tests.support.web import add_job, make_world

from .conftest import _wait_port, log_in, shot

SINFO = Path(__file__).resolve().parents[1] / "fixtures" / "slurm" / "sinfo_drained.json"


@pytest.fixture
def site(tmp_path):
    from waitress.server import create_server

    from portal.app import create_app

    backend, clock = FakeBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, storage_interval=10**9)
    ids = make_world(svc)
    backend.node_records = parse_nodes(json.loads(SINFO.read_text()))
    job = add_job(svc, ids["proj"], branch="plot", state="pending", pusher="alice",
                  slurm_job_id=777)
    start = clock()
    backend.set_queue(777, "RUNNING", start=start, gpus={"a4000": 1})
    backend.set_queue(778, "PENDING")            # not Slipway's: the dashboard counts it too
    rec = Reconciler(svc)
    for _ in range(20):                          # 20 minutes of samples and charges
        rec.tick()
        clock.advance(minutes=1)
    backend.finish(777, "COMPLETED", start=start, end=clock(), gpus={"a4000": 1})
    rec.tick()
    app = create_app(svc)
    if "monitoring" not in app.blueprints:       # until the lead registers it in portal/web
        from portal.web.monitoring import bp
        app.register_blueprint(bp)
    server = create_server(app, host="127.0.0.1", port=0, threads=4, ident="slipway-test")
    port = server.effective_port
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    _wait_port("127.0.0.1", port)
    yield svc, f"http://127.0.0.1:{port}", job
    server.close()
    t.join(timeout=5)
    svc.db.dispose()


def embedded(page, script_id: str) -> list[dict]:
    return json.loads(page.locator(f"script#{script_id}").text_content())


def check_drawn(page, script_id: str) -> list[dict]:
    """Every chart of the page's JSON is a uPlot with a canvas and its data points."""
    specs = embedded(page, script_id)
    assert specs
    for spec in specs:
        values = [v for s in spec["series"] for v in s["values"] if v is not None]
        assert spec["x"] and values, spec["id"]
        chart = page.locator(f"#{spec['id']}")
        expect(chart).to_have_attribute("data-drawn", "1")
        expect(chart.locator("canvas")).to_have_count(1)
        assert int(chart.get_attribute("data-points")) == len(values)
        box = chart.locator("canvas").bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100
    return specs


def test_cluster_dashboard_and_usage_plots_have_data_points(site, new_page):
    svc, base, _job = site
    page = new_page(base)
    errors = []
    page.on("pageerror", lambda exc: errors.append(f"{exc} {getattr(exc, 'stack', '')}"))
    page.on("console", lambda m: errors.append(f"{m.text} {m.location}")
            if m.type == "error" and "favicon" not in str(m.location) else None)
    log_in(page, base, "dave")
    page.goto(base + "/admin/cluster?range=hour")
    expect(page.locator("h1")).to_contain_text("Cluster")
    expect(page.locator("#jobs-running")).to_have_text("0")     # the job ended at the last tick
    expect(page.locator("#jobs-pending")).to_have_text("1")
    expect(page.locator("[data-node='a4k-2']")).to_contain_text("fan swap")
    a4000 = page.locator("#cluster-now [data-gpu-type='a4000']")
    expect(a4000.locator(".gpu-alloc")).to_have_text("8")
    specs = check_drawn(page, "cluster-charts")
    jobs = next(s for s in specs if s["id"] == "chart-jobs")
    assert len(jobs["x"]) == 21 and jobs["series"][0]["values"] == [1] * 20 + [0]
    # hover: uPlot's legend shows the values under the cursor
    page.locator("#chart-jobs .u-over").hover()      # scrolled into view, the middle
    expect(page.locator("#chart-jobs .u-legend .u-value").nth(2)).to_have_text("1")  # pending
    shot(page, "monitoring-cluster")
    page.goto(base + "/admin/cluster?range=week")
    check_drawn(page, "cluster-charts")

    page.goto(base + "/usage")
    expect(page.locator("h1")).to_contain_text("the whole cluster")
    usage = check_drawn(page, "usage-charts")
    gpu = next(s for s in usage if s["id"] == "chart-gpu-hours")
    assert sum(v for s in gpu["series"] for v in s["values"]) > 0
    expect(page.locator("#top-projects")).to_contain_text("nlp/proj")
    shot(page, "monitoring-usage")
    with page.expect_download() as dl:
        page.click("#usage-csv")
    text = Path(dl.value.path()).read_text()
    assert text.startswith("period_start,gpu_hours_a4000")
    assert not errors, errors


def test_billing_page_draws_the_spending_plot_with_uplot(site, new_page):
    svc, base, _job = site
    page = new_page(base)
    log_in(page, base, "alice")
    page.goto(base + "/teams/nlp/billing")
    [spec] = check_drawn(page, "spending-charts")
    assert sum(spec["series"][0]["values"]) > 0 and len(spec["x"]) == 60
    assert page.locator("svg.chart").count() == 0
    shot(page, "billing-uplot")
    assert svc.now() - timedelta(minutes=30) < svc.now()
