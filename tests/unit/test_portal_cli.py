"""The ``slipway`` CLI through click's CliRunner (fake Slurm backend, temp dirs)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.cli import Ctx, main
from portal.db import AccessToken, Job, Project
from portal.testing import FakeBackend, make_services


@pytest.fixture
def cli(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    runner = CliRunner()

    def run(*args, ok=True, actor=None):
        argv = (["--as", actor] if actor else []) + list(args)
        r = runner.invoke(main, argv, obj=Ctx(services=svc), catch_exceptions=False)
        if ok:
            assert r.exit_code == 0, r.output
        else:
            assert r.exit_code != 0, r.output
        return r.output

    yield run, svc, backend
    svc.db.dispose()


def test_user_team_money_flow(cli):
    run, svc, _ = cli
    assert "personal team alice-example-com" in run("user", "add", "alice@example.com", "--unix-user", "alice")
    run("user", "add", "bob", "--unix-user", "bob")
    assert "exists already" in run("user", "add", "bob", ok=False)
    run("team", "create", "nlp", "--owner", "alice@example.com")
    run("team", "add-member", "nlp", "bob", "--role", "user")
    assert "may not add funds" in run("team", "add-funds", "nlp", "5.00", actor="bob", ok=False)
    assert "balance $25.00" in run("team", "add-funds", "nlp", "25.00", "--note", "grant", actor="alice@example.com")
    assert "not a plain amount" in run("team", "add-funds", "nlp", "1e3", ok=False)
    assert "more than 2 decimal places" in run("team", "add-funds", "nlp", "1.005", ok=False)
    assert "nlp: $25.00" in run("team", "balance", "nlp")
    out = run("team", "ledger", "nlp", "--csv")
    assert out.splitlines()[0].startswith("id,created_at,kind,amount")
    assert ",deposit,25.000000," in out and "grant" in out
    assert "no team 'ghost'" in run("team", "ledger", "ghost", ok=False)


def test_token_create_prints_once_and_stores_hash(cli):
    run, svc, _ = cli
    run("user", "add", "alice")
    out = run("token", "create", "alice", "--name", "laptop")
    tok = out.splitlines()[0].strip()
    assert tok.startswith("swp_")
    with svc.db.session() as s:
        row = s.scalar(select(AccessToken))
        assert row.name == "laptop" and tok not in (row.token_hash, row.prefix) and len(row.token_hash) == 64
    assert "there is no user" in run("token", "create", "nobody", ok=False)


def test_project_create_show_delete(cli):
    run, svc, _ = cli
    run("user", "add", "alice")
    out = run("project", "create", "alice", "proj", "--gpus", "a4000:2", "--image", "python", "--time", "2h")
    assert "git remote add slipway http://127.0.0.1:8000/git/alice/proj.git" in out
    assert (svc.config.repos_root / "alice" / "proj.git" / "HEAD").exists()
    assert "a4000 x2" in run("project", "show", "alice/proj")
    assert "alice/proj" in run("project", "list")
    assert "allows at most 4" in run("project", "create", "alice", "p2", "--gpus", "a4000:8", ok=False)
    assert "unknown image" in run("project", "create", "alice", "p2", "--image", "nope", ok=False)
    assert "invalid project" in run("project", "create", "alice", "Bad/Name", ok=False)
    assert "exists already" in run("project", "create", "alice", "proj", ok=False)
    assert "--confirm must be exactly" in run("project", "delete", "alice/proj", "--confirm", "x", ok=False)
    run("project", "delete", "alice/proj", "--confirm", "alice/proj")
    assert not (svc.config.repos_root / "alice" / "proj.git").exists()
    with svc.db.session() as s:
        assert s.scalar(select(Project)) is None


def test_job_list_show_cancel_log(cli):
    run, svc, backend = cli
    run("user", "add", "alice")
    run("user", "add", "eve")
    run("project", "create", "alice", "proj")
    with svc.db.transaction() as s:
        s.add(Job(project_id=1, branch="exp-1", commit_sha="c" * 40, pusher_id=1, state="running",
                  slurm_job_id=55, gpu_type="a4000", gpu_count=1, image="python", time_limit_min=60))
    assert "exp-1" in run("job", "list", "--team", "alice", "--state", "active")
    assert "unknown state" in run("job", "list", "--state", "weird", ok=False)
    assert "running" in run("job", "show", "1")
    assert "no job 9" in run("job", "show", "9", ok=False)
    assert "may not see job 1" in run("job", "show", "1", actor="eve", ok=False)
    assert "has no log yet" in run("job", "log", "1", ok=False)
    log = svc.config.jobs_dir / "1" / "output.log"
    log.parent.mkdir(parents=True)
    log.write_text("hello from the job\n")
    assert "hello from the job" in run("job", "log", "1")
    assert "may not cancel" in run("job", "cancel", "1", actor="eve", ok=False)
    assert "files will be pushed" in run("job", "cancel", "1", actor="alice")
    assert backend.cancels == [(55, "TERM", True)]
