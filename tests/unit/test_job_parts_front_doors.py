"""A job's parts in the three front doors (docs/SHARING.md): a sweep's tasks (values, state,
cost, results ref, log, cancel one task) and a multi-node job's nodes, with the compute in
words ("2/8 of an a6000", "2 nodes × 4 a4000", "6 tasks (at most 2 at once)") — on the job
page, through ``/api/jobs``, and through ``slipway job show|log|cancel`` (local and remote)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.app import create_app
from portal.cli import Ctx, main
from portal.db import Job, JobPart, to_micros
from portal.jobs import job_shape, runner_spec
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import add_job, csrf_token, login, make_world

SWEEP = [{"LR": lr, "BS": bs} for lr in ("0.1", "0.01", "0.001") for bs in ("32", "64")]
ARRAY_ID = 2001


def add_sweep(svc, ids) -> int:
    """Sweep job (6 tasks, at most 2 at once, each 2 shards of an a6000) of nlp/proj: task 0
    succeeded with results, 1 running on a6k-1 with a log, 2..5 pending."""
    jid = add_job(svc, ids["proj"], branch="sweep-1", state="running", pusher="alice",
                  slurm_job_id=ARRAY_ID, task_count=6, max_parallel=2, sweep=json.dumps(SWEEP))
    now = svc.now()
    with svc.db.transaction() as s:
        j = s.get(Job, jid)
        j.gpu_type, j.gpu_count = "a6000-shard", 2
        for i, params in enumerate(SWEEP):
            part = JobPart(job_id=jid, kind="task", index=i, state="pending",
                           params=json.dumps(params))
            if i == 0:
                part.state, part.node, part.exit_code = "succeeded", "a6k-1", 0
                part.started_at = part.ended_at = now
                part.results_sha, part.cost_micros = "ef" * 20, to_micros("0.25")
            elif i == 1:
                part.state, part.node, part.started_at = "running", "a6k-1", now
                part.cost_micros = to_micros("0.125")
            s.add(part)
    path = runner_spec.task_log_path(svc, jid, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("task one: epoch 1\n")
    return jid


def add_multi_node(svc, ids) -> int:
    jid = add_job(svc, ids["proj"], branch="ddp", state="running", pusher="alice",
                  slurm_job_id=3001, nodes=2, master_port=29500)
    with svc.db.transaction() as s:
        j = s.get(Job, jid)
        j.gpu_type, j.gpu_count = "a4000", 4
        for rank, node in enumerate(("a4k-1", "a4k-2")):
            s.add(JobPart(job_id=jid, kind="node", index=rank, state="running", node=node,
                          started_at=svc.now()))
    return jid


@pytest.fixture
def world(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    ids["sweep"] = add_sweep(svc, ids)
    ids["ddp"] = add_multi_node(svc, ids)
    yield svc, create_app(svc), ids, backend
    svc.db.dispose()


def client(app, who: str):
    c = app.test_client()
    assert login(c, who).status_code == 302
    return c, csrf_token(c)


def api(app, ids, method: str, path: str, who: str = "alice", **kw):
    headers = {"Authorization": f"Bearer {ids[who + '_token']}"}
    return app.test_client().open(path, method=method, headers=headers, **kw)


def part(svc, jid: int, index: int) -> JobPart:
    with svc.db.session() as s:
        return s.scalar(select(JobPart).where(JobPart.job_id == jid, JobPart.kind == "task",
                                              JobPart.index == index))


# ------------------------------------------------------------------------------ the words

def test_compute_words():
    shards = {"a6000-shard": ("a6000", 8)}.get
    assert job_shape.unit_text("a6000-shard", 2, shards) == "2/8 of an a6000"
    assert job_shape.unit_text("a6000-shard", 2) == "2 shards of an a6000"   # no config at hand
    assert job_shape.unit_text("a4000", 4) == "4 a4000"
    assert job_shape.unit_text("cpu", 1) == "1 CPU core"
    assert job_shape.unit_text("v100-shard", 1) == "1 shard of a v100"
    assert job_shape.unit_text("h100-shard", 3) == "3 shards of an h100"
    assert job_shape.compute_text("a4000", 4, nodes=2) == "2 nodes × 4 a4000"
    assert job_shape.compute_text("a4000", 1, task_count=6, max_parallel=2) == \
        "6 tasks (at most 2 at once), each 1 a4000"
    assert job_shape.compute_text("a4000", 1, task_count=6, max_parallel=None) == \
        "6 tasks, each 1 a4000"
    assert job_shape.compute_text("a4000", 1, task_count=1) == "1 task, each 1 a4000"


# ------------------------------------------------------------------------------------ API

def test_api_job_lists_tasks_nodes_and_shape(world):
    svc, app, ids, _ = world
    d = api(app, ids, "GET", f"/api/jobs/{ids['sweep']}").get_json()["job"]
    assert d["shape"] == {"kind": "sweep", "tasks": 6, "max_parallel": 2, "nodes": 1,
                          "compute": "6 tasks (at most 2 at once), each 2/8 of an a6000"}
    assert d["gpu_type"] == "a6000-shard" and d["state"] == "running"   # the old keys stay
    tasks = d["tasks"]
    assert [t["values"] for t in tasks] == ["lr=0.1 bs=32", "lr=0.1 bs=64", "lr=0.01 bs=32",
                                            "lr=0.01 bs=64", "lr=0.001 bs=32", "lr=0.001 bs=64"]
    assert [t["state"] for t in tasks] == ["succeeded", "running"] + ["pending"] * 4
    assert tasks[0]["cost"] == "0.250000" and tasks[0]["cost_text"] == "$0.25"
    assert tasks[1]["cost_text"] == "$0.125" and tasks[2]["cost_text"] == "$0.00"
    assert tasks[0]["results_ref"] == f"results/sweep-1/{ids['sweep']}/0"
    assert tasks[0]["results_sha"] == "ef" * 20 and tasks[1]["results_sha"] is None
    assert tasks[0]["exit_code"] == 0 and tasks[1]["node"] == "a6k-1"
    assert tasks[1]["log"] is True and tasks[2]["log"] is False
    assert tasks[0]["params"] == {"LR": "0.1", "BS": "32"}
    assert "nodes" not in d

    d = api(app, ids, "GET", f"/api/jobs/{ids['ddp']}").get_json()["job"]
    assert d["shape"]["kind"] == "multi-node" and d["shape"]["compute"] == "2 nodes × 4 a4000"
    assert [(n["rank"], n["node"], n["state"]) for n in d["nodes"]] == \
        [(0, "a4k-1", "running"), (1, "a4k-2", "running")]
    assert "tasks" not in d

    d = api(app, ids, "GET", f"/api/jobs/{ids['running']}").get_json()["job"]
    assert d["shape"] == {"kind": "single", "tasks": None, "max_parallel": None, "nodes": 1,
                          "compute": "1 a4000"}
    assert "tasks" not in d and "nodes" not in d
    listed = {j["id"]: j for j in api(app, ids, "GET", "/api/jobs").get_json()["jobs"]}
    assert listed[ids["sweep"]]["shape"]["kind"] == "sweep"


def test_api_cancel_one_task(world):
    svc, app, ids, backend = world
    r = api(app, ids, "POST", f"/api/jobs/{ids['sweep']}/cancel", json={"task": 1})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["task"] == 1 and "task 1 is stopping" in body["message"]
    assert backend.task_cancels == [(ARRAY_ID, 1, "TERM")] and backend.cancels == []
    assert part(svc, ids["sweep"], 1).cancel_requested_at is not None
    r = api(app, ids, "POST", f"/api/jobs/{ids['sweep']}/cancel", json={"task": "3"})  # a form's
    assert r.status_code == 200 and backend.task_cancels[-1] == (ARRAY_ID, 3, None)
    r = api(app, ids, "POST", f"/api/jobs/{ids['sweep']}/cancel", json={"task": 0})
    assert r.status_code == 409 and "task 0 of job" in r.get_json()["error"] \
        and "already ended (succeeded)" in r.get_json()["error"]
    r = api(app, ids, "POST", f"/api/jobs/{ids['sweep']}/cancel", json={"task": 9})
    assert r.status_code == 409 and "has tasks 0..5, not 9" in r.get_json()["error"]
    with svc.db.session() as s:
        assert s.get(Job, ids["sweep"]).cancel_requested_at is None   # the sweep goes on


@pytest.mark.parametrize("bad, shown", [("x", "'x'"), (-1, "-1"), (1.5, "1.5"), (True, "boolean"),
                                        (None, "null"), ([1], "array"), ("", "''"),
                                        (2**40, str(2**40)), ("٣", "'٣'")])
def test_api_cancel_refuses_a_bad_task(world, bad, shown):
    svc, app, ids, backend = world
    r = api(app, ids, "POST", f"/api/jobs/{ids['sweep']}/cancel", json={"task": bad})
    assert r.status_code == 400
    err = r.get_json()["error"]
    assert err.startswith("task must be a whole number from 0") and f"not {shown};" in err
    assert "leave it out to cancel the whole job" in err
    assert backend.task_cancels == [] and backend.cancels == []


def test_api_cancel_task_of_a_job_that_is_not_a_sweep(world):
    svc, app, ids, backend = world
    r = api(app, ids, "POST", f"/api/jobs/{ids['running']}/cancel", json={"task": 0})
    assert r.status_code == 409
    assert f"job {ids['running']} is not a sweep" in r.get_json()["error"]
    assert backend.cancels == [] and backend.task_cancels == []
    # without a task: the whole job, as before (the whole sweep: every waiting task + TERM)
    r = api(app, ids, "POST", f"/api/jobs/{ids['sweep']}/cancel")
    assert r.status_code == 200 and "task" not in r.get_json()
    assert sorted(t for _a, t, _s in backend.task_cancels) == [2, 3, 4, 5]


def test_api_task_log(world):
    svc, app, ids, _ = world
    r = api(app, ids, "GET", f"/api/jobs/{ids['sweep']}/tasks/1/log")
    d = r.get_json()
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert d["data"] == "task one: epoch 1\n" and d["exists"] and d["task"] == 1
    assert d["state"] == "running" and d["terminal"] is False and d["job_state"] == "running"
    d = api(app, ids, "GET", f"/api/jobs/{ids['sweep']}/tasks/1/log?offset=10").get_json()
    assert d["data"] == "epoch 1\n"
    d = api(app, ids, "GET", f"/api/jobs/{ids['sweep']}/tasks/0/log").get_json()
    assert d["exists"] is False and d["terminal"] is True and d["state"] == "succeeded"
    r = api(app, ids, "GET", f"/api/jobs/{ids['sweep']}/tasks/6/log")
    assert r.status_code == 404 and "has tasks 0..5, not 6" in r.get_json()["error"]
    r = api(app, ids, "GET", f"/api/jobs/{ids['sweep']}/tasks/{2**40}/log")
    assert r.status_code == 404
    r = api(app, ids, "GET", f"/api/jobs/{ids['running']}/tasks/0/log")
    assert r.status_code == 404 and "is not a sweep" in r.get_json()["error"]


def test_another_team_gets_not_found(world):
    svc, app, ids, backend = world
    jid = ids["sweep"]
    r = api(app, ids, "GET", f"/api/jobs/{jid}/tasks/1/log", who="mallory")
    assert r.status_code == 404 and r.get_json()["error"] == f"there is no job {jid}"
    assert "task one" not in r.get_data(as_text=True)
    r = api(app, ids, "POST", f"/api/jobs/{jid}/cancel", who="mallory", json={"task": 1})
    assert r.status_code == 404 and r.get_json()["error"] == f"there is no job {jid}"
    c, token = client(app, "mallory")
    assert c.get(f"/jobs/{jid}/tasks/1").status_code == 404
    r = c.post(f"/jobs/{jid}/tasks/1/cancel", data={"csrf_token": token})
    assert r.status_code == 404
    r = c.post(f"/jobs/{jid}/tasks/{2**40}/cancel", data={"csrf_token": token})
    assert r.status_code == 404   # no such route: a task number is below 2^31
    assert backend.task_cancels == [] and part(svc, jid, 1).cancel_requested_at is None


# ------------------------------------------------------------------------------------ web

def test_job_page_shows_tasks_and_the_share(world):
    svc, app, ids, _ = world
    c, _ = client(app, "carol")   # any member of the team may cancel
    html = c.get(f"/jobs/{ids['sweep']}").get_data(as_text=True)
    assert 'id="job-compute">6 tasks (at most 2 at once), each 2/8 of an a6000<' in html
    assert 'id="tasks-table"' in html and 'id="nodes-table"' not in html
    assert "lr=0.001 bs=64" in html and "$0.25" in html and "$0.125" in html
    assert f"results/sweep-1/{ids['sweep']}/0 @ {'ef' * 5}" in html
    # a Cancel/Stop form for each active task, none for the ended one
    assert html.count('class="inline task-cancel"') == 5
    assert f'action="/jobs/{ids["sweep"]}/tasks/1/cancel"' in html
    assert f'action="/jobs/{ids["sweep"]}/tasks/0/cancel"' not in html
    assert f'href="/jobs/{ids["sweep"]}/tasks/1#log"' in html   # task 1 has a log
    assert 'id="cancel-form"' in html   # the whole job's cancel stays

    html = c.get(f"/jobs/{ids['ddp']}").get_data(as_text=True)
    assert 'id="job-compute">2 nodes × 4 a4000<' in html and 'id="nodes-table"' in html
    assert "a4k-2" in html and 'id="tasks-table"' not in html
    html = c.get(f"/jobs/{ids['running']}").get_data(as_text=True)
    assert 'id="job-compute"' not in html and 'id="tasks-table"' not in html


def test_task_page_and_cancel_from_the_web(world):
    svc, app, ids, backend = world
    jid = ids["sweep"]
    c, token = client(app, "carol")
    html = c.get(f"/jobs/{jid}/tasks/1").get_data(as_text=True)
    assert "lr=0.1 bs=64" in html and f'data-url="/api/jobs/{jid}/tasks/1/log"' in html
    assert 'id="task-cancel"' in html and "Stop task" in html
    assert c.get(f"/jobs/{jid}/tasks/6").status_code == 404
    assert c.get(f"/jobs/{ids['running']}/tasks/0").status_code == 404
    r = c.post(f"/jobs/{jid}/tasks/1/cancel", data={"csrf_token": token, "next": "task"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/jobs/{jid}/tasks/1")
    assert backend.task_cancels == [(ARRAY_ID, 1, "TERM")]
    r = c.post(f"/jobs/{jid}/tasks/2/cancel", data={"csrf_token": token}, follow_redirects=True)
    assert f"job {jid} task 2 cancelled (it had not started)" in r.get_data(as_text=True)
    assert backend.task_cancels[-1] == (ARRAY_ID, 2, None)
    html = c.get(f"/jobs/{jid}").get_data(as_text=True)
    assert html.count('class="inline task-cancel"') == 3   # 1 and 2 are stopping now
    r = c.post(f"/jobs/{ids['running']}/tasks/0/cancel", data={"csrf_token": token},
               follow_redirects=True)
    assert "is not a sweep" in r.get_data(as_text=True) and backend.cancels == []
    r = c.post(f"/jobs/{jid}/tasks/3/cancel", data={})   # no CSRF token: refused
    assert r.status_code == 400 and backend.task_cancels[-1][1] == 2


# ------------------------------------------------------------------------------------ CLI

def run_cli(svc, ids, *args, ok=True, actor="alice", base=None):
    argv = (["--url", base] if base else ["--as", actor]) + list(args)
    env = {"SLIPWAY_URL": None, "SLIPWAY_USER": None,
           "SLIPWAY_TOKEN": ids[f"{actor}_token"] if base else None}
    r = CliRunner().invoke(main, argv, obj=Ctx(services=svc), env=env, catch_exceptions=False)
    assert (r.exit_code == 0) == ok, (argv, r.exit_code, r.output)
    return r.output


def check_cli(svc, ids, backend, base=None):
    jid = ids["sweep"]
    out = run_cli(svc, ids, "job", "show", str(jid), base=base)
    assert "6 tasks (at most 2 at once), each 2/8 of an a6000" in out
    assert f"Tasks of job {jid}" in out and "lr=0.001 bs=64" in out and "$0.125" in out
    assert f"results/sweep-1/{jid}/0 {'ef' * 5}" in out
    d = json.loads(run_cli(svc, ids, "job", "show", str(jid), "--json", base=base))
    assert d["shape"]["compute"].endswith("each 2/8 of an a6000") and len(d["tasks"]) == 6
    assert d["tasks"][1]["state"] == "running" and "nodes" not in d
    out = run_cli(svc, ids, "job", "show", str(ids["ddp"]), base=base)
    assert "2 nodes × 4 a4000" in out and f"Nodes of job {ids['ddp']}" in out and "a4k-2" in out
    assert "Tasks of" not in run_cli(svc, ids, "job", "show", str(ids["running"]), base=base)

    assert run_cli(svc, ids, "job", "log", str(jid), "--task", "1", "--no-follow",
                   base=base) == "task one: epoch 1\n"
    out = run_cli(svc, ids, "job", "log", str(jid), "--task", "0", ok=False, base=base)
    assert f"job {jid} task 0 ended (succeeded) without a log" in out
    out = run_cli(svc, ids, "job", "log", str(jid), "--task", "7", "--no-follow", ok=False,
                  base=base)
    assert "has tasks 0..5, not 7" in out

    out = run_cli(svc, ids, "job", "cancel", str(jid), "--task", "1", base=base)
    assert f"job {jid} task 1 is stopping" in out
    assert backend.task_cancels[-1] == (ARRAY_ID, 1, "TERM")
    out = run_cli(svc, ids, "job", "cancel", str(ids["running"]), "--task", "0", ok=False,
                  base=base)
    assert f"job {ids['running']} is not a sweep" in out and backend.cancels == []
    out = run_cli(svc, ids, "job", "cancel", str(jid), "--task", "-1", ok=False, base=base)
    assert "-1 is not in the range x>=0" in out
    out = run_cli(svc, ids, "job", "cancel", str(jid), "--task", "1", ok=False,
                  actor="mallory", base=base)
    assert f"there is no job {jid}" in out
    out = run_cli(svc, ids, "job", "log", str(jid), "--task", "1", "--no-follow", ok=False,
                  actor="mallory", base=base)
    assert f"there is no job {jid}" in out and "task one" not in out
    assert len(backend.task_cancels) == 1


def test_cli_local(world):
    svc, _app, ids, backend = world
    check_cli(svc, ids, backend)


def test_cli_remote(world):
    from tests.support.git_server import serve

    svc, app, ids, backend = world
    with serve(app) as base:
        check_cli(svc, ids, backend, base=base)
