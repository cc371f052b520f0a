"""The policy on the web pages (docs/POLICY.md): the cluster administrators' /admin/policy page
(resource plan, compute types, quotas, emergency grants, the policy record) and its forms; the
team page's shares and quotas; the job page's queue position, worded reason, expected start,
compute type, QOS, asked/got and preemptions; the emergency checkbox of "Run again" (web and
API); a project's default compute type through the form, the API and ``slipway project set``."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.app import create_app
from portal.cli import Ctx, main
from portal.db import ComputeType, EmergencyGrant, Job, PolicyEvent, Project, Quota, \
    ReconcilerState, Team
from portal.policy import compute, grants, quotas, resources
from portal.teams.access import Actor
from tests.support.fakes import FakeBackend, commit_to_bare, git, make_services
from tests.support.web import csrf_token, login, make_world

EP = {"slipway-entrypoint.sh": "echo hi\n"}
PARTITIONS = [
    {"name": "train", "nodes": ["a4k-1", "a6k-1"], "default": True, "max_time_min": None,
     "state": "UP", "allow_accounts": None, "allow_qos": None, "oversubscribe": "NO",
     "cpus": 64, "gpus": {"a4000": 8, "a6000": 2}},
    {"name": "dev", "nodes": ["a6k-1"], "default": False, "max_time_min": 120, "state": "UP",
     "allow_accounts": None, "allow_qos": None, "oversubscribe": "NO", "cpus": 32,
     "gpus": {"shard": 8}},
]


@pytest.fixture
def world(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    bare = svc.config.repos_root / "nlp" / "proj.git"   # the succeeded job's branch, runnable
    tip = commit_to_bare(bare, tmp_path / "w", EP, branch="exp-0")
    git("--git-dir", str(bare), "update-ref", "refs/heads/exp-0", tip)
    with svc.db.transaction() as s:   # Slurm's partitions as the reconciler last sampled them
        s.add(ReconcilerState(key=resources.KEY, value=json.dumps(
            {"at": svc.now().isoformat(), "partitions": PARTITIONS})))
    yield svc, create_app(svc), ids, backend
    svc.db.dispose()



def dave(svc) -> Actor:
    with svc.db.session() as s:
        from portal.db import User
        return Actor(s.scalar(select(User.id).where(User.name == "dave")), "dave", True)


def client(app, who: str):
    c = app.test_client()
    assert login(c, who).status_code == 302
    return c, csrf_token(c)


def text(r) -> str:
    return r.get_data(as_text=True)


def events(svc, action: str) -> list[PolicyEvent]:
    with svc.db.session() as s:
        return list(s.scalars(select(PolicyEvent).where(PolicyEvent.action == action)
                              .order_by(PolicyEvent.id)))


def quota_rows(svc) -> list[tuple]:
    with svc.db.session() as s:
        return [(q.team_id, q.user_id, q.resource, q.value) for q in s.scalars(select(Quota))]


# --------------------------------------------------------------------------- /admin/policy

def test_admin_page_shows_every_table(world):
    svc, app, ids, _ = world
    me = dave(svc)
    compute.define(svc, me, "a4000x2", gpus="a4000:2", cpus=8, mem="32G", description="two GPUs")
    quotas.set_quota(svc, me, team="vision", resource="gpu:a4000", value=4)
    quotas.set_quota(svc, me, team="nlp", user="carol", resource="jobs", value=2)
    grants.grant(svc, me, "alice", until="2099-01-31", note="paper deadline")
    c, _ = client(app, "dave")
    page = text(c.get("/admin/policy"))
    assert 'id="nav-policy"' in page
    plan = page[page.index('id="resource-plan"'):page.index('id="compute-types"')]
    assert 'data-group="train" data-gpu-type="a4000"' in plan and "whole GPUs" in plan
    assert 'data-group="dev" data-gpu-type="shard"' in plan and "shared (shards, no isolation)" in plan
    assert "120 min" in plan and "vision: 4 a4000 GPUs" in plan and "all teams" in plan
    types = page[page.index('id="compute-types"'):page.index('id="quotas"')]
    assert 'data-compute-type="a4000x2"' in types and "a4000:2" in types and "32768M" in types
    assert "two GPUs" in types
    q = page[page.index('id="quotas"'):page.index('id="emergency-grants"')]
    assert 'data-quota="vision//gpu:a4000"' in q and "4 a4000 GPUs" in q
    assert 'data-quota="nlp/carol/jobs"' in q and "2 running jobs" in q
    g = page[page.index('id="emergency-grants"'):page.index('id="policy-record"')]
    assert "alice" in g and "paper deadline" in g and "2099-02-01" in g and "Revoke" in g
    record = page[page.index('id="policy-record"'):]
    for action, subject in (("compute-type", "a4000x2"), ("quota", "team vision"),
                            ("quota", "carol in team nlp"), ("grant", "alice")):
        assert f"<td>{action}</td><td>{subject}</td>" in record
    only = text(c.get("/admin/policy?action=grant"))
    only = only[only.index('id="policy-record"'):]
    assert "<td>grant</td>" in only and "<td>quota</td>" not in only


def test_non_admins_get_404_and_change_nothing(world):
    svc, app, ids, _ = world
    c, tok = client(app, "alice")   # a team owner, not a cluster administrator
    assert 'id="nav-policy"' not in text(c.get("/"))
    assert c.get("/admin/policy").status_code == 404
    posts = {"/admin/policy/compute-types": {"name": "x1", "gpus": "a4000:1"},
             "/admin/policy/compute-types/x1/remove": {},
             "/admin/policy/quotas": {"team": "nlp", "resource": "jobs", "value": "9"},
             "/admin/policy/grants": {"who": "alice", "kind": "user"},
             "/admin/policy/grants/revoke": {"who": "alice", "kind": "user"}}
    for url, data in posts.items():
        assert c.post(url, data=dict(data, csrf_token=tok)).status_code == 404, url
    with svc.db.session() as s:
        assert s.scalars(select(ComputeType)).all() == []
        assert s.scalars(select(EmergencyGrant)).all() == []
        assert s.scalars(select(PolicyEvent)).all() == []
    assert quota_rows(svc) == []
    assert app.test_client().get("/admin/policy").status_code == 302   # not logged in: log in


def test_compute_type_forms(world):
    svc, app, ids, _ = world
    c, tok = client(app, "dave")
    r = c.post("/admin/policy/compute-types", data={
        "csrf_token": tok, "name": "cpu4", "gpus": "none", "cpus": "4", "mem": "8G",
        "partition": "", "description": "CPU only"})
    assert r.status_code == 302
    page = text(c.get(r.headers["Location"]))
    assert "Compute type cpu4 saved" in page and 'data-compute-type="cpu4"' in page
    with svc.db.session() as s:
        ct = s.scalar(select(ComputeType).where(ComputeType.name == "cpu4"))
        assert (ct.gpu_type, ct.gpu_count, ct.mem_mb, ct.description) == ("cpu", 4, 8192, "CPU only")
    [ev] = events(svc, "compute-type")
    assert ev.actor == "dave" and ev.subject == "cpu4" and ev.detail.startswith("defined")
    # refused: the message on the page, the typed values kept, nothing saved
    r = c.post("/admin/policy/compute-types", data={"csrf_token": tok, "name": "Bad Name",
                                                      "gpus": "a4000:1"})
    assert r.status_code == 400
    assert 'id="policy-error"' in text(r) and "is not allowed" in text(r)
    assert 'value="Bad Name"' in text(r)
    r = c.post("/admin/policy/compute-types", data={"csrf_token": tok, "name": "huge",
                                                      "gpus": "a4000:99"})
    assert r.status_code == 400 and "a4000" in text(r)
    with svc.db.session() as s:
        assert s.scalars(select(ComputeType.name)).all() == ["cpu4"]
    # removing it: projects that used it fall back to their own settings
    with svc.db.transaction() as s:
        s.get(Project, ids["proj"]).compute_type = "cpu4"
    r = c.post("/admin/policy/compute-types/cpu4/remove", data={"csrf_token": tok},
               follow_redirects=True)
    assert r.status_code == 200 and "Compute type cpu4 removed" in text(r) and "nlp/proj" in text(r)
    with svc.db.session() as s:
        assert s.scalars(select(ComputeType)).all() == []
        assert s.get(Project, ids["proj"]).compute_type is None
    assert [e.detail for e in events(svc, "compute-type")] == [ev.detail, "removed"]
    r = c.post("/admin/policy/compute-types/cpu4/remove", data={"csrf_token": tok})
    assert r.status_code == 404 and "unknown compute type" in text(r)
    # CSRF: a post without the token changes nothing
    assert c.post("/admin/policy/compute-types", data={"name": "x", "gpus": "none"}).status_code == 400


def test_quota_form_sets_and_removes_and_reaches_slurm(world):
    svc, app, ids, _ = world
    c, tok = client(app, "dave")
    r = c.post("/admin/policy/quotas", data={"csrf_token": tok, "team": "vision", "user": "",
                                             "resource": "gpu:a4000", "value": "4"},
               follow_redirects=True)
    assert r.status_code == 200
    assert "Quota saved (team vision: at most 4 a4000 GPUs); Slurm has it now." in text(r)
    assert quota_rows(svc) == [(ids["vision"], None, "gpu:a4000", 4)]
    account = svc.config.slurm_account("vision")
    assert dict(svc.accounts.limits_of(account).grp_tres) == {"gres/gpu:a4000": 4}
    [ev] = events(svc, "quota")
    assert (ev.actor, ev.subject, ev.detail) == ("dave", "team vision", "gpu:a4000: 4 a4000 GPUs")
    # a user's quota inside a team; Slurm down: saved, and said so
    svc.accounts.error = RuntimeError("slurmdbd is down")
    r = c.post("/admin/policy/quotas", data={"csrf_token": tok, "team": "nlp", "user": "carol",
                                             "resource": "jobs", "value": "2"},
               follow_redirects=True)
    assert "saved; Slurm gets it at the next account sync" in text(r)
    assert (ids["nlp"], ids["carol"], "jobs", 2) in quota_rows(svc)
    svc.accounts.error = None
    # refused: a negative value, an unknown resource, a user outside the team
    for data, words in (({"team": "nlp", "resource": "jobs", "value": "-1"}, "between 0 and"),
                        ({"team": "nlp", "resource": "gpu:h100", "value": "1"}, "unknown GPU type"),
                        ({"team": "nlp", "user": "mallory", "resource": "jobs", "value": "1"},
                         "mallory is not a member of team nlp")):
        r = c.post("/admin/policy/quotas", data=dict(data, csrf_token=tok))
        assert r.status_code == 400 and words in text(r), (data, text(r)[:200])
    r = c.post("/admin/policy/quotas", data={"csrf_token": tok, "team": "nope",
                                             "resource": "jobs", "value": "1"})
    assert r.status_code == 404 and "there is no team" in text(r)
    assert len(quota_rows(svc)) == 2
    # the row's Remove button
    page = text(c.get("/admin/policy"))
    assert 'data-quota="vision//gpu:a4000"' in page
    r = c.post("/admin/policy/quotas", data={"csrf_token": tok, "team": "vision", "user": "",
                                             "resource": "gpu:a4000", "value": "none"},
               follow_redirects=True)
    assert "team vision: no gpu:a4000 quota" in text(r)
    assert quota_rows(svc) == [(ids["nlp"], ids["carol"], "jobs", 2)]
    assert dict(svc.accounts.limits_of(account).grp_tres) == {}
    assert events(svc, "quota")[-1].detail == "gpu:a4000: no quota"


def test_grant_and_revoke_forms(world):
    svc, app, ids, _ = world
    c, tok = client(app, "dave")
    r = c.post("/admin/policy/grants", data={"csrf_token": tok, "kind": "user", "who": "carol",
                                             "until": "2099-01-31", "note": "deadline"},
               follow_redirects=True)
    assert r.status_code == 200
    assert "Emergency right granted to carol through 2099-01-31 (UTC); Slurm has it now." in text(r)
    with svc.db.session() as s:
        [g] = s.scalars(select(EmergencyGrant)).all()
        assert g.user_id == ids["carol"] and g.granted_by == "dave" and g.note == "deadline"
        assert g.until == datetime(2099, 2, 1, tzinfo=timezone.utc) and g.revoked_at is None
    # the account sync gave carol's associations the emergency QOS
    assert any("emergency" in a.qos for (user, _), a in svc.accounts.current.assocs.items()
               if user == "carol")
    r = c.post("/admin/policy/grants", data={"csrf_token": tok, "kind": "team", "who": "vision",
                                             "until": ""}, follow_redirects=True)
    assert "Emergency right granted to team vision until revoked" in text(r)
    page = text(c.get("/admin/policy"))
    assert 'name="who" value="vision"><input type="hidden" name="kind" value="team"' in page
    # refused: a date in the past, an unknown user
    r = c.post("/admin/policy/grants", data={"csrf_token": tok, "kind": "user", "who": "carol",
                                             "until": "2001-01-01"})
    assert r.status_code == 400 and "is in the past" in text(r)
    r = c.post("/admin/policy/grants", data={"csrf_token": tok, "kind": "user", "who": "zed"})
    assert r.status_code == 404 and "there is no user" in text(r)
    # revoke
    r = c.post("/admin/policy/grants/revoke", data={"csrf_token": tok, "kind": "user", "who": "carol"},
               follow_redirects=True)
    assert "Emergency right of carol revoked (1 grant)" in text(r)
    with svc.db.session() as s:
        g = s.scalar(select(EmergencyGrant).where(EmergencyGrant.user_id == ids["carol"]))
        assert g.revoked_by == "dave" and g.revoked_at is not None
    assert not any("emergency" in a.qos for (user, _), a in svc.accounts.current.assocs.items()
                   if user == "carol")
    r = c.post("/admin/policy/grants/revoke", data={"csrf_token": tok, "kind": "user", "who": "carol"})
    assert r.status_code == 404 and "holds no emergency right" in text(r)
    assert [(e.action, e.subject) for e in events(svc, "grant") + events(svc, "revoke")] == [
        ("grant", "carol"), ("grant", "team vision"), ("revoke", "carol")]
    history = text(c.get("/admin/policy?grants=all"))
    assert "revoked by dave" in history


# ------------------------------------------------------------------------------- team page

def test_team_page_shows_shares_and_quotas(world):
    svc, app, ids, _ = world
    me = dave(svc)
    quotas.set_quota(svc, me, team="nlp", resource="gpu:a4000", value=4)
    quotas.set_quota(svc, me, team="nlp", user="carol", resource="cpu", value=16)
    with svc.db.transaction() as s:
        t = s.get(Team, ids["nlp"])
        t.fairshare, t.fairshare_factor, t.usage_share = 300, 0.8125, 0.25
        t.shares_sampled_at = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)
        s.get(Team, ids["vision"]).fairshare = 100
    c, tok = client(app, "carol")
    page = text(c.get("/teams/nlp"))
    part = page[page.index('id="team-scheduling"'):]
    assert "300" in part and "0.812" in part and "25.0%" in part and "2026-12-01 09:30 UTC" in part
    assert "4 a4000 GPUs" in part and "the whole team" in part and "16 cores" in part
    assert 'id="shares-form"' not in part   # only cluster administrators set shares
    assert c.post("/teams/nlp/shares", data={"csrf_token": tok, "shares": "5"}).status_code == 403
    d, dtok = client(app, "dave")
    assert 'id="shares-form"' in text(d.get("/teams/nlp"))
    r = d.post("/teams/nlp/shares", data={"csrf_token": dtok, "shares": "40"}, follow_redirects=True)
    assert "Team nlp now has 40 shares; Slurm has it now." in text(r)
    with svc.db.session() as s:
        assert s.get(Team, ids["nlp"]).fairshare == 40
    assert svc.accounts.current.accounts[svc.config.slurm_account("nlp")].fairshare == "40"
    assert events(svc, "shares")[-1].detail == "300 -> 40 shares"
    r = d.post("/teams/nlp/shares", data={"csrf_token": dtok, "shares": "0"}, follow_redirects=True)
    assert "shares must be between 1 and" in text(r)


# -------------------------------------------------------------------------------- job page

def test_pending_job_page_says_where_it_stands(world):
    svc, app, ids, _ = world
    start = svc.now() + timedelta(hours=2)
    with svc.db.transaction() as s:
        j = s.get(Job, ids["pending"])
        j.priority, j.expected_start_at, j.reason = 500, start, "team nlp uses 4 of its 4 a4000 GPUs"
        j.asked, j.gpu_count, j.compute_type, j.partition = "a4000 x8", 4, "a4000x4", "train"
    # another team's job ahead of it
    from tests.support.web import add_job
    add_job(svc, ids["secret"], branch="b", state="pending", pusher="mallory", priority=900)
    c, _ = client(app, "alice")
    page = text(c.get(f"/jobs/{ids['pending']}"))
    assert '<dd id="job-position">#2</dd>' in page
    assert "team nlp uses 4 of its 4 a4000 GPUs" in page
    assert start.strftime("%Y-%m-%d %H:%M UTC") in page
    assert "asked a4000 x8, got a4000 x4" in page
    assert '<dd id="job-compute-type">a4000x4</dd>' in page and '<dd id="job-partition">train</dd>' in page
    assert '<dd id="job-qos">normal</dd>' in page and 'id="job-preempted"' not in page


def test_job_page_shows_emergency_and_preemptions(world):
    svc, app, ids, _ = world
    with svc.db.transaction() as s:
        s.get(Job, ids["running"]).preempted_count = 2
        s.get(Job, ids["succeeded"]).qos = "emergency"
    c, _ = client(app, "carol")
    page = text(c.get(f"/jobs/{ids['running']}"))
    assert "preempted 2 times by emergency jobs" in page and 'id="job-position"' not in page
    assert 'id="job-asked"' not in page
    page = text(c.get(f"/jobs/{ids['succeeded']}"))
    assert '<dd id="job-qos"><span class="badge state-failed">emergency</span></dd>' in page
    api = c.get(f"/api/jobs/{ids['running']}").get_json()["job"]
    assert api["preempted_count"] == 2 and api["qos"] == "normal" and api["emergency"] is False


def test_emergency_checkbox_only_for_holders(world):
    svc, app, ids, backend = world
    c, tok = client(app, "carol")
    url = f"/jobs/{ids['succeeded']}"
    assert 'id="rerun-form"' in text(c.get(url)) and 'name="emergency"' not in text(c.get(url))
    # without the right, a forged checkbox is refused and nothing is reserved
    r = c.post(f"{url}/rerun", data={"csrf_token": tok, "emergency": "1"}, follow_redirects=True)
    assert "needs the emergency right" in text(r) and backend.submits == []
    grants.grant(svc, dave(svc), "nlp", team=True)   # the team's grant holds for its members
    assert 'name="emergency"' in text(c.get(url))
    r = c.post(f"{url}/rerun", data={"csrf_token": tok, "emergency": "1"})
    assert r.status_code == 302
    new_id = int(r.headers["Location"].rsplit("/", 1)[1])
    with svc.db.session() as s:
        new = s.get(Job, new_id)
        assert new.qos == "emergency" and new.pusher.name == "carol"
    [(_, req)] = backend.submits
    assert req.qos == "emergency"
    assert [e.subject for e in events(svc, "emergency-job")] == [f"job {new_id}"]
    page = text(c.get(f"/jobs/{new_id}"))
    assert '<span class="badge state-failed">emergency</span>' in page


def test_api_rerun_emergency(world):
    svc, app, ids, backend = world
    c = app.test_client()

    def post(body, who="carol"):
        return c.post(f"/api/jobs/{ids['succeeded']}/rerun", json=body,
                      headers={"Authorization": f"Bearer {ids[who + '_token']}"})

    r = post({"emergency": "maybe"})
    assert r.status_code == 400 and "emergency must be true or false" in r.get_json()["error"]
    r = post({"emergency": True})
    assert r.status_code == 409 and "emergency right" in r.get_json()["error"]
    assert backend.submits == []
    grants.grant(svc, dave(svc), "carol")
    r = post({"emergency": True})
    assert r.status_code == 200, r.get_json()
    body = c.get(f"/api/jobs/{r.get_json()['job']}",
                 headers={"Authorization": f"Bearer {ids['carol_token']}"}).get_json()["job"]
    assert body["qos"] == "emergency" and body["emergency"] is True


# ----------------------------------------------------------- a project's default compute type

def project_compute(svc, ids) -> str | None:
    with svc.db.session() as s:
        return s.get(Project, ids["proj"]).compute_type


def test_project_compute_type_through_the_form(world):
    svc, app, ids, _ = world
    compute.define(svc, dave(svc), "a6000x1", gpus="a6000:1", cpus=4)
    c, tok = client(app, "carol")
    page = text(c.get("/projects/nlp/proj"))
    assert 'id="compute-type"' in page and '<option value="a6000x1" >a6000x1' in page
    form = {"csrf_token": tok, "gpu_type": "a4000", "gpu_count": "1", "image": "python",
            "time": "60", **{f"input{i}": "" for i in range(5)}}
    r = c.post("/projects/nlp/proj/settings", data=dict(form, compute_type="a6000x1"))
    assert r.status_code == 302 and project_compute(svc, ids) == "a6000x1"
    page = text(c.get("/projects/nlp/proj"))
    assert '<span id="project-compute-type">a6000x1</span>' in page
    assert '<option value="a6000x1" selected>' in page
    assert "<td>a6000x1</td>" in text(c.get("/teams/nlp"))   # the team's project list
    r = c.post("/projects/nlp/proj/settings", data=dict(form, compute_type="h100x9"))
    assert r.status_code == 400 and "unknown compute type &#39;h100x9&#39;" in text(r)
    assert "known types: a6000x1" in text(r) and project_compute(svc, ids) == "a6000x1"
    r = c.post("/projects/nlp/proj/settings", data=form)          # no field: kept
    assert r.status_code == 302 and project_compute(svc, ids) == "a6000x1"
    r = c.post("/projects/nlp/proj/settings", data=dict(form, compute_type=""))   # cleared
    assert r.status_code == 302 and project_compute(svc, ids) is None


def test_project_compute_type_through_the_api(world):
    svc, app, ids, _ = world
    compute.define(svc, dave(svc), "a6000x1", gpus="a6000:1", cpus=4)
    c = app.test_client()
    auth = {"Authorization": f"Bearer {ids['alice_token']}"}
    r = c.patch("/api/projects/nlp/proj", json={"compute_type": "a6000x1"}, headers=auth)
    assert r.status_code == 200 and r.get_json()["project"]["compute_type"] == "a6000x1"
    assert project_compute(svc, ids) == "a6000x1"
    r = c.patch("/api/projects/nlp/proj", json={"compute_type": "nope"}, headers=auth)
    assert r.status_code == 400 and "unknown compute type 'nope'" in r.get_json()["error"]
    r = c.patch("/api/projects/nlp/proj", json={"compute_type": 3}, headers=auth)
    assert r.status_code == 400
    assert project_compute(svc, ids) == "a6000x1"
    assert c.get("/api/projects/nlp/proj", headers=auth).get_json()["project"]["compute_type"] == "a6000x1"
    r = c.patch("/api/projects/nlp/proj", json={"compute_type": None}, headers=auth)
    assert r.status_code == 200 and project_compute(svc, ids) is None
    r = c.post("/api/teams/nlp/projects", json={"name": "p2", "compute_type": "a6000x1"}, headers=auth)
    assert r.status_code == 201 and r.get_json()["project"]["compute_type"] == "a6000x1"
    r = c.post("/api/teams/nlp/projects", json={"name": "p3", "compute_type": "zzz"}, headers=auth)
    assert r.status_code == 400 and "unknown compute type" in r.get_json()["error"]


def test_project_compute_type_through_the_cli(world):
    svc, app, ids, _ = world
    runner = CliRunner()

    def run(*args, ok=True):
        r = runner.invoke(main, ["--as", "alice", *args], obj=Ctx(services=svc),
                          env={"SLIPWAY_URL": None, "SLIPWAY_TOKEN": None, "SLIPWAY_USER": None},
                          catch_exceptions=False)
        assert (r.exit_code == 0) == ok, (args, r.output)
        return r.output

    out = run("project", "set", "nlp/proj", "--compute", "a6000x1", ok=False)
    assert "unknown compute type 'a6000x1'; no compute types are defined yet" in out
    compute.define(svc, dave(svc), "a6000x1", gpus="a6000:1", cpus=4)
    out = run("project", "set", "nlp/proj", "--compute", "a6000x1")
    assert "compute type: a6000x1" in out and project_compute(svc, ids) == "a6000x1"
    assert "compute a6000x1" in run("project", "show", "nlp/proj")
    assert json.loads(run("project", "show", "nlp/proj", "--json"))["compute_type"] == "a6000x1"
    out = run("project", "set", "nlp/proj", "--compute", "")
    assert "compute type: none" in out and project_compute(svc, ids) is None


def test_project_compute_type_through_the_remote_cli(world):
    from tests.support.git_server import serve

    svc, app, ids, _ = world
    compute.define(svc, dave(svc), "a6000x1", gpus="a6000:1", cpus=4)
    runner = CliRunner()
    with serve(app) as base:
        def run(*args, ok=True):
            r = runner.invoke(main, ["--url", base, *args], obj=Ctx(services=svc),
                              env={"SLIPWAY_URL": None, "SLIPWAY_TOKEN": ids["alice_token"],
                                   "SLIPWAY_USER": None}, catch_exceptions=False)
            assert (r.exit_code == 0) == ok, (args, r.output)
            return r.output

        assert "compute type: a6000x1" in run("project", "set", "nlp/proj", "--compute", "a6000x1")
        assert project_compute(svc, ids) == "a6000x1"
        assert "unknown compute type 'zz'" in run("project", "set", "nlp/proj", "--compute", "zz", ok=False)
        assert "compute type: none" in run("project", "set", "nlp/proj", "--compute", "")
    assert project_compute(svc, ids) is None
