"""The JSON API under /api/ with bearer tokens (and session auth for the page's JS)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.app import create_app
from portal.db import Project
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import make_world


@pytest.fixture
def api(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    app = create_app(svc)
    c = app.test_client()

    def call(method, url, who="alice", **kw):
        headers = kw.pop("headers", {})
        if who:
            headers["Authorization"] = f"Bearer {ids[who + '_token']}"
        return c.open(url, method=method, headers=headers, **kw)

    yield svc, ids, call, backend
    svc.db.dispose()


def test_teams_and_team(api):
    _svc, _ids, call, _ = api
    r = call("GET", "/api/teams")
    assert r.status_code == 200
    teams = r.get_json()["teams"]
    assert [t["name"] for t in teams] == ["nlp"] and teams[0]["balance"] == "24.250000"
    assert teams[0]["role"] == "owner" and teams[0]["projects"] == 1
    t = call("GET", "/api/teams/nlp").get_json()["team"]
    assert {m["user"]: m["role"] for m in t["members"]} == {"alice": "owner", "bob": "administrator", "carol": "user"}
    r = call("GET", "/api/teams/vision")
    assert r.status_code == 404 and r.get_json() == {"ok": False, "error": "there is no team 'vision'"}


def test_ledger_and_funds_roles(api):
    _svc, _ids, call, _ = api
    r = call("GET", "/api/teams/nlp/ledger")
    assert r.status_code == 200 and len(r.get_json()["entries"]) == 3
    assert call("GET", "/api/teams/nlp/ledger", who="carol").status_code == 403
    r = call("POST", "/api/teams/nlp/funds", who="carol", json={"amount": "5"})
    assert r.status_code == 403 and "request funds" in r.get_json()["error"]
    r = call("POST", "/api/teams/nlp/funds", json={"amount": "5.25", "note": "x"})  # alice: owner
    assert r.status_code == 403 and "only cluster administrators add funds" in r.get_json()["error"]
    r = call("POST", "/api/teams/nlp/funds", who="dave", json={"amount": "5.25", "note": "x"})
    assert r.status_code == 201 and r.get_json()["balance"] == "29.500000"
    r = call("POST", "/api/teams/nlp/funds", who="dave", json={"amount": "-3"})
    assert r.status_code == 400 and r.get_json()["error"]
    r = call("POST", "/api/teams/nlp/funds", who="dave", data="nope", content_type="application/json")
    assert r.status_code == 400


def test_projects_create_get_patch_delete(api):
    svc, _ids, call, _ = api
    r = call("GET", "/api/teams/nlp/projects")
    assert [p["name"] for p in r.get_json()["projects"]] == ["proj"]
    assert r.get_json()["projects"][0]["jobs"] == 3
    r = call("POST", "/api/teams/nlp/projects", who="carol",   # a plain user: administrators create
             json={"name": "api-one", "gpus": "a6000:2", "image": "python", "time": "2h"})
    assert r.status_code == 403 and "needs role: administrator or owner" in r.get_json()["error"]
    r = call("POST", "/api/teams/nlp/projects",
             json={"name": "api-one", "gpus": "a6000:2", "image": "python", "time": "2h"})
    assert r.status_code == 201, r.get_json()
    p = r.get_json()["project"]
    assert (p["gpu_type"], p["gpu_count"], p["time_limit_min"]) == ("a6000", 2, 120)
    assert p["remote_url"].endswith("/git/nlp/api-one.git")
    r = call("POST", "/api/teams/nlp/projects", json={"name": "api-one"})
    assert r.status_code == 409
    r = call("POST", "/api/teams/nlp/projects", json={"name": "bad", "gpus": "a6000:9"})
    assert r.status_code == 400 and "a6000" in r.get_json()["error"]
    r = call("GET", "/api/projects/nlp/api-one")
    assert r.status_code == 200 and r.get_json()["project"]["storage_bytes"] > 0
    r = call("PATCH", "/api/projects/nlp/api-one", json={"gpu_count": 1, "image": "nope"})
    assert r.status_code == 400 and "unknown image" in r.get_json()["error"]
    r = call("PATCH", "/api/projects/nlp/api-one", json={"gpu_count": 1, "time_limit_min": 45})
    assert r.status_code == 200
    assert (r.get_json()["project"]["gpu_count"], r.get_json()["project"]["time_limit_min"]) == (1, 45)
    assert call("DELETE", "/api/projects/nlp/api-one", who="carol", json={"confirm": "nlp/api-one"}).status_code == 403
    r = call("DELETE", "/api/projects/nlp/api-one", json={"confirm": "api-one"})
    assert r.status_code == 400 and "exactly" in r.get_json()["error"]
    r = call("DELETE", "/api/projects/nlp/api-one", json={"confirm": "nlp/api-one"})
    assert r.status_code == 200
    with svc.db.session() as s:
        assert s.scalar(select(Project).where(Project.name == "api-one")) is None


def test_jobs_list_show_cancel_log(api):
    _svc, ids, call, backend = api
    r = call("GET", "/api/jobs")
    assert [j["id"] for j in r.get_json()["jobs"]] == sorted(
        [ids["running"], ids["pending"], ids["succeeded"]], reverse=True)
    r = call("GET", "/api/jobs?team=nlp&state=active")
    assert {j["state"] for j in r.get_json()["jobs"]} == {"running", "pending"}
    r = call("GET", "/api/jobs?state=bogus")
    assert r.status_code == 400 and "unknown state" in r.get_json()["error"]
    r = call("GET", "/api/jobs?limit=1")
    assert len(r.get_json()["jobs"]) == 1 and r.get_json()["next_before"] == ids["succeeded"]
    r = call("GET", f"/api/jobs?limit=1&before={r.get_json()['next_before']}")
    assert r.get_json()["jobs"][0]["id"] == ids["pending"]
    j = call("GET", f"/api/jobs/{ids['running']}").get_json()["job"]
    assert j["state"] == "running" and j["node"] == "a4k-1" and j["proxy_url"] == f"/jobs/{ids['running']}/proxy/"
    r = call("GET", f"/api/jobs/{ids['running']}/log?offset=8")
    assert r.get_json()["data"].startswith("loss 0.93")
    assert call("GET", f"/api/jobs/{ids['pending']}", who="carol").get_json()["job"]["can_cancel"] is True
    r = call("POST", f"/api/jobs/{ids['pending']}/cancel", who="carol")   # a member; alice pushed it
    assert r.status_code == 200 and backend.cancels == [(1002, None, False)]
    assert call("POST", f"/api/jobs/{ids['pending']}/cancel", who="mallory").status_code == 404
    r = call("POST", f"/api/jobs/{ids['succeeded']}/cancel")
    assert r.status_code == 409 and "already ended" in r.get_json()["error"]
    assert call("GET", "/api/jobs/999999").status_code == 404


def test_tokens(api):
    _svc, _ids, call, _ = api
    r = call("POST", "/api/tokens", json={"name": "ci"})
    assert r.status_code == 201
    new = r.get_json()
    assert new["token"].startswith("swp_")
    listed = call("GET", "/api/tokens").get_json()["tokens"]
    assert {t["name"] for t in listed} == {"cli", "ci"} and all("token" not in t for t in listed)
    assert call("DELETE", f"/api/tokens/{new['id']}").status_code == 200
    r = call("GET", "/api/teams", who=None, headers={"Authorization": f"Bearer {new['token']}"})
    assert r.status_code == 401


def test_basic_auth_and_errors(api):
    import base64

    _svc, ids, call, _ = api
    cred = base64.b64encode(f"alice:{ids['alice_token']}".encode()).decode()
    assert call("GET", "/api/teams", who=None, headers={"Authorization": f"Basic {cred}"}).status_code == 200
    cred = base64.b64encode(f"bob:{ids['alice_token']}".encode()).decode()
    assert call("GET", "/api/teams", who=None, headers={"Authorization": f"Basic {cred}"}).status_code == 401
    r = call("GET", "/api/nothing-here")
    assert r.status_code == 404 and r.get_json()["ok"] is False
    r = call("PUT", "/api/teams")
    assert r.status_code == 405 and r.get_json()["ok"] is False


def test_cluster_admin_api(api):
    _svc, ids, call, _ = api
    assert call("GET", "/api/teams/vision", who="dave").status_code == 200
    ids_seen = {j["id"] for j in call("GET", "/api/jobs", who="dave").get_json()["jobs"]}
    assert ids["vision_job"] in ids_seen and ids["running"] in ids_seen
