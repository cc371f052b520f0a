"""The ``slipway`` CLI through click's CliRunner (fake Slurm backend, temp dirs)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.cli import Ctx, main
from portal.db import AccessToken, Job, Project
from tests.support.fakes import FakeBackend, make_services


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
    # an owner requests funds; the operator (a cluster administrator) adds them
    assert "request-funds" in run("team", "add-funds", "nlp", "25.00", actor="alice@example.com", ok=False)
    assert "balance $25.00" in run("team", "add-funds", "nlp", "25.00", "--note", "grant")
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
    # outsiders: the job does not exist for them (the web's rule)
    assert "there is no job 1" in run("job", "show", "1", actor="eve", ok=False)
    assert "has no log yet" in run("job", "log", "1", "--no-follow", ok=False)
    log = svc.config.jobs_dir / "1" / "output.log"
    log.parent.mkdir(parents=True)
    log.write_text("hello from the job\n")
    assert run("job", "log", "1", "--no-follow") == "hello from the job\n"
    assert "there is no job 1" in run("job", "cancel", "1", actor="eve", ok=False)
    assert "files will be pushed" in run("job", "cancel", "1", actor="alice")
    assert backend.cancels == [(55, "TERM", True)]
    # the job ended: following prints the whole log and returns
    with svc.db.transaction() as s:
        s.get(Job, 1).state = "cancelled"
    assert run("job", "log", "1") == "hello from the job\n"


# ------------------------------------------------------------------ roles: the web's rules

def _roles(svc, team):
    from portal.db import Membership, Team, User
    with svc.db.session() as s:
        return dict(s.execute(select(User.name, Membership.role).join(Membership, Membership.user_id == User.id)
                              .join(Team, Membership.team_id == Team.id).where(Team.name == team)).all())


def test_member_changes_keep_owners(cli):
    """`team add-member/remove-member` use the web's operations: administrators cannot remove or
    demote an owner, and nobody removes or demotes the last owner."""
    run, svc, _ = cli
    for name in ("alice", "bob", "carol", "erin"):
        run("user", "add", name)
    run("team", "create", "nlp", "--owner", "alice")
    run("team", "add-member", "nlp", "bob", "--role", "administrator")
    run("team", "add-member", "nlp", "carol")
    before = _roles(svc, "nlp")
    assert before == {"alice": "owner", "bob": "administrator", "carol": "user"}
    assert "administrators cannot remove an owner" in run("team", "remove-member", "nlp", "alice",
                                                          actor="bob", ok=False)
    assert "only an owner" in run("team", "add-member", "nlp", "alice", "--role", "user", actor="bob", ok=False)
    assert "only an owner" in run("team", "add-member", "nlp", "erin", "--role", "owner", actor="bob", ok=False)
    assert "may not add or change members" in run("team", "add-member", "nlp", "erin", actor="carol", ok=False)
    # even the operator (and the owner herself) cannot leave the team without an owner
    assert "last owner" in run("team", "add-member", "nlp", "alice", "--role", "user", ok=False)
    assert "last owner" in run("team", "remove-member", "nlp", "alice", ok=False)
    assert "last owner" in run("team", "remove-member", "nlp", "alice", actor="alice", ok=False)
    assert _roles(svc, "nlp") == before
    # what administrators may do, they still do
    run("team", "add-member", "nlp", "erin", actor="bob")
    run("team", "remove-member", "nlp", "erin", actor="bob")
    assert "erin is not a member" in run("team", "remove-member", "nlp", "erin", ok=False)
    # with a second owner the first may step down
    run("team", "add-member", "nlp", "bob", "--role", "owner", actor="alice")
    run("team", "add-member", "nlp", "alice", "--role", "user", actor="bob")
    assert _roles(svc, "nlp") == {"alice": "user", "bob": "owner", "carol": "user"}


def test_project_create_needs_administrator_and_members_cancel_any_job(cli):
    run, svc, backend = cli
    for name in ("alice", "bob", "carol"):
        run("user", "add", name)
    run("team", "create", "nlp", "--owner", "alice")
    run("team", "add-member", "nlp", "bob", "--role", "administrator")
    run("team", "add-member", "nlp", "carol")
    assert "needs role: administrator or owner" in run("project", "create", "nlp", "p", actor="carol", ok=False)
    assert not (svc.config.repos_root / "nlp" / "p.git").exists()
    run("project", "create", "nlp", "p", actor="bob")
    with svc.db.transaction() as s:
        pid = s.scalar(select(Project.id).where(Project.name == "p"))
        s.add(Job(project_id=pid, branch="b", commit_sha="c" * 40, pusher_id=1, state="pending",
                  slurm_job_id=77, gpu_type="a4000", gpu_count=1, image="python", time_limit_min=60))
    # carol (a plain member) cancels alice's job
    assert "cancelled" in run("job", "cancel", "1", actor="carol")
    assert backend.cancels == [(77, None, False)]
    with svc.db.session() as s:
        assert s.get(Job, 1).cancel_reason == "cancelled by carol"


# ------------------------------------------------------------------ remote mode (/api/)

@pytest.fixture
def site(tmp_path):
    """A real portal (make_world's teams, jobs, ledger) served by waitress on 127.0.0.1."""
    from tests.support.git_server import serve
    from portal.app import create_app
    from tests.support.web import make_world

    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    runner = CliRunner()

    def run(*args, ok=True, actor=None, url=None, token=None, env=None):
        argv = (["--as", actor] if actor else []) + (["--url", url] if url else []) + list(args)
        e = {"SLIPWAY_URL": None, "SLIPWAY_TOKEN": token, "SLIPWAY_USER": None, **(env or {})}
        r = runner.invoke(main, argv, obj=Ctx(services=svc), env=e, catch_exceptions=False)
        assert (r.exit_code == 0) == ok, (argv, r.exit_code, r.output)
        return r.output

    with serve(create_app(svc)) as base:
        yield run, svc, ids, backend, base
    svc.db.dispose()


def test_remote_output_is_identical_to_local(site):
    run, svc, ids, backend, base = site
    for who in ("alice", "carol"):
        def remote(*args, who=who):
            return run(*args, url=base, token=ids[f"{who}_token"])

        for args in [("job", "list"), ("job", "list", "--team", "nlp", "--state", "active"),
                     ("job", "list", "--json"), ("job", "list", "--limit", "1"),
                     ("job", "show", str(ids["running"])), ("job", "show", str(ids["succeeded"]), "--json"),
                     ("job", "log", str(ids["running"]), "--no-follow"),
                     ("job", "log", str(ids["succeeded"])),       # ended: follows to the end and returns
                     ("project", "list"), ("project", "list", "--team", "nlp"), ("project", "show", "nlp/proj")]:
            local = run(*args, actor=who)
            assert remote(*args) == local, (who, args)
            assert local.strip()
    for args in [("team", "ledger", "nlp"), ("team", "ledger", "nlp", "--csv")]:
        assert run(*args, url=base, token=ids["alice_token"]) == run(*args, actor="alice"), args
    out = run("job", "show", str(ids["running"]), url=base, token=ids["carol_token"])
    assert "carol" in out and "a4k-1" in out and "$0.00" in out
    shown = __import__("json").loads(run("job", "show", str(ids["running"]), "--json", url=base,
                                         token=ids["carol_token"]))
    assert shown["project"] == "nlp/proj" and shown["pusher"] == "carol"
    assert shown["log"] == str(svc.config.jobs_dir / str(ids["running"]) / "output.log")
    out = run("team", "ledger", "nlp", "--csv", url=base, token=ids["alice_token"])
    assert out.splitlines()[0].startswith("id,created_at,kind,amount") and ",deposit,25.000000," in out
    # the operator and a cluster admin see every team
    assert "vision/secret" in run("project", "list", url=base, token=ids["dave_token"])
    assert "vision/secret" not in run("project", "list", url=base, token=ids["alice_token"])


def test_remote_writes(site, tmp_path):
    run, svc, ids, backend, base = site
    tokfile = tmp_path / "token"
    tokfile.write_text(ids["alice_token"] + "\n")

    def alice(*args, ok=True):
        return run("--token-file", str(tokfile), *args, url=base, ok=ok)

    out = alice("project", "create", "nlp", "remote-made", "--gpus", "a6000:2", "--time", "2h")
    assert "project nlp/remote-made: a6000 x2, image python, 120 min" in out
    assert f"git remote add slipway {svc.config.repo_url('nlp', 'remote-made')}" in out
    assert (svc.config.repos_root / "nlp" / "remote-made.git").is_dir()
    local = run("project", "create", "nlp", "local-made", "--gpus", "a6000:2", "--time", "2h", actor="alice")
    assert out.replace("remote-made", "local-made") == local
    assert "only cluster administrators add funds" in alice("team", "add-funds", "nlp", "10.50", ok=False)
    out = run("team", "add-funds", "nlp", "10.50", "--note", "grant 9", url=base, token=ids["dave_token"])
    assert out.strip() == "added $10.50 to team nlp; balance $34.75"
    assert "grant 9" in run("team", "ledger", "nlp", actor="alice")
    assert "files will be pushed" in alice("job", "cancel", str(ids["running"]))
    assert backend.cancels == [(1001, "TERM", True)]
    with svc.db.session() as s:
        assert s.get(Job, ids["running"]).cancel_reason == "cancelled by alice"


def test_remote_errors_print_the_api_message(site, tmp_path):
    run, svc, ids, backend, base = site

    def as_(who, *args):
        return run(*args, url=base, token=ids[f"{who}_token"], ok=False)

    # 403: a plain user
    assert "Error: carol may not see the ledger in team nlp (needs role: administrator or owner)" in \
        as_("carol", "team", "ledger", "nlp")
    assert "only cluster administrators add funds" in as_("carol", "team", "add-funds", "nlp", "5")
    assert "needs role: administrator or owner" in as_("carol", "project", "create", "nlp", "nope")
    # 404: another team's objects do not exist
    assert "there is no job" in as_("mallory", "job", "show", str(ids["running"]))
    assert "there is no job" in as_("mallory", "job", "log", str(ids["running"]), "--no-follow")
    assert "there is no job" in as_("mallory", "job", "cancel", str(ids["running"]))
    assert "there is no project nlp/proj" in as_("mallory", "project", "show", "nlp/proj")
    assert "there is no team 'nlp'" in as_("mallory", "job", "list", "--team", "nlp")
    # 400 / 409: bad input, conflicts
    assert "not a plain amount" in as_("dave", "team", "add-funds", "nlp", "1e3")
    assert "unknown state" in as_("alice", "job", "list", "--state", "weird")
    assert "allows at most 4" in as_("alice", "project", "create", "nlp", "big", "--gpus", "a4000:8")
    assert "exists already" in as_("alice", "project", "create", "nlp", "proj")
    assert "already ended" in as_("alice", "job", "cancel", str(ids["succeeded"]))
    assert "has no log yet" in as_("alice", "job", "log", str(ids["pending"]), "--no-follow")
    assert backend.cancels == []
    # credentials and setup
    assert "invalid or revoked access token" in run("job", "list", url=base, token="swp_not-a-token", ok=False)
    assert "needs an access token" in run("job", "list", url=base, ok=False)
    assert "cannot read the token file" in run("--token-file", str(tmp_path / "none"), "job", "list",
                                               url=base, ok=False)
    assert "--as works only on the server" in run("job", "list", url=base, actor="alice",
                                                  token=ids["alice_token"], ok=False)
    out = run("user", "add", "zed", url=base, token=ids["dave_token"], ok=False)
    assert "works only on the Slipway server" in out
    assert "cannot reach Slipway" in run("job", "list", url="http://127.0.0.1:9", token="swp_x" * 4, ok=False)
    assert "without Slipway's JSON" in run("job", "list", url=base + "/static", token=ids["alice_token"], ok=False)
    # SLIPWAY_URL selects remote mode too
    out = run("job", "list", token=ids["alice_token"], env={"SLIPWAY_URL": base})
    assert "exp-1" in out
    # the token never goes over plain http to another host unless asked to
    out = run("job", "list", url="http://slipway.example:8000", token=ids["alice_token"], ok=False)
    assert "refusing to send your access token over plain http:// to slipway.example" in out
    from portal.cli import RemoteSource  # (built, never sent: no traffic leaves this machine)
    assert RemoteSource("http://slipway.example:8000", "swp_x", allow_http=True).url == \
        "http://slipway.example:8000"
    assert RemoteSource("http://[::1]:8000/", "swp_x").url == "http://[::1]:8000"


# ------------------------------------------------------------------ job log follows

def _follow(argv, env, log, set_state, ids):
    """Start `slipway job log` (a real process), grow the log while it runs, end the job: every
    line comes out while the job runs, and the command exits once the job has ended."""
    import os
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "portal.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        assert proc.stdout.readline() == "epoch 1 loss 0.93\n"
        assert proc.stdout.readline() == "epoch 2 loss 0.71\n"
        with log.open("a") as fh:                 # the job writes on: the command prints it
            fh.write("epoch 3 loss 0.55\n")
        assert proc.stdout.readline() == "epoch 3 loss 0.55\n"
        time.sleep(0.5)
        assert proc.poll() is None                # still running: the job has not ended
        with log.open("a") as fh:
            fh.write("epoch 4 loss 0.41\ndone\n")
        set_state("succeeded")
        t0 = time.monotonic()
        rest, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert rest == "epoch 4 loss 0.41\ndone\n"
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_job_log_follows_until_the_job_ends_remote(site):
    from portal.jobs import runner_spec
    run, svc, ids, backend, base = site
    jid = ids["running"]

    def set_state(state):
        with svc.db.transaction() as s:
            s.get(Job, jid).state = state

    _follow(["--url", base, "job", "log", str(jid), "--interval", "0.1"],
            {"SLIPWAY_TOKEN": ids["carol_token"], "SLIPWAY_URL": "", "SLIPWAY_USER": ""},
            runner_spec.log_path(svc, jid), set_state, ids)


def test_job_log_follows_until_the_job_ends_local(site):
    from portal.jobs import runner_spec
    run, svc, ids, backend, base = site
    jid = ids["running"]

    def set_state(state):
        with svc.db.transaction() as s:
            s.get(Job, jid).state = state

    cfg = svc.config
    env = {"SLIPWAY_DATA_DIR": str(cfg.data_dir), "SLIPWAY_DATABASE_URL": cfg.database_url,
           "SLIPWAY_HOOK_SECRET": cfg.hook_secret, "SLIPWAY_SECRET_KEY": cfg.secret_key,
           "SLIPWAY_URL": "", "SLIPWAY_TOKEN": "", "SLIPWAY_USER": "", "SLIPWAY_CONFIG": ""}
    _follow(["--as", "carol", "job", "log", str(jid), "--interval", "0.1"], env,
            runner_spec.log_path(svc, jid), set_state, ids)


def test_non_members_get_not_found_as_in_the_web_and_the_api(cli):
    """One access rule for the three front doors: to a non-member a team does not exist (its
    existence never leaks as "may not …"); a member without the role gets "may not"."""
    run, svc, _ = cli
    for name in ("alice", "bob", "eve"):
        run("user", "add", name)
    run("team", "create", "nlp", "--owner", "alice")
    run("team", "add-member", "nlp", "bob")
    for args in [("team", "balance", "nlp"), ("team", "ledger", "nlp"), ("team", "add-member", "nlp", "eve"),
                 ("team", "remove-member", "nlp", "bob"), ("team", "request-funds", "nlp", "5"),
                 ("project", "create", "nlp", "p"), ("job", "list", "--team", "nlp")]:
        out = run(*args, actor="eve", ok=False)
        assert "there is no team 'nlp'" in out and "may not" not in out, args
        # and a team that does not exist answers the same
        assert "there is no team 'ghost'" in run(*(a.replace("nlp", "ghost") for a in args), actor="eve",
                                                 ok=False), args
    assert "may not add or change members" in run("team", "add-member", "nlp", "eve", actor="bob", ok=False)
    assert "nlp: $0.00" in run("team", "balance", "nlp", actor="bob")
    # cluster-administrator-only commands: one check, on the service layer's Actor
    assert "only cluster administrators may add users" in run("user", "add", "zed", actor="bob", ok=False)
    assert "only cluster administrators may see every team's balance" in run("team", "balance", actor="bob",
                                                                           ok=False)
    assert "only cluster administrators may run the reconciler" in run("reconcile", "--once", actor="bob",
                                                                     ok=False)
    assert "only cluster administrators may create tokens for other users" in run(
        "token", "create", "alice", actor="bob", ok=False)
    assert "there is no user 'ghost'; create it with" in run("team", "ledger", "nlp", actor="ghost", ok=False)
