"""No page view calls Slurm (BRIEF §2): build the app with a backend whose every method raises,
log in as several users and render every GET page and API endpoint."""
from __future__ import annotations

import pytest

from portal.app import create_app
from tests.support.fakes import make_services
from tests.support.web import add_job, login, make_world


class ExplodingBackend:
    """Any attribute access that looks like a Slurm call fails the test loudly."""

    calls: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def boom(*a, **kw):
            ExplodingBackend.calls.append(name)
            raise AssertionError(f"a page view called Slurm: backend.{name}()")

        return boom


@pytest.fixture
def world(tmp_path):
    svc = make_services(tmp_path, backend=ExplodingBackend())
    ids = make_world(svc)
    yield svc, create_app(svc), ids
    svc.db.dispose()


def test_every_get_route_renders_without_slurm(world):
    _svc, app, ids = world
    ExplodingBackend.calls.clear()
    fills = {"team": "nlp", "project": "proj", "job_id": ids["running"]}
    # the workspace routes take a workspace's id (a job of kind workspace), not a task's
    workspace_id = add_job(_svc, ids["proj"], branch="ws-1", state="running", pusher="alice",
                           node="a4k-1", port=18090, kind="workspace")
    extra = ["/jobs?state=active", "/jobs?team=nlp", "/teams/nlp?q=pro", f"/jobs/{ids['pending']}",
             f"/jobs/{ids['succeeded']}", "/api/jobs?team=nlp&state=active",
             f"/api/jobs/{ids['running']}/log?offset=3"]
    for who in ("alice", "carol", "dave"):
        c = app.test_client()
        assert login(c, who).status_code == 302
        seen = 0
        for rule in app.url_map.iter_rules():
            if "GET" not in rule.methods or rule.endpoint in ("static", "proxy.forward"):
                continue
            if set(rule.arguments) - set(fills):
                continue
            f = dict(fills, job_id=workspace_id) if "workspaces/" in rule.rule else fills
            url = rule.build({k: f[k] for k in rule.arguments}, append_unknown=False)[1]
            r = c.get(url)
            allowed = (200, 302, 403) if who == "carol" else (200, 302)  # carol: ledger is admin-only
            if rule.endpoint == "funds.pending" and who != "dave":  # cluster administrators' page
                allowed = (403,)
            if rule.endpoint == "metrics.metrics":   # Prometheus' (a token or an allowed network)
                allowed = (403,)
            if rule.endpoint in ("alarms.index", "monitoring.cluster", "api.cluster") \
                    and who != "dave":   # cluster administrators'
                allowed = (403, 404)
            if rule.endpoint == "policy.show" and who != "dave":  # cluster administrators only: 404
                allowed = (404,)
            if rule.rule in ("/api/emergency-grants", "/api/queue", "/api/resources",
                             "/api/policy-events") and who != "dave":   # administrators' API: 403
                allowed = (403,)
            if rule.rule.endswith("/output/archive"):   # the running job's /output is not kept yet
                allowed = (404, 409)
            assert r.status_code in allowed, (who, url, r.status_code)
            seen += 1
        for url in extra:
            assert c.get(url).status_code == 200, (who, url)
        assert seen >= 18
    assert ExplodingBackend.calls == []
