"""Workspaces through the three front doors (docs/WORKSPACES.md): the project page's "Open
workspace" form and the workspace page, the JSON API, and ``slipway workspace`` (local and
remote). The rules are the service layer's; these tests check that each door reaches them and
presents their answers: start, the billing notice, stop, restart, the caps (refused with the cap
in the message), outsiders (404) and the idle-reminder banner on every page."""
from __future__ import annotations

import html
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.app import create_app
from portal.cli import Ctx, main
from portal.db import Job
from portal.jobs import states
from portal.teams.access import Actor
from portal.workspaces import policy
from tests.support.fakes import FakeBackend, commit_to_bare, git, make_services
from tests.support.web import csrf_token, login, make_world


def add_branch(svc, tmp_path, branch: str) -> str:
    """A commit on ``branch`` of nlp/proj's bare repository (as if pushed)."""
    bare = svc.config.repos_root / "nlp" / "proj.git"
    sha = commit_to_bare(bare, tmp_path / "work", {"nb.ipynb": "{}\n"}, branch=branch)
    git("--git-dir", str(bare), "update-ref", f"refs/heads/{branch}", sha)
    return sha


@pytest.fixture
def world(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    for b in ("ws-1", "ws-2", "ws-3"):
        add_branch(svc, tmp_path, b)
    app = create_app(svc)
    yield svc, app, ids, backend
    svc.db.dispose()


def workspace_rows(svc) -> list[Job]:
    with svc.db.session() as s:
        return list(s.scalars(select(Job).where(Job.kind == "workspace").order_by(Job.id)))


def end(svc, job_id: int) -> None:
    """The reconciler saw the cancelled job end."""
    with svc.db.transaction() as s:
        states.transition(s.get(Job, job_id), states.CANCELLED, now=svc.now())


def set_cap(svc, ids, **values) -> None:
    policy.set_policy(svc, Actor(ids["dave"], "dave", True), None, values)


def page_client(app, who: str):
    c = app.test_client()
    assert login(c, who).status_code == 302
    return c, csrf_token(c)


# ------------------------------------------------------------------------------------ web

def test_web_open_show_stop_restart(world):
    svc, app, ids, backend = world
    c, tok = page_client(app, "alice")
    page = c.get("/projects/nlp/proj").get_data(as_text=True)
    assert 'id="open-workspace"' in page and "/projects/nlp/proj/workspaces" in page
    assert 'value="cpu"' in page and 'name="input4"' in page
    r = c.post("/projects/nlp/proj/workspaces", data={
        "csrf_token": tok, "branch": "ws-1", "compute": "a4000", "gpu_count": "1", "image": "python",
        "time": "2h", **{f"input{i}": "" for i in range(5)}})
    [w] = workspace_rows(svc)
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/workspaces/{w.id}")
    assert (w.branch, w.gpu_type, w.gpu_count, w.time_limit_min) == ("ws-1", "a4000", 1, 120)
    assert len(backend.submits) == 1
    body = c.get(f"/workspaces/{w.id}").get_data(as_text=True)
    assert "This workspace bills while it is open: <span data-field=\"cost\">$0.00</span> so far" in body
    assert "Slurm is placing this workspace" in body and 'id="stop-form"' in body
    assert "Open JupyterLab" not in body and 'id="restart-form"' not in body
    assert "Idle after 60 minutes" in body and "stopped automatically" in body
    assert "workspace.js" in body
    # running: the JupyterLab link, to the gateway, in a new tab
    with svc.db.transaction() as s:
        j = s.get(Job, w.id)
        j.state, j.node, j.port, j.started_at = states.RUNNING, "a4k-1", 18090, svc.now()
    body = c.get(f"/workspaces/{w.id}").get_data(as_text=True)
    assert f'href="http://localhost:8001/workspaces/{w.id}/lab/" target="_blank"' in body \
        or f'/workspaces/{w.id}/lab/" target="_blank"' in body
    assert "Open JupyterLab" in body
    listing = c.get("/workspaces").get_data(as_text=True)
    assert f"/workspaces/{w.id}" in listing and "ws-1" in listing and "Open JupyterLab" in listing
    # stop
    r = c.post(f"/workspaces/{w.id}/stop", data={"csrf_token": tok}, follow_redirects=True)
    assert r.status_code == 200 and f"Workspace {w.id}" in r.get_data(as_text=True)
    assert backend.cancels
    end(svc, w.id)
    body = c.get(f"/workspaces/{w.id}").get_data(as_text=True)
    assert "stopped by alice" in body and 'id="restart-form"' in body and 'id="stop-form"' not in body
    assert "no longer bills" in body
    # stopping again: the service's 409, flashed
    r = c.post(f"/workspaces/{w.id}/stop", data={"csrf_token": tok}, follow_redirects=True)
    assert "is cancelled already" in r.get_data(as_text=True)
    # restart: a new workspace, same branch and compute, /output continued
    r = c.post(f"/workspaces/{w.id}/restart", data={"csrf_token": tok})
    new = workspace_rows(svc)[-1]
    assert new.id != w.id and r.headers["Location"].endswith(f"/workspaces/{new.id}")
    assert (new.branch, new.gpu_type, new.continue_from) == ("ws-1", "a4000", w.id)
    listing = c.get("/workspaces").get_data(as_text=True)
    assert listing.index(f"#{new.id}<") < listing.index(f"#{w.id}<")   # open ones first


def test_cpu_only_through_the_form_the_api_and_the_cli(world):
    svc, app, ids, backend = world
    c, tok = page_client(app, "alice")
    r = c.post("/projects/nlp/proj/workspaces", data={"csrf_token": tok, "branch": "ws-1",
                                                      "compute": "cpu", "cpus": "4", "mem": "8G"})
    w = workspace_rows(svc)[-1]
    assert r.status_code == 302 and (w.gpu_type, w.gpu_count) == ("cpu", 4)
    assert "CPU only, 4 cores" in c.get(f"/workspaces/{w.id}").get_data(as_text=True)
    r = api_call(app, ids, "POST", "/api/projects/nlp/proj/workspaces", who="carol",
                 json={"branch": "ws-2", "cpus": 2})
    assert r.status_code == 201 and r.get_json()["workspace"]["gpu_type"] == "cpu"
    out = run_cli(svc, ids, "workspace", "start", "nlp/proj", "--branch", "ws-3", "--cpus", "2",
                  "--mem", "4G", actor="bob")
    assert "cpu x2" in out
    assert "cpu x2 (no GPU)" in run_cli(svc, ids, "workspace", "show", str(workspace_rows(svc)[-1].id),
                                        actor="bob")


def test_web_errors_are_flashed_and_leave_nothing(world):
    svc, app, ids, backend = world
    c, tok = page_client(app, "alice")
    for form, words in [({"branch": ""}, "name the branch"),
                        ({"branch": "no-such-branch"}, "there is no branch 'no-such-branch'"),
                        ({"branch": "ws-1", "compute": "a4000", "gpu_count": "3"}, "at most 2 GPU"),
                        ({"branch": "ws-1", "compute": "a4000", "gpu_count": "x"}, "cannot read GPU request")]:
        r = c.post("/projects/nlp/proj/workspaces", data={"csrf_token": tok, **form},
                   follow_redirects=True)
        assert r.status_code == 200 and words in html.unescape(r.get_data(as_text=True)), (form, words)
        assert 'class="flash error"' in r.get_data(as_text=True)
    assert workspace_rows(svc) == [] and backend.submits == []


def test_caps_refused_with_the_cap_through_each_door(world, tmp_path):
    svc, app, ids, backend = world
    set_cap(svc, ids, max_per_user=1, max_gpus=1)
    c, tok = page_client(app, "alice")
    c.post("/projects/nlp/proj/workspaces", data={"csrf_token": tok, "branch": "ws-1"})
    r = c.post("/projects/nlp/proj/workspaces", data={"csrf_token": tok, "branch": "ws-2"},
               follow_redirects=True)
    assert "the most allowed is 1" in r.get_data(as_text=True)
    r = api_call(app, ids, "POST", "/api/projects/nlp/proj/workspaces", json={"branch": "ws-2"})
    assert r.status_code == 409 and "the most allowed is 1" in r.get_json()["error"]
    out = run_cli(svc, ids, "workspace", "start", "nlp/proj", "--branch", "ws-2", actor="alice", ok=False)
    assert "the most allowed is 1" in out
    r = api_call(app, ids, "POST", "/api/projects/nlp/proj/workspaces", who="carol",
                 json={"branch": "ws-2", "gpus": "a4000:2"})
    assert r.status_code == 400 and "at most 1 GPU(s); 2 asked" in r.get_json()["error"]
    assert len(workspace_rows(svc)) == 1 and len(backend.submits) == 1


def test_outsider_gets_404_on_page_api_and_form(world):
    svc, app, ids, backend = world
    jid, _ = start_as(svc, ids, "alice", "ws-1")
    c, tok = page_client(app, "mallory")
    for url in (f"/workspaces/{jid}",):
        r = c.get(url)
        assert r.status_code == 404 and "ws-1" not in r.get_data(as_text=True)
    for url in (f"/workspaces/{jid}/stop", f"/workspaces/{jid}/restart", "/projects/nlp/proj/workspaces"):
        assert c.post(url, data={"csrf_token": tok, "branch": "ws-2"}).status_code == 404, url
    assert "ws-1" not in c.get("/workspaces").get_data(as_text=True)
    assert c.get("/workspaces?team=nlp").status_code == 404
    for method, url in [("GET", f"/api/workspaces/{jid}"), ("POST", f"/api/workspaces/{jid}/stop"),
                        ("POST", f"/api/workspaces/{jid}/restart"), ("GET", "/api/workspaces?team=nlp"),
                        ("POST", "/api/projects/nlp/proj/workspaces")]:
        r = api_call(app, ids, method, url, who="mallory", json={"branch": "ws-2"})
        assert r.status_code == 404 and r.get_json()["ok"] is False, (method, url)
    assert api_call(app, ids, "GET", "/api/workspaces", who="mallory").get_json()["workspaces"] == []
    # a task is not a workspace, even for its team
    assert c.get(f"/workspaces/{ids['vision_job']}").status_code == 404
    assert backend.cancels == [] and len(workspace_rows(svc)) == 1


def test_idle_reminder_banner_on_every_page(world):
    svc, app, ids, backend = world
    jid, _ = start_as(svc, ids, "alice", "ws-1")
    c, _tok = page_client(app, "alice")
    assert 'id="workspace-reminders"' not in c.get("/").get_data(as_text=True)
    with svc.db.transaction() as s:
        j = s.get(Job, jid)
        j.state, j.node, j.port, j.started_at, j.reminded_at = (states.RUNNING, "a4k-1", 18090,
                                                                svc.now(), svc.now())
    for url in ("/", "/jobs", "/projects/nlp/proj", f"/workspaces/{jid}"):
        body = c.get(url).get_data(as_text=True)
        assert 'id="workspace-reminders"' in body and f'/workspaces/{jid}">#{jid}</a> is idle' in body, url
    assert 'id="idle-reminder"' in c.get(f"/workspaces/{jid}").get_data(as_text=True)
    # another member of the team does not get alice's banner
    other, _ = page_client(app, "bob")
    assert 'id="workspace-reminders"' not in other.get("/").get_data(as_text=True)


# ------------------------------------------------------------------------------------ API

def api_call(app, ids, method, url, who="alice", **kw):
    return app.test_client().open(url, method=method,
                                  headers={"Authorization": f"Bearer {ids[who + '_token']}"}, **kw)


def start_as(svc, ids, who: str, branch: str, **kw):
    from portal.workspaces import service
    return service.start_workspace(svc, Actor(ids[who], who), "nlp", "proj", branch=branch, **kw)


def test_api_start_list_show_stop_restart(world):
    svc, app, ids, backend = world
    r = api_call(app, ids, "POST", "/api/projects/nlp/proj/workspaces",
                 json={"branch": "ws-1", "gpus": "a4000:1", "time": "1h", "inputs": {"input0": ""}})
    assert r.status_code == 201, r.get_json()
    d = r.get_json()
    w = d["workspace"]
    assert d["ok"] and f"workspace {w['id']}" in d["message"]
    assert (w["branch"], w["gpu_type"], w["bills_while_open"], w["page"]) == (
        "ws-1", "a4000", True, f"/workspaces/{w['id']}")
    assert w["policy"]["max_per_user"] == 2
    got = api_call(app, ids, "GET", f"/api/workspaces/{w['id']}").get_json()["workspace"]
    assert got["id"] == w["id"] and got["state"] == w["state"]
    rows = api_call(app, ids, "GET", "/api/workspaces?team=nlp&active=1").get_json()["workspaces"]
    assert [x["id"] for x in rows] == [w["id"]]
    r = api_call(app, ids, "POST", f"/api/workspaces/{w['id']}/stop")
    assert r.status_code == 200 and r.get_json()["message"].startswith(f"workspace {w['id']}")
    end(svc, w["id"])
    assert api_call(app, ids, "GET", "/api/workspaces?active=1").get_json()["workspaces"] == []
    assert len(api_call(app, ids, "GET", "/api/workspaces").get_json()["workspaces"]) == 1
    r = api_call(app, ids, "POST", f"/api/workspaces/{w['id']}/restart")
    assert r.status_code == 201 and r.get_json()["restart_of"] == w["id"]
    assert r.get_json()["workspace"]["continue_from"] == w["id"]
    # a task is not a workspace
    assert api_call(app, ids, "GET", f"/api/workspaces/{ids['running']}").status_code == 404


def test_api_bad_bodies(world):
    svc, app, ids, backend = world
    url = "/api/projects/nlp/proj/workspaces"
    for body, words in [({"branch": "ws-1", "gpu": "a4000:1"}, "unknown field(s) 'gpu'"),
                        ({"branch": ["ws-1"]}, "branch must be a JSON string"),
                        ({"branch": "ws-1", "inputs": ["x"]}, "inputs must be an object"),
                        ({}, "name the branch"), ({"branch": "nope"}, "no branch 'nope'"),
                        ({"branch": "ws-1", "gpus": "zz:1"}, "unknown GPU type")]:
        r = api_call(app, ids, "POST", url, json=body)
        assert r.status_code == 400 and words in r.get_json()["error"], (body, r.get_json())
    assert workspace_rows(svc) == [] and backend.submits == []


def test_api_policy_get_and_put(world):
    svc, app, ids, backend = world
    p = api_call(app, ids, "GET", "/api/workspace-policy").get_json()["policy"]
    assert p["effective"]["idle_seconds"] == 3600 and p["team"] is None
    r = api_call(app, ids, "PUT", "/api/workspace-policy", json={"idle": "30m"})
    assert r.status_code == 403 and "cluster administrators" in r.get_json()["error"]
    r = api_call(app, ids, "PUT", "/api/workspace-policy?team=nlp", who="dave",
                 json={"idle": "30m", "remind": "5m", "auto_stop": False, "max_per_user": 3,
                       "max_gpus": 1})
    assert r.status_code == 200, r.get_json()
    eff = r.get_json()["policy"]["effective"]
    assert eff == {"idle_seconds": 1800, "remind_seconds": 300, "auto_stop": False,
                   "max_per_user": 3, "max_gpus": 1}
    # members read their team's policy; the cluster's is unchanged
    assert api_call(app, ids, "GET", "/api/workspace-policy?team=nlp", who="carol").get_json()[
        "policy"]["effective"]["max_gpus"] == 1
    assert api_call(app, ids, "GET", "/api/workspace-policy").get_json()["policy"]["effective"][
        "max_gpus"] == 2
    assert api_call(app, ids, "GET", "/api/workspace-policy?team=nlp", who="mallory").status_code == 404
    for body, words in [({"idle": "soon"}, "cannot read duration"), ({"nap": 1}, "unknown field"),
                        ({}, "nothing to set"), ({"max_gpus": "two"}, "whole number")]:
        r = api_call(app, ids, "PUT", "/api/workspace-policy", who="dave", json=body)
        assert r.status_code == 400 and words in r.get_json()["error"], (body, r.get_json())
    # the page shows the team's policy
    jid, _ = start_as(svc, ids, "alice", "ws-1")
    c, _ = page_client(app, "alice")
    body = c.get(f"/workspaces/{jid}").get_data(as_text=True)
    assert "Idle after 30 minutes" in body and "reminded 5 minutes before" in body
    assert "only reminded" in body


# ------------------------------------------------------------------------------------ CLI

def run_cli(svc, ids, *args, ok=True, actor=None, base=None, who=None):
    argv = (["--as", actor] if actor else []) + (["--url", base] if who else []) + list(args)
    env = {"SLIPWAY_URL": None, "SLIPWAY_USER": None,
           "SLIPWAY_TOKEN": ids[f"{who}_token"] if who else None}
    r = CliRunner().invoke(main, argv, obj=Ctx(services=svc), env=env, catch_exceptions=False)
    assert (r.exit_code == 0) == ok, (argv, r.exit_code, r.output)
    return r.output


def test_cli_local_start_show_stop_restart_open_policy(world):
    svc, app, ids, backend = world
    out = run_cli(svc, ids, "workspace", "start", "nlp/proj", "--branch", "ws-1", "--gpus", "a4000:1",
                  "--input", "input0=", actor="alice")
    [w] = workspace_rows(svc)
    assert f"workspace: {w.id}" in out and f"/workspaces/{w.id}" in out and "bills while it is open" in out
    assert "JupyterLab:" not in out
    assert "not running yet" in run_cli(svc, ids, "workspace", "open", str(w.id), actor="alice", ok=False)
    assert "still pending after 1 s" in run_cli(svc, ids, "workspace", "open", str(w.id), "--wait",
                                                "--timeout", "1", "--interval", "0.1", actor="alice",
                                                ok=False)
    with svc.db.transaction() as s:
        j = s.get(Job, w.id)
        j.state, j.node, j.port, j.started_at = states.RUNNING, "a4k-1", 18090, svc.now()
    assert run_cli(svc, ids, "workspace", "open", str(w.id), "--wait", actor="alice").strip().endswith(
        f"/workspaces/{w.id}/lab/")
    out = run_cli(svc, ids, "workspace", "show", str(w.id), actor="alice")
    assert "so far (it bills while it is open)" in out and "idle after 60m" in out and "a4000 x1" in out
    d = json.loads(run_cli(svc, ids, "workspace", "show", str(w.id), "--json", actor="alice"))
    assert d["id"] == w.id and d["url"].endswith(f"/workspaces/{w.id}/lab/")
    assert f"{w.id}" in run_cli(svc, ids, "workspace", "list", actor="alice")
    assert f"there is no job {w.id}" in run_cli(svc, ids, "workspace", "show", str(w.id),
                                                actor="mallory", ok=False)
    assert run_cli(svc, ids, "workspace", "stop", str(w.id), actor="alice").startswith(f"workspace {w.id}")
    end(svc, w.id)
    assert "is cancelled" in run_cli(svc, ids, "workspace", "open", str(w.id), actor="alice", ok=False)
    assert "ws-1" not in run_cli(svc, ids, "workspace", "list", actor="alice")
    assert "ws-1" in run_cli(svc, ids, "workspace", "list", "--all", actor="alice")
    out = run_cli(svc, ids, "workspace", "restart", str(w.id), actor="alice")
    new = workspace_rows(svc)[-1]
    assert new.continue_from == w.id and f"workspace: {new.id}" in out
    # policy: show, set (cluster administrators), refused for others
    assert "idle after 60m" in run_cli(svc, ids, "workspace", "policy", actor="alice")
    assert "only cluster administrators" in run_cli(svc, ids, "workspace", "policy", "--idle", "30m",
                                                    actor="alice", ok=False)
    out = run_cli(svc, ids, "workspace", "policy", "--team", "nlp", "--idle", "30m", "--remind", "5m",
                  "--remind-only", "--max-per-user", "1", "--max-gpus", "1", actor="dave")
    assert "idle after 30m, reminded 5m before, remind only; at most 1 open per user, 1 GPU(s)" in out
    assert "cannot read duration" in run_cli(svc, ids, "workspace", "policy", "--idle", "soon", ok=False)
    # bad input: clear messages, nothing started
    n = len(workspace_rows(svc))
    assert "TEAM/PROJECT" in run_cli(svc, ids, "workspace", "start", "proj", "--branch", "x",
                                     actor="alice", ok=False)
    assert "SLOT=REF" in run_cli(svc, ids, "workspace", "start", "nlp/proj", "--branch", "ws-2",
                                 "--input", "vision", actor="alice", ok=False)
    assert "--mem goes with --cpus" in run_cli(svc, ids, "workspace", "start", "nlp/proj", "--branch",
                                               "ws-2", "--mem", "4G", actor="alice", ok=False)
    assert "act as one" in run_cli(svc, ids, "workspace", "start", "nlp/proj", "--branch", "ws-2", ok=False)
    assert len(workspace_rows(svc)) == n


@pytest.fixture
def site(tmp_path):
    from tests.support.git_server import serve

    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    for b in ("ws-1", "ws-2"):
        add_branch(svc, tmp_path, b)
    with serve(create_app(svc)) as base:
        yield svc, ids, base
    svc.db.dispose()


def test_cli_remote_same_answers_as_local(site):
    svc, ids, base = site
    out = run_cli(svc, ids, "workspace", "start", "nlp/proj", "--branch", "ws-1", base=base, who="alice")
    [w] = workspace_rows(svc)
    assert f"workspace: {w.id}" in out and f"page: {base}/workspaces/{w.id}" in out
    for args in (("workspace", "list"), ("workspace", "show", str(w.id), "--json"),
                 ("workspace", "policy", "--json")):
        assert run_cli(svc, ids, *args, base=base, who="alice") == run_cli(svc, ids, *args, actor="alice"), args
    assert f"there is no job {w.id}" in run_cli(svc, ids, "workspace", "show", str(w.id), base=base,
                                                who="mallory", ok=False)
    assert "at most 1 open per user" in run_cli(svc, ids, "workspace", "policy", "--max-per-user", "1",
                                                base=base, who="dave")
    assert "the most allowed is 1" in run_cli(svc, ids, "workspace", "start", "nlp/proj", "--branch",
                                              "ws-2", base=base, who="alice", ok=False)
    assert run_cli(svc, ids, "workspace", "stop", str(w.id), base=base, who="alice").startswith(
        f"workspace {w.id}")
    end(svc, w.id)
    out = run_cli(svc, ids, "workspace", "restart", str(w.id), base=base, who="alice")
    assert f"workspace: {workspace_rows(svc)[-1].id}" in out
