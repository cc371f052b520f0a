"""``slipway submit``: a script with sbatch's flags becomes a Slipway job on a new branch
submit/N (portal.jobs.scripted), through the CLI (local and remote) and ``POST /api/submit``."""
from __future__ import annotations

import subprocess

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from portal.app import create_app
from portal.cli import Ctx, main
from portal.db import Job, LedgerEntry, PolicyEvent, Project
from portal.jobs import job_data, scripted
from portal.policy import grants
from portal.teams import access
from slurm_bridge.request import GpuRequest
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import add_team, make_world

SCRIPT = "#!/bin/bash\n#SBATCH --mem=8G\necho training\n"


@pytest.fixture
def world(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    yield svc, ids, backend
    svc.db.dispose()


def who(svc, name) -> access.Actor:
    from portal.db import User

    with svc.db.session() as s:
        u = s.scalar(select(User).where(User.name == name))
        return access.Actor(id=u.id, name=u.name, is_cluster_admin=u.is_cluster_admin)


def git(bare, *args) -> str:
    return subprocess.run(["git", "--git-dir", str(bare), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def bare(svc, team="nlp", project="submit"):
    return svc.config.repos_root / team / f"{project}.git"


def branches(svc, team="nlp", project="submit") -> list[str]:
    path = bare(svc, team, project)
    if not path.exists():
        return []
    return git(path, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()


def count_jobs(svc) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count(Job.id)))


def test_submit_creates_the_project_branch_and_a_pending_job_with_the_flags(world):
    svc, ids, backend = world
    done = scripted.submit_script(svc, who(svc, "dave"), SCRIPT, [
        "--gres=gpu:a4000:2", "--cpus-per-task=4", "--mem=16G", "-p", "train", "-t", "1:30:00",
        "-u", "carol", "-A", "team-nlp", "-J", "my training"])
    assert (done.team, done.project, done.branch, done.user) == ("nlp", "submit", "submit/1", "carol")
    assert done.submitted and done.state == "pending"
    assert done.message == f"job {done.job_id} queued (a4000 x2)" and done.notes == ()
    assert done.lines()[-1] == f"branch submit/1 of nlp/submit at {done.commit[:12]}"
    # the branch: one commit, no parent, the script executable, the user as author
    path = bare(svc)
    assert git(path, "rev-parse", "refs/heads/submit/1") == done.commit
    assert git(path, "ls-tree", done.commit).startswith("100755 blob ")
    assert git(path, "show", f"{done.commit}:slipway-entrypoint.sh") == SCRIPT.rstrip("\n")
    assert git(path, "rev-list", "--count", done.commit) == "1"
    assert git(path, "log", "-1", "--format=%an|%cn|%s", done.commit) == \
        "carol|dave|slipway submit: my training"
    with svc.db.session() as s:
        p = s.scalar(select(Project).where(Project.name == "submit"))
        assert p.team.name == "nlp" and p.gpu_type == "cpu"
        j = s.get(Job, done.job_id)
        assert (j.state, j.branch, j.commit_sha, j.pusher.name, j.project_id) == \
            ("pending", "submit/1", done.commit, "carol", p.id)
        assert (j.gpu_type, j.gpu_count, j.cpus, j.mem_mb, j.time_limit_min, j.partition,
                j.qos) == ("a4000", 2, 4, 16384, 90, "train", "normal")
    [(slurm_id, req)] = backend.submits
    assert slurm_id == j.slurm_job_id and req.name == f"slipway-{done.job_id}"
    assert (req.gpus, req.cpus, req.mem_mb, req.partition, req.qos, req.time_limit_min) == \
        (GpuRequest("a4000", 2), 4, 16384, "train", "normal", 90)
    assert (req.user, req.account) == ("carol", "team-nlp")
    # the next submit: the next number, the project exists now
    again = scripted.submit_script(svc, who(svc, "dave"), SCRIPT, ["-u", "alice", "-A", "nlp"])
    assert again.branch == "submit/2" and branches(svc) == ["submit/1", "submit/2"]
    # no --gres: CPU only (as sbatch), its cores from -c; the #SBATCH line's memory
    with svc.db.session() as s:
        j2 = s.get(Job, again.job_id)
        assert (j2.gpu_type, j2.gpu_count, j2.mem_mb) == ("cpu", 1, 8192)


def test_an_existing_project_and_an_over_request_adjusted_down(world):
    svc, ids, backend = world
    done = scripted.submit_script(svc, who(svc, "dave"), SCRIPT, ["--gres=gpu:a4000:8"],
                                  user="alice", team="nlp", project="proj")
    assert done.project == "proj" and done.branch == "submit/1"
    assert done.notes == ("asked a4000 x8; nodes have at most 4 — running with 4",)
    assert done.lines()[0] == "slipway: asked a4000 x8; nodes have at most 4 — running with 4"
    with svc.db.session() as s:
        j = s.get(Job, done.job_id)
        assert (j.gpu_count, j.asked) == (4, "a4000 x8, 8192M")
        assert s.scalar(select(PolicyEvent).where(PolicyEvent.action == "adjusted")) is not None
    assert backend.submits[0][1].gpus == GpuRequest("a4000", 4)


def _refused(svc, backend, actor, flags, words, status=400, **kw):
    before = count_jobs(svc)
    with pytest.raises(scripted.SubmitError) as e:
        scripted.submit_script(svc, actor, kw.pop("script", SCRIPT), flags, **kw)
    assert words in str(e.value), str(e.value)
    assert e.value.status == status
    assert count_jobs(svc) == before and backend.submits == []
    assert branches(svc) == [] and branches(svc, project="proj") == []
    return str(e.value)


@pytest.mark.parametrize("flags,words", [
    (["--gres=gpu:2"], "names no GPU type"),
    (["--mem=1PB"], "cannot read memory '1PB'"),
    (["--time=2h"], "cannot read --time"),
    (["--nodes=3"], "asked for 3 nodes; the cluster has 2"),
    (["--array", "1,3"], "Slipway runs arrays as 0-N or 0-N%M"),
    (["--array", "0-500"], "501 tasks"),
    (["--array", "0-3", "--nodes=2"], "cannot be combined"),
    (["--array=5-1"], "the range 5-1 ends before it starts"),
    (["--frob"], "unknown flag '--frob'"),
    (["--qos=high"], "normal and emergency"),
    (["--compute=nope"], "nope"),
    (["--image=nope"], "nope"),
])
def test_bad_flags_create_nothing(world, flags, words):
    svc, ids, backend = world
    _refused(svc, backend, who(svc, "dave"), flags + ["-u", "carol", "-A", "nlp"], words)
    with svc.db.session() as s:  # not even the project
        assert s.scalar(select(Project).where(Project.name == "submit")) is None


def test_who_and_where_refusals_create_nothing(world):
    svc, ids, backend = world
    dave = who(svc, "dave")
    _refused(svc, backend, dave, ["-u", "mallory", "-A", "nlp"],
             "mallory is not a member of team nlp")
    _refused(svc, backend, dave, ["-u", "nobody", "-A", "nlp"], "there is no user 'nobody'", 404)
    _refused(svc, backend, dave, ["-u", "carol", "-A", "nope"], "there is no team 'nope'", 404)
    _refused(svc, backend, dave, ["-A", "nlp"], "name the user the job runs as: --user USER")
    _refused(svc, backend, dave, ["-u", "carol"], "name the team that pays: --account TEAM")
    _refused(svc, backend, dave, ["-u", "carol"], "the user is given twice", user="alice",
             team="nlp")
    _refused(svc, backend, dave, ["-u", "carol", "-A", "nlp"], "first line must start with #!",
             script="echo hi\n")
    _refused(svc, backend, dave, ["-u", "carol", "-A", "nlp"], "names python3",
             script="#!/usr/bin/env python3\nprint(1)\n")
    # a non-admin, even the team's owner
    _refused(svc, backend, who(svc, "alice"), ["-u", "alice", "-A", "nlp"],
             "only cluster administrators may submit", 403)


def test_too_low_a_balance_creates_nothing_not_even_a_branch(world):
    svc, ids, backend = world
    with svc.db.transaction() as s:
        s.add(LedgerEntry(team_id=ids["nlp"], kind="adjustment", amount_micros=-24_500_000,
                          idempotency_key="adj", created_by="t", created_at=svc.now()))
    _refused(svc, backend, who(svc, "dave"), ["-u", "carol", "-A", "nlp", "--project", "proj"],
             "$1.00")
    add_team(svc, "poor", {"erin": "owner"})
    _refused(svc, backend, who(svc, "dave"), ["-u", "erin", "-A", "poor"], "$1.00")


def test_emergency_needs_the_users_right(world):
    svc, ids, backend = world
    dave = who(svc, "dave")
    flags = ["--qos=emergency", "--gres=gpu:a4000:1", "-u", "carol", "-A", "nlp"]
    msg = _refused(svc, backend, dave, flags, "--qos=emergency needs the emergency right")
    assert "which carol does not hold" in msg
    grants.grant(svc, dave, "carol", note="deadline")
    done = scripted.submit_script(svc, dave, SCRIPT, flags)
    assert backend.submits[0][1].qos == "emergency"
    with svc.db.session() as s:
        assert s.get(Job, done.job_id).qos == "emergency"
        assert s.scalar(select(PolicyEvent).where(PolicyEvent.action == "emergency-job")) \
            is not None


def test_a_failed_reservation_deletes_the_branch_again(world, monkeypatch):
    svc, ids, backend = world

    def boom(*_a, **_k):
        raise RuntimeError("database went away")

    before = count_jobs(svc)
    monkeypatch.setattr(job_data, "apply", boom)
    with pytest.raises(RuntimeError, match="database went away"):
        scripted.submit_script(svc, who(svc, "dave"), SCRIPT, ["-u", "carol", "-A", "nlp"])
    assert branches(svc) == [] and count_jobs(svc) == before
    assert backend.submits == []
    monkeypatch.undo()
    done = scripted.submit_script(svc, who(svc, "dave"), SCRIPT, ["-u", "carol", "-A", "nlp"])
    assert done.branch == "submit/1" and branches(svc) == ["submit/1"]


def test_a_number_used_by_a_job_is_not_used_again_after_its_branch_went(world):
    svc, ids, backend = world
    dave = who(svc, "dave")
    first = scripted.submit_script(svc, dave, SCRIPT, ["-u", "carol", "-A", "nlp"])
    with svc.db.transaction() as s:
        s.get(Job, first.job_id).state = "succeeded"
    git(bare(svc), "update-ref", "-d", "refs/heads/submit/1")
    assert scripted.submit_script(svc, dave, SCRIPT, ["-u", "carol", "-A", "nlp"]).branch == \
        "submit/2"


# ------------------------------------------------------------------------------ front doors

def test_api_submit(world):
    svc, ids, backend = world
    c = create_app(svc).test_client()

    def post(token, body):
        return c.post("/api/submit", headers={"Authorization": f"Bearer {ids[token + '_token']}"},
                      json=body)

    r = post("alice", {"script": SCRIPT, "flags": ["-u", "alice", "-A", "nlp"]})
    assert r.status_code == 403 and "only cluster administrators" in r.get_json()["error"]
    r = post("dave", {"script": SCRIPT, "flags": "--gres=gpu:a4000:1"})
    assert r.status_code == 400 and "flags must be a list" in r.get_json()["error"]
    r = post("dave", {"script": SCRIPT, "flags": [], "user": "carol", "team": "nlp", "x": 1})
    assert r.status_code == 400 and "unknown field" in r.get_json()["error"]
    r = post("dave", {"script": SCRIPT, "flags": ["--array=2-3"], "user": "carol", "team": "nlp"})
    assert r.status_code == 400 and "Slipway runs arrays as 0-N" in r.get_json()["error"]
    r = post("dave", {"script": SCRIPT, "flags": ["--gres=gpu:a6000:1"], "user": "carol",
                      "team": "nlp"})
    assert r.status_code == 201, r.get_json()
    d = r.get_json()
    assert d["ok"] and d["state"] == "pending" and d["branch"] == "submit/1"
    assert d["message"] == f"job {d['job']} queued (a6000 x1)" and d["submitted"] is True
    assert backend.submits[0][1].gpus == GpuRequest("a6000", 1)


def test_cli_submit_local_and_remote(world, tmp_path):
    from tests.support.git_server import serve

    svc, ids, backend = world
    runner = CliRunner()
    script = tmp_path / "train.sh"
    script.write_text(SCRIPT)

    def run(*args, ok=True, actor=None, url=None, token=None, stdin=None):
        argv = (["--as", actor] if actor else []) + (["--url", url] if url else []) + list(args)
        env = {"SLIPWAY_URL": None, "SLIPWAY_TOKEN": token, "SLIPWAY_USER": None}
        r = runner.invoke(main, argv, obj=Ctx(services=svc), env=env, input=stdin,
                          catch_exceptions=False)
        assert (r.exit_code == 0) == ok, (argv, r.exit_code, r.output)
        return r.output

    out = run("submit", "--gres=gpu:a4000:1", "-t", "60", "-c4", "-u", "carol", "-A", "nlp",
              str(script))
    [(_sid, req)] = backend.submits
    jid = int(req.name.split("-")[1])
    assert out.splitlines() == [f"slipway: job {jid} queued (a4000 x1)",
                                f"branch submit/1 of nlp/submit at {_commit(svc, jid)[:12]}"]
    assert req.cpus == 4 and req.time_limit_min == 60
    out = run("submit", "-u", "carol", "-A", "nlp", "-", stdin=SCRIPT)  # standard input
    assert "queued (cpu x1)" in out and "branch submit/2" in out
    assert "only cluster administrators" in run("submit", "-u", "carol", "-A", "nlp",
                                                str(script), actor="alice", ok=False)
    assert "name the script" in run("submit", "-u", "carol", ok=False)
    assert "arguments after the script" in run("submit", str(script), "x", ok=False)
    assert "asked for 4 nodes; the cluster has 2" in \
        run("submit", "-N", "4", "-u", "carol", "-A", "nlp", str(script), ok=False)
    with serve(create_app(svc)) as base:
        out = run("submit", "--gres=gpu:a4000:1", "-u", "carol", "-A", "nlp", str(script),
                  url=base, token=ids["dave_token"])
        assert "queued (a4000 x1)" in out and "branch submit/3 of nlp/submit" in out
        out = run("submit", "-u", "carol", "-A", "nlp", str(script), url=base,
                  token=ids["alice_token"], ok=False)
        assert "only cluster administrators" in out
    assert len(backend.submits) == 3


def _commit(svc, jid) -> str:
    with svc.db.session() as s:
        return s.get(Job, jid).commit_sha
