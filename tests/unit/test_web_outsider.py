"""OUTSIDER WALK: every route of the app (``app.url_map``), path parameters filled with another
team's objects, every method — nothing may leak or change.

* a logged-in outsider (mallory, owner of team ``vision``) gets 404 on every route naming nlp's
  objects (existence is not revealed), and routes without objects show nothing of nlp;
* the same with mallory's access token on the API;
* anonymous visitors are sent to the login page (pages) or get 401 (API);
* afterwards nlp's balance, members, project, tokens and jobs are unchanged and Slurm was not
  asked to cancel anything.

A route with a path parameter this walk does not know fails the test: extend ``FILL``.
"""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from portal.billing import ledger as billing, funds
from portal.app import create_app
from portal.db import (AccessToken, DataRepo, DataShare, DataUpload, DataVersion, Job, Membership,
                       Project, Team, User)
from portal.db.funds_models import FundRequest
from portal.teams import access
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import csrf_token, login, make_world

PUBLIC = {"static", "auth.login", "auth.logout", "pages.healthz"}
# /metrics answers Prometheus (a token or an allowed network), never a session: 401/403
INTERNAL = {"internal.hooks", "internal.job_events", "metrics.metrics"}
# cluster administrators' API (nothing of team nlp behind it): refused before any input is read
ADMIN_API = {"api.define_compute_type", "api.remove_compute_type", "api.job_action",
             "api.node_update", "api.accept_gpus", "alarms.accept_gpus"}
# things of team nlp that must never show up for an outsider (error messages may echo the
# names the outsider typed in the URL, nothing else)
LEAKS = ("epoch 1 loss", "exp-1", "carol", "24.25", "proj.git", "pw-", "Resources", "NLP-FUND-NOTE",
         "NLP-DATA-CONTENT")


@pytest.fixture
def world(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    with svc.db.session() as s:
        ids["alice_token_id"] = s.scalar(select(AccessToken.id).join(User).where(User.name == "alice"))
        alice = access.Actor(id=s.scalar(select(User.id).where(User.name == "alice")), name="alice")
    ids["fund_request"] = funds.request_funds(svc, alice, "nlp", "30", "NLP-FUND-NOTE").id
    ids.update(data_world(svc, alice))
    app = create_app(svc)
    yield svc, app, ids, backend
    svc.db.dispose()


def data_world(svc, alice) -> dict:
    """Team nlp's private dataset (one version) and an open upload of alice's."""
    import hashlib
    import io

    from portal.data import repos, uploads
    data = b"NLP-DATA-CONTENT"
    sha = hashlib.sha256(data).hexdigest()
    repos.create_repo(svc, alice, "nlp", "secret-data", "dataset")
    up = uploads.start_upload(svc, alice, "nlp", "secret-data",
                              [{"path": "nlp-data.txt", "size": len(data), "sha256": sha}])
    uploads.receive_chunk(svc, alice, up["upload"], sha, 0, io.BytesIO(data), len(data))
    uploads.commit_upload(svc, alice, up["upload"])
    other = b"more"
    osha = hashlib.sha256(other).hexdigest()
    up2 = uploads.start_upload(svc, alice, "nlp", "secret-data",
                               [{"path": "b.txt", "size": len(other), "sha256": osha}])
    return {"upload_id": up2["upload"], "sha256": osha}


def fill(rule, ids) -> str:
    values = {}
    for arg in rule.arguments:
        FILL = {"team": "nlp", "project": "proj", "job_id": ids["running"], "index": "1",
                "token_id": ids["alice_token_id"], "username": "alice", "rest": "x/y",
                "filename": "slipway.css", "request_id": ids["fund_request"], "action": "approve",
                "name": "secret-data", "version": "1", "path": "nlp-data.txt",
                "relpath": "nlp-data.txt", "other": "nlp", "upload_id": ids["upload_id"],
                "sha256": ids["sha256"], "resource": "gpu:a4000", "node": "a4k-1",
                "state": "drain"}
        if arg not in FILL:
            raise AssertionError(f"route {rule.rule} has a parameter {arg!r} the outsider walk does not "
                                 "know; add it to FILL in tests/unit/test_web_outsider.py")
        values[arg] = FILL[arg]
    return rule.build(values, append_unknown=False)[1]


def routes(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def snapshot(svc, ids):
    with svc.db.session() as s:
        nlp = s.scalar(select(Team).where(Team.name == "nlp"))
        return {
            "balance": billing.balance(s, nlp.id),
            "members": sorted(s.execute(select(Membership.user_id, Membership.role)
                                        .where(Membership.team_id == nlp.id)).all()),
            "projects": sorted(s.scalars(select(Project.name).where(Project.team_id == nlp.id))),
            "project": s.execute(select(Project.gpu_type, Project.gpu_count, Project.image,
                                        Project.time_limit_min).where(Project.id == ids["proj"])).one(),
            "jobs": sorted(s.execute(select(Job.id, Job.state, Job.cancel_requested_at)
                                     .where(Job.project_id == ids["proj"])).all()),
            "alice_tokens": s.scalar(select(func.count()).select_from(AccessToken).join(User).where(
                User.name == "alice", AccessToken.revoked_at.is_(None))),
            "fund_requests": sorted(s.execute(select(FundRequest.id, FundRequest.state)
                                              .where(FundRequest.team_id == nlp.id)).all()),
            "data": sorted(s.execute(select(DataRepo.name, DataRepo.public, DataVersion.number)
                                     .join(DataVersion, DataVersion.repo_id == DataRepo.id)).all()),
            "shares": s.scalar(select(func.count()).select_from(DataShare)),
            "uploads": sorted(s.execute(select(DataUpload.id, DataUpload.state)).all()),
            "quota": nlp.storage_quota_bytes,
            "outputs": sorted(s.execute(select(Job.id, Job.output_state)).all()),
        }


def send(client, method, url, token=None, bearer=None):
    headers = {}
    data = {"csrf_token": token} if token else {}
    if token:
        headers["X-CSRFToken"] = token
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    body = {"amount": "5", "name": "x", "confirm": "nlp/proj", "username": "mallory",
            "role": "owner", "gpu_count": "1"}
    if url.startswith("/api/"):
        return client.open(url, method=method, json=body, headers=headers)
    return client.open(url, method=method, data={**body, **data}, headers=headers)


def test_outsider_walk_logged_in(world):
    svc, app, ids, backend = world
    before = snapshot(svc, ids)
    c = app.test_client()
    assert login(c, "mallory").status_code == 302
    tok = csrf_token(c)
    walked = 0
    for rule, method in routes(app):
        if rule.endpoint in PUBLIC:
            continue
        url = fill(rule, ids)
        r = send(c, method, url, token=tok)
        body = r.get_data(as_text=True)
        walked += 1
        if rule.endpoint in INTERNAL:
            assert r.status_code in (401, 403), (method, url, r.status_code)
        elif rule.endpoint in ADMIN_API:
            assert r.status_code in (403, 404), (method, url, r.status_code)
        elif rule.arguments:
            assert r.status_code == 404, (method, url, r.status_code, body[:300])
        else:
            assert r.status_code < 500, (method, url, r.status_code)
            assert "nlp" not in body, (method, url)
        for leak in LEAKS:
            assert leak not in body, (method, url, leak)
    assert walked > 40
    # object filters in query strings
    for url in ["/jobs?team=nlp", "/api/jobs?team=nlp", "/api/jobs?team=nlp&project=proj"]:
        assert c.get(url).status_code == 404, url
    for url in ["/jobs", "/api/jobs", "/api/teams", "/"]:
        body = c.get(url).get_data(as_text=True)
        assert "nlp" not in body and "exp-1" not in body, url
    assert snapshot(svc, ids) == before
    assert backend.cancels == [] and backend.jobs_calls == 0


def test_outsider_walk_with_access_token(world):
    svc, app, ids, backend = world
    before = snapshot(svc, ids)
    c = app.test_client()
    n = 0
    for rule, method in routes(app):
        if not rule.rule.startswith("/api/"):
            continue
        url = fill(rule, ids)
        r = send(c, method, url, bearer=ids["mallory_token"])
        if rule.endpoint in ADMIN_API:
            assert r.status_code in (403, 404), (method, url, r.status_code)
        elif rule.arguments:
            assert r.status_code == 404, (method, url, r.status_code)
            assert r.get_json()["ok"] is False and r.get_json()["error"]
        for leak in LEAKS:
            assert leak not in r.get_data(as_text=True), (method, url, leak)
        n += 1
    assert n >= 15
    assert snapshot(svc, ids) == before and backend.cancels == []


def test_anonymous_walk(world):
    svc, app, ids, backend = world
    before = snapshot(svc, ids)
    c = app.test_client()
    tok = csrf_token(c)
    for rule, method in routes(app):
        if rule.endpoint in PUBLIC:
            continue
        url = fill(rule, ids)
        r = send(c, method, url, token=tok)
        if rule.endpoint in INTERNAL:
            assert r.status_code in (401, 403), (method, url, r.status_code)
        elif url.startswith("/api/") or rule.endpoint.startswith("data_upload."):
            # JSON endpoints (the API, the browser's upload calls) answer 401, never a redirect
            assert r.status_code == 401, (method, url, r.status_code)
        else:
            assert r.status_code == 302 and "/login" in r.headers["Location"], (method, url, r.status_code)
        for leak in LEAKS:
            assert leak not in r.get_data(as_text=True), (method, url, leak)
    # bad bearer tokens
    for bad in ("swp_nope-nope-nope", ids["alice_token"][:-2] + "xx", ""):
        r = c.get("/api/teams", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401
    assert snapshot(svc, ids) == before and backend.cancels == []


def test_member_without_role_gets_403_on_admin_routes(world):
    svc, app, ids, backend = world
    before = snapshot(svc, ids)
    c = app.test_client()
    login(c, "carol")   # role user in nlp
    tok = csrf_token(c)
    admin_only = [
        ("POST", "/teams/nlp/billing/funds"), ("GET", "/teams/nlp/ledger.csv"),
        ("POST", "/teams/nlp/members"), ("POST", "/teams/nlp/members/alice/remove"),
        ("POST", "/teams/nlp/delete"), ("POST", "/projects/nlp/proj/delete"),
        ("POST", "/teams/nlp/projects"),
        ("GET", "/api/teams/nlp/ledger"), ("POST", "/api/teams/nlp/funds"),
        ("DELETE", "/api/projects/nlp/proj"), ("POST", "/api/teams/nlp/projects"),
    ]
    for method, url in admin_only:
        r = send(c, method, url, token=tok)
        assert r.status_code == 403, (method, url, r.status_code)
    assert snapshot(svc, ids) == before and backend.cancels == []
