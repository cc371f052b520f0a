"""The policy routes of the JSON API (portal/api/policy.py, docs/POLICY.md) through Flask's test
client: each reaches the policy service, converges Slurm at once after a change it must see
(InMemoryAccounts), answers 403 to non-administrators, 400 to bad bodies and 404 to unknown
things, and a refused request changes nothing."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from portal.app import create_app
from portal.db import ComputeType, EmergencyGrant, PolicyEvent, Quota
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import make_world


@pytest.fixture
def world(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    yield svc, create_app(svc), ids, backend
    svc.db.dispose()


def call(app, ids, method, url, who="dave", **kw):
    return app.test_client().open(url, method=method,
                                  headers={"Authorization": f"Bearer {ids[who + '_token']}"}, **kw)


def count(svc, model) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_compute_types(world):
    svc, app, ids, backend = world
    r = call(app, ids, "PUT", "/api/compute-types/a4000x2",
             json={"gpus": "a4000:2", "cpus": 8, "mem": "32G", "description": "two"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["compute_type"]["gpus"] == "a4000:2"
    assert [d["name"] for d in call(app, ids, "GET", "/api/compute-types", who="carol")
            .get_json()["compute_types"]] == ["a4000x2"]
    for body, words in [({"gpus": "a4000:2", "gpu": 1}, "unknown field(s) 'gpu'"),
                        ({"cpus": 2}, "gpus is required"), ({"gpus": ["a4000:1"]}, "JSON string"),
                        ({"gpus": "a4000:1", "cpus": "many"}, "whole number")]:
        r = call(app, ids, "PUT", "/api/compute-types/other", json=body)
        assert r.status_code == 400 and words in r.get_json()["error"], (body, r.get_json())
    r = call(app, ids, "PUT", "/api/compute-types/other", who="alice", json={"gpus": "a4000:1"})
    assert r.status_code == 403
    assert call(app, ids, "DELETE", "/api/compute-types/nope").status_code == 404
    assert call(app, ids, "DELETE", "/api/compute-types/a4000x2", who="alice").status_code == 403
    assert count(svc, ComputeType) == 1
    r = call(app, ids, "DELETE", "/api/compute-types/a4000x2")
    assert r.status_code == 200 and r.get_json()["projects"] == [] and count(svc, ComputeType) == 0


def test_quotas_reach_slurm(world):
    svc, app, ids, backend = world
    account = svc.config.slurm_account("nlp")
    r = call(app, ids, "PUT", "/api/teams/nlp/quotas/gpu:a4000", json={"value": 4})
    assert r.status_code == 200 and r.get_json()["warning"] is None, r.get_json()
    assert svc.accounts.limits_of(account).grp_tres == {"gres/gpu:a4000": 4}
    r = call(app, ids, "PUT", "/api/teams/nlp/quotas/jobs", json={"value": "2", "user": "carol"})
    assert r.status_code == 200 and svc.accounts.limits_of(account, "carol").grp_jobs == 2
    rows = call(app, ids, "GET", "/api/teams/nlp/quotas", who="carol").get_json()["quotas"]
    assert {(d["user"], d["resource"], d["value"], d["text"]) for d in rows} == {
        (None, "gpu:a4000", 4, "4 a4000 GPUs"), ("carol", "jobs", 2, "2 running jobs")}
    assert call(app, ids, "GET", "/api/teams/nlp/quotas", who="mallory").status_code == 404
    before = (count(svc, Quota), count(svc, PolicyEvent), svc.accounts.calls)
    for body, status in [({"value": -1}, 400), ({"value": 10**9}, 400), ({"value": 1.5}, 400),
                         ({}, 400), ({"value": 1, "scope": "x"}, 400),
                         ({"value": 1, "user": "mallory"}, 400)]:
        r = call(app, ids, "PUT", "/api/teams/nlp/quotas/cpu", json=body)
        assert r.status_code == status, (body, r.get_json())
    assert call(app, ids, "PUT", "/api/teams/nlp/quotas/disks", json={"value": 1}).status_code == 400
    assert call(app, ids, "PUT", "/api/teams/nope/quotas/cpu", json={"value": 1}).status_code == 404
    assert call(app, ids, "PUT", "/api/teams/nlp/quotas/cpu", who="carol",
                json={"value": 1}).status_code == 403
    assert (count(svc, Quota), count(svc, PolicyEvent), svc.accounts.calls) == before
    r = call(app, ids, "DELETE", "/api/teams/nlp/quotas/gpu:a4000")
    assert r.status_code == 200 and svc.accounts.limits_of(account).grp_tres == {}


def test_emergency_grants_reach_slurm(world):
    svc, app, ids, backend = world
    assoc = ("alice", svc.config.slurm_account("nlp"))
    r = call(app, ids, "POST", "/api/emergency-grants",
             json={"who": "alice", "until": "2099-01-31", "note": "deadline"})
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["grant"]["who"] == "alice"
    assert "emergency" in svc.accounts.current.assocs[assoc].qos
    assert [g["who"] for g in call(app, ids, "GET", "/api/emergency-grants").get_json()["grants"]] == ["alice"]
    before = count(svc, EmergencyGrant)
    for body, status in [({"who": "bob", "until": "2001-01-01"}, 400), ({"who": "bob", "until": "x"}, 400),
                         ({"who": "bob", "team": "yes"}, 400), ({}, 400), ({"who": "zed"}, 404)]:
        r = call(app, ids, "POST", "/api/emergency-grants", json=body)
        assert r.status_code == status, (body, r.get_json())
    assert call(app, ids, "POST", "/api/emergency-grants", who="alice",
                json={"who": "alice"}).status_code == 403
    assert call(app, ids, "GET", "/api/emergency-grants", who="alice").status_code == 403
    assert count(svc, EmergencyGrant) == before
    r = call(app, ids, "POST", "/api/emergency-grants/revoke", json={"who": "alice"})
    assert r.status_code == 200 and r.get_json()["revoked"] == 1
    assert "emergency" not in svc.accounts.current.assocs[assoc].qos
    assert call(app, ids, "POST", "/api/emergency-grants/revoke", json={"who": "alice"}).status_code == 404


def test_shares(world):
    svc, app, ids, backend = world
    r = call(app, ids, "PUT", "/api/teams/vision/shares", json={"shares": 40})
    assert r.status_code == 200 and r.get_json()["shares"]["shares"] == 40
    assert svc.accounts.current.accounts[svc.config.slurm_account("vision")].fairshare == "40"
    assert call(app, ids, "GET", "/api/teams/vision/shares", who="mallory").get_json()["shares"]["shares"] == 40
    assert call(app, ids, "PUT", "/api/teams/vision/shares", who="mallory",
                json={"shares": 400}).status_code == 403
    assert call(app, ids, "PUT", "/api/teams/vision/shares", json={"shares": 0}).status_code == 400


def test_queue_nodes_resources_log(world):
    svc, app, ids, backend = world
    backend.set_queue(1002, "PENDING")
    rows = call(app, ids, "GET", "/api/queue?team=nlp").get_json()["queue"]
    assert [d["job"] for d in rows] == [ids["running"], ids["pending"]]
    assert call(app, ids, "GET", "/api/queue", who="alice").status_code == 403
    r = call(app, ids, "POST", f"/api/queue/{ids['pending']}/top")
    assert r.status_code == 200 and "moved to the front" in r.get_json()["message"]
    assert call(app, ids, "POST", f"/api/queue/{ids['pending']}/hold", who="alice").status_code == 403
    assert call(app, ids, "POST", f"/api/queue/{ids['pending']}/smash").status_code == 404
    assert call(app, ids, "POST", "/api/queue/999/hold").status_code == 404
    assert call(app, ids, "POST", f"/api/queue/{ids['pending']}/requeue").status_code == 409
    assert backend.holds == [] and backend.requeues == []
    r = call(app, ids, "POST", "/api/nodes/a4k-1/drain", json={})
    assert r.status_code == 400 and "say why" in r.get_json()["error"]
    assert call(app, ids, "POST", "/api/nodes/a4k-1/drain", who="alice",
                json={"reason": "x"}).status_code == 403
    assert backend.node_updates == []
    r = call(app, ids, "POST", "/api/nodes/a4k-1/drain", json={"reason": "fan"})
    assert r.status_code == 200 and backend.node_updates == [("a4k-1", "drain", "fan")]
    assert call(app, ids, "POST", "/api/nodes/a4k-1/reboot").status_code == 404
    assert call(app, ids, "POST", "/api/nodes/query").get_json()["nodes"] == []
    assert call(app, ids, "POST", "/api/nodes/query", who="alice").status_code == 403
    assert call(app, ids, "GET", "/api/resources").get_json()["rows"] == []
    assert call(app, ids, "GET", "/api/resources", who="alice").status_code == 403
    events = call(app, ids, "GET", "/api/policy-events").get_json()["events"]
    assert [e["action"] for e in events] == ["drain", "top"]
    assert [e["action"] for e in call(app, ids, "GET", "/api/policy-events?action=top")
            .get_json()["events"]] == ["top"]
    assert call(app, ids, "GET", "/api/policy-events", who="alice").status_code == 403
    assert call(app, ids, "GET", "/api/policy-events?limit=x").status_code == 400


def test_no_token_no_policy(world):
    svc, app, ids, backend = world
    assert app.test_client().get("/api/compute-types").status_code == 401
