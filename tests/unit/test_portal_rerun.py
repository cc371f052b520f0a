"""Run a job again without an empty commit: the service (``jobs.rerun``), the API, the CLI (local
and remote) and the job page's "Run again" button."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.app import create_app
from portal.cli import Ctx, main
from portal.db import Job, LedgerEntry, Project
from portal.jobs import rerun
from tests.support.fakes import FakeBackend, commit_to_bare, git, make_services
from portal.teams import access
from tests.support.web import csrf_token, login, make_world

EP = {"slipway-entrypoint.sh": "echo hi\n"}


@pytest.fixture
def world(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    bare = svc.config.repos_root / "nlp" / "proj.git"
    # the succeeded job's branch exp-0: its pushed commit, then the results it pushed back
    commit_to_bare(bare, tmp_path / "w", EP, branch="exp-0")
    tip = commit_to_bare(bare, tmp_path / "w", {"results.txt": "42\n"}, branch="exp-0")
    git("--git-dir", str(bare), "update-ref", "refs/heads/exp-0", tip)
    yield svc, ids, backend, tip, tmp_path
    svc.db.dispose()


def actor(svc, name):
    from portal.db import User

    with svc.db.session() as s:
        u = s.scalar(select(User).where(User.name == name))
        return access.Actor(id=u.id, name=u.name, is_cluster_admin=u.is_cluster_admin)


def job(svc, jid) -> Job:
    with svc.db.session() as s:
        return s.get(Job, jid)


def pusher(svc, jid) -> str:
    with svc.db.session() as s:
        return s.get(Job, jid).pusher.name


def test_rerun_runs_the_branch_tip_with_the_old_jobs_settings(world):
    svc, ids, backend, tip, _ = world
    with svc.db.transaction() as s:  # the project's settings changed since: the old job's count
        s.get(Project, ids["proj"]).gpu_type = "a6000"
        old = s.get(Job, ids["succeeded"])
        old.gpu_count, old.time_limit_min = 3, 45
    new_id, msg = rerun.rerun_job(svc, actor(svc, "carol"), ids["succeeded"])
    assert msg == (f"job {ids['succeeded']} runs again as job {new_id} at {tip[:12]}: "
                   f"job {new_id} queued (a4000 x3)")
    j = job(svc, new_id)
    assert (j.state, j.branch, j.commit_sha, j.gpu_type, j.gpu_count, j.time_limit_min, j.image) == \
        ("pending", "exp-0", tip, "a4000", 3, 45, "python")
    assert pusher(svc, new_id) == "carol" and j.slurm_job_id == backend.submits[0][0]
    [(_, req)] = backend.submits
    assert req.name == f"slipway-{new_id}" and req.time_limit_min == 45
    # one active job per branch: the new job is active, so another rerun is refused
    with pytest.raises(rerun.RerunError) as e:
        rerun.rerun_job(svc, actor(svc, "alice"), ids["succeeded"])
    assert e.value.status == 409 and f"already has job {new_id} pending" in str(e.value)
    assert len(backend.submits) == 1


def test_rerun_access_outsiders_get_not_found_admins_may(world):
    svc, ids, backend, tip, _ = world
    for who in ("mallory", "erin"):
        with pytest.raises(rerun.RerunError) as e:
            rerun.rerun_job(svc, actor(svc, who), ids["succeeded"])
        assert e.value.status == 404 and str(e.value) == f"there is no job {ids['succeeded']}"
    with pytest.raises(rerun.RerunError) as e:
        rerun.rerun_job(svc, actor(svc, "alice"), 999999)
    assert e.value.status == 404
    new_id, _ = rerun.rerun_job(svc, actor(svc, "dave"), ids["succeeded"])  # cluster admin
    assert pusher(svc, new_id) == "dave"
    assert backend.submits and job(svc, new_id).state == "pending"


def test_the_servers_operator_reruns_as_the_old_pusher(world):
    svc, ids, _backend, _tip, _ = world
    new_id, _ = rerun.rerun_job(svc, access.Actor(id=0, name="operator", is_cluster_admin=True),
                                ids["succeeded"])
    assert pusher(svc, new_id) == "alice"


@pytest.mark.parametrize("case,expect", [
    ("active", "already has job"),
    ("branch gone", "branch exp-0 no longer exists"),
    ("no entrypoint", "slipway-entrypoint.sh"),
    ("image gone", "nope"),
    ("gpus", "unknown GPU type 'h100'"),
    ("balance", "$1.00"),
])
def test_rerun_refusals_reserve_nothing(world, case, expect):
    svc, ids, backend, tip, tmp_path = world
    target = ids["succeeded"]
    bare = svc.config.repos_root / "nlp" / "proj.git"
    if case == "active":
        target = ids["running"]
    elif case == "branch gone":
        git("--git-dir", str(bare), "update-ref", "-d", "refs/heads/exp-0")
    elif case == "no entrypoint":
        git("rm", "-q", "slipway-entrypoint.sh", cwd=tmp_path / "w")
        sha = commit_to_bare(bare, tmp_path / "w", {}, branch="exp-0")
        git("--git-dir", str(bare), "update-ref", "refs/heads/exp-0", sha)
    elif case in ("image gone", "gpus"):
        with svc.db.transaction() as s:
            old = s.get(Job, target)
            if case == "image gone":
                old.image = "nope"
            else:
                old.gpu_type = "h100"   # a type the cluster no longer has
    elif case == "balance":
        with svc.db.transaction() as s:
            s.add(LedgerEntry(team_id=ids["nlp"], kind="adjustment", amount_micros=-24_000_000,
                              idempotency_key="adj", created_by="t", created_at=svc.now()))
    with svc.db.session() as s:
        before = s.scalar(select(Job.id).order_by(Job.id.desc()))
    with pytest.raises(rerun.RerunError) as e:
        rerun.rerun_job(svc, actor(svc, "alice"), target)
    assert e.value.status == 409 and expect in str(e.value), str(e.value)
    with svc.db.session() as s:
        assert s.scalar(select(Job.id).order_by(Job.id.desc())) == before
    assert backend.submits == []


# ------------------------------------------------------------------------------ API and web

def test_api_rerun(world):
    svc, ids, backend, tip, _ = world
    c = create_app(svc).test_client()

    def post(url, who):
        return c.post(url, headers={"Authorization": f"Bearer {ids[who + '_token']}"}, json={})

    r = post(f"/api/jobs/{ids['succeeded']}/rerun", "mallory")
    assert r.status_code == 404 and r.get_json()["ok"] is False
    r = post(f"/api/jobs/{ids['succeeded']}/rerun", "carol")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["ok"] and body["rerun_of"] == ids["succeeded"] and body["state"] == "pending"
    assert job(svc, body["job"]).commit_sha == tip and f"job {body['job']} queued" in body["message"]
    r = post(f"/api/jobs/{ids['succeeded']}/rerun", "alice")
    assert r.status_code == 409 and "already has job" in r.get_json()["error"]


def test_web_run_again_button(world):
    svc, ids, backend, tip, _ = world
    c = create_app(svc).test_client()
    login(c, "carol")
    page = c.get(f"/jobs/{ids['succeeded']}").get_data(as_text=True)
    assert 'id="rerun-form"' in page and f'/jobs/{ids["succeeded"]}/rerun' in page
    assert 'id="rerun-form"' not in c.get(f"/jobs/{ids['running']}").get_data(as_text=True)
    # CSRF like the cancel button: a post without the token changes nothing
    r = c.post(f"/jobs/{ids['succeeded']}/rerun")
    assert r.status_code == 400 and backend.submits == []
    r = c.post(f"/jobs/{ids['succeeded']}/rerun", data={"csrf_token": csrf_token(c)})
    assert r.status_code == 302
    [(_, req)] = backend.submits
    new_id = int(req.name.split("-")[1])
    assert r.headers["Location"].endswith(f"/jobs/{new_id}")
    assert "runs again as job" in c.get(r.headers["Location"]).get_data(as_text=True)
    # refused: back to the old job's page with the reason
    r = c.post(f"/jobs/{ids['succeeded']}/rerun", data={"csrf_token": csrf_token(c)},
               follow_redirects=True)
    assert r.status_code == 200 and "already has job" in r.get_data(as_text=True)
    c2 = create_app(svc).test_client()
    login(c2, "mallory")
    r = c2.post(f"/jobs/{ids['succeeded']}/rerun", data={"csrf_token": csrf_token(c2)})
    assert r.status_code == 404 and len(backend.submits) == 1


# ------------------------------------------------------------------------------------ CLI

def test_cli_rerun_local_and_remote(world, tmp_path):
    from tests.support.git_server import serve

    svc, ids, backend, tip, _ = world
    runner = CliRunner()

    def run(*args, ok=True, actor=None, url=None, token=None):
        argv = (["--as", actor] if actor else []) + (["--url", url] if url else []) + list(args)
        env = {"SLIPWAY_URL": None, "SLIPWAY_TOKEN": token, "SLIPWAY_USER": None}
        r = runner.invoke(main, argv, obj=Ctx(services=svc), env=env, catch_exceptions=False)
        assert (r.exit_code == 0) == ok, (argv, r.exit_code, r.output)
        return r.output

    out = run("job", "rerun", str(ids["succeeded"]), actor="carol")
    assert f"job {ids['succeeded']} runs again as job" in out and "queued (a4000 x1)" in out
    assert "already has job" in run("job", "rerun", str(ids["succeeded"]), actor="alice", ok=False)
    assert "there is no job" in run("job", "rerun", str(ids["succeeded"]), actor="mallory", ok=False)
    with svc.db.transaction() as s:  # that job ended: the branch is free again
        s.scalar(select(Job).where(Job.state == "pending", Job.branch == "exp-0")).state = "failed"
    with serve(create_app(svc)) as base:
        out = run("job", "rerun", str(ids["succeeded"]), url=base, token=ids["alice_token"])
        assert f"job {ids['succeeded']} runs again as job" in out
        out = run("job", "rerun", str(ids["succeeded"]), url=base, token=ids["mallory_token"], ok=False)
        assert f"there is no job {ids['succeeded']}" in out
    assert len(backend.submits) == 2
