"""Issue 9, CLI nits: tables never cut values (piped: full width; on a terminal: folded, no
ellipsis) and never read values as markup; ``--json`` on every listing/show command (the API's
shapes); ``slipway token list/revoke`` (local and remote); ``job delete`` in remote mode."""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import select

from portal.cli import output as cli_output
from portal.cli import Ctx, main
from portal.db import AccessToken, Job
from tests.support.fakes import FakeBackend, make_services
from portal.identity import user_tokens
from tests.support.web import add_job, add_team, add_user, make_world

LONG_BRANCH = "experiments/" + "very-long-branch-name-" * 6 + "end"
LONG_REASON = "Slurm says: " + " ".join(f"word{i}" for i in range(60)) + " THE-END"


@pytest.fixture
def site(tmp_path):
    """make_world's portal, for local runs (``actor=``) and remote ones (``url=`` + ``token=``)."""
    from tests.support.git_server import serve
    from portal.app import create_app

    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    ids["long"] = add_job(svc, ids["proj"], branch=LONG_BRANCH, state="failed", pusher="alice",
                          reason=LONG_REASON, ended_at=svc.now())
    ids["markup"] = add_job(svc, ids["proj"], branch="[red]x[/red]:smile:", state="failed", pusher="alice",
                            ended_at=svc.now())
    runner = CliRunner()

    def run(*args, ok=True, actor=None, url=None, token=None):
        argv = (["--as", actor] if actor else []) + (["--url", url] if url else []) + list(args)
        env = {"SLIPWAY_URL": None, "SLIPWAY_TOKEN": token, "SLIPWAY_USER": None}
        r = runner.invoke(main, argv, obj=Ctx(services=svc), env=env, catch_exceptions=False)
        assert (r.exit_code == 0) == ok, (argv, r.output)
        return r.output

    with serve(create_app(svc)) as base:
        yield run, svc, ids, base
    svc.db.dispose()


def line_with(out: str, text: str) -> str:
    return next(ln for ln in out.splitlines() if text in ln)


def test_piped_tables_keep_whole_values_on_one_line(site):
    run, svc, ids, _ = site
    out = run("job", "list", actor="alice")
    assert "…" not in out
    row = line_with(out, f"│ {ids['long']} ")
    assert LONG_BRANCH in row and LONG_REASON in row  # one line per job: grep finds it whole
    assert "[red]x[/red]:smile:" in out  # plain text, never markup or emoji codes
    out = run("job", "show", str(ids["long"]), actor="alice")
    assert LONG_REASON in line_with(out, "reason") and LONG_BRANCH in line_with(out, "branch") and "…" not in out
    add_user(svc, "a-user-with-a-rather-long-name-for-a-table")
    for i in range(8):
        add_team(svc, f"team-with-a-long-name-{i:02d}", {"a-user-with-a-rather-long-name-for-a-table": "user"})
    out = run("user", "list")
    row = line_with(out, "a-user-with-a-rather-long-name-for-a-table")
    assert all(f"team-with-a-long-name-{i:02d} (user)" in row for i in range(8)) and "…" not in out
    out = run("team", "ledger", "nlp", actor="alice")
    assert "…" not in out and "25.000000" in out


def test_terminal_tables_fold_instead_of_cutting(site, monkeypatch):
    run, _svc, ids, _ = site
    monkeypatch.setattr(cli_output, "console", Console(highlight=False, width=60, force_terminal=True,
                                                    color_system=None))
    out = run("job", "list", actor="alice")
    assert "…" not in out and max(len(ln) for ln in out.splitlines()) <= 60
    out = run("job", "show", str(ids["long"]), actor="alice")
    assert "…" not in out and max(len(ln) for ln in out.splitlines()) <= 60
    # the value column, read top to bottom, holds every value whole (folded, not cut)
    values = "".join(ln.split("│")[2] for ln in out.splitlines() if ln.count("│") == 3)
    flat = re.sub(r"\s", "", values)
    assert re.sub(r"\s", "", LONG_BRANCH) in flat and re.sub(r"\s", "", LONG_REASON) in flat


def test_json_everywhere_matches_the_api(site):
    run, svc, ids, base = site
    tok = ids["alice_token"]
    jobs = json.loads(run("job", "list", "--json", actor="alice"))
    assert any(j["branch"] == LONG_BRANCH and j["reason"] == LONG_REASON for j in jobs)
    assert json.loads(run("job", "show", str(ids["long"]), "--json", actor="alice"))["reason"] == LONG_REASON
    local_projects = json.loads(run("project", "list", "--json", actor="alice"))
    assert local_projects == json.loads(run("project", "list", "--json", url=base, token=tok))
    from portal.app import create_app
    api = create_app(svc).test_client()
    hdr = {"Authorization": f"Bearer {tok}"}
    assert local_projects == api.get("/api/projects", headers=hdr).get_json()["projects"]
    shown = json.loads(run("project", "show", "nlp/proj", "--json", actor="alice"))
    assert shown == json.loads(run("project", "show", "nlp/proj", "--json", url=base, token=tok))
    assert shown["remote_url"] == svc.config.repo_url("nlp", "proj") and shown["jobs"] >= 3
    ledger = json.loads(run("team", "ledger", "nlp", "--json", actor="alice"))
    assert ledger == json.loads(run("team", "ledger", "nlp", "--json", url=base, token=tok))
    api_ledger = api.get("/api/teams/nlp/ledger", headers=hdr).get_json()
    assert ledger["balance"] == api_ledger["balance"] and \
        sorted(ledger["entries"], key=lambda e: e["id"]) == sorted(api_ledger["entries"], key=lambda e: e["id"])
    teams = json.loads(run("team", "list", "--json"))
    nlp = next(t for t in teams if t["name"] == "nlp")
    api_nlp = next(t for t in api.get("/api/teams", headers=hdr).get_json()["teams"] if t["name"] == "nlp")
    assert {k: nlp[k] for k in ("name", "personal", "balance", "slurm_account", "created_at")} == \
        {k: api_nlp[k] for k in ("name", "personal", "balance", "slurm_account", "created_at")}
    assert nlp["members"] == 3
    assert json.loads(run("team", "balance", "nlp", "--json", actor="carol"))["balance"] == nlp["balance"]
    assert json.loads(run("team", "balance", "--json")) == teams
    users = {u["name"]: u for u in json.loads(run("user", "list", "--json"))}
    assert users["alice"]["teams"] == [{"team": "nlp", "role": "owner"}] and users["dave"]["is_cluster_admin"]
    toks = json.loads(run("token", "list", "--json", actor="alice"))
    assert toks == api.get("/api/tokens", headers=hdr).get_json()["tokens"]
    assert toks == json.loads(run("token", "list", "--json", url=base, token=tok))


def test_token_list_and_revoke_local(site):
    run, svc, ids, _ = site
    secret = ids["alice_token"]
    out = run("token", "list", actor="alice")
    assert "cli" in out and secret[:12] in out and secret not in out
    assert "name the user" in run("token", "list", ok=False)  # the operator is not a user
    assert secret[:12] in run("token", "list", "alice")          # ... but may name one
    assert secret[:12] in run("token", "list", "alice", actor="dave")  # a cluster admin too
    assert "only cluster administrators" in run("token", "list", "alice", actor="carol", ok=False)
    assert "there is no user 'ghost'" in run("token", "list", "ghost", ok=False)
    with svc.db.session() as s:
        alice_tid = s.scalar(select(AccessToken.id).where(AccessToken.prefix == secret[:12]))
        mallory_tid = s.scalar(select(AccessToken.id).where(AccessToken.prefix == ids["mallory_token"][:12]))
    # a user revokes only their own tokens
    assert f"there is no token {alice_tid}" in run("token", "revoke", str(alice_tid), actor="carol", ok=False)
    with svc.db.session() as s:
        assert user_tokens.user_by_bearer(s, secret) is not None
    assert f"token {alice_tid} revoked" in run("token", "revoke", str(alice_tid), actor="alice")
    with svc.db.session() as s:
        assert user_tokens.user_by_bearer(s, secret) is None
    listed = json.loads(run("token", "list", "--json", actor="alice"))
    assert [t["revoked_at"] is not None for t in listed if t["id"] == alice_tid] == [True]
    # a cluster admin (and the operator) revokes anyone's
    run("token", "revoke", str(mallory_tid), actor="dave")
    with svc.db.session() as s:
        assert user_tokens.user_by_bearer(s, ids["mallory_token"]) is None


def test_token_list_revoke_and_job_delete_remote(site):
    run, svc, ids, base = site

    def as_(who, *args, ok=True):
        return run(*args, url=base, token=ids[f"{who}_token"], ok=ok)

    out = as_("carol", "token", "list")
    assert ids["carol_token"][:12] in out and ids["carol_token"] not in out
    assert "only cluster administrators" in as_("carol", "token", "list", "alice", ok=False)
    assert ids["alice_token"][:12] in as_("dave", "token", "list", "alice")
    with svc.db.session() as s:
        alice_tid = s.scalar(select(AccessToken.id).where(AccessToken.prefix == ids["alice_token"][:12]))
    assert f"there is no token {alice_tid}" in as_("carol", "token", "revoke", str(alice_tid), ok=False)
    # job delete through DELETE /api/jobs/<id>
    jid = ids["long"]
    assert "may not delete jobs" in as_("carol", "job", "delete", str(jid), "--yes", ok=False)
    assert "--yes" in as_("alice", "job", "delete", str(jid), ok=False)
    assert f"job {jid} deleted" in as_("alice", "job", "delete", str(jid), "--yes")
    with svc.db.session() as s:
        assert s.get(Job, jid) is None
    # then the token itself
    assert f"token {alice_tid} revoked" in as_("alice", "token", "revoke", str(alice_tid))
    assert "invalid or revoked access token" in as_("alice", "job", "list", ok=False)
