"""Issue 9 item 3 on the command line: `team request-funds`, `funds list/approve/decline/cancel`,
and `team add-funds` for cluster administrators only — locally and through the API (--url)."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.billing import ledger as billing
from portal.cli import Ctx, main
from portal.db import Team
from tests.support.fakes import FakeBackend, make_services


@pytest.fixture
def cli(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    runner = CliRunner()

    def run(*args, ok=True, actor=None):
        argv = (["--as", actor] if actor else []) + list(args)
        r = runner.invoke(main, argv, obj=Ctx(services=svc), env={"SLIPWAY_URL": None, "SLIPWAY_USER": None},
                          catch_exceptions=False)
        assert (r.exit_code == 0) == ok, (argv, r.exit_code, r.output)
        return r.output

    yield run, svc
    svc.db.dispose()


def balance(svc, team):
    with svc.db.session() as s:
        return billing.balance(s, s.scalar(select(Team.id).where(Team.name == team)))


def test_owner_of_a_personal_team_requests_and_the_operator_decides(cli):
    run, svc = cli
    run("user", "add", "eve")
    run("user", "add", "bob")
    out = run("team", "add-funds", "eve", "1000000.00", actor="eve", ok=False)
    assert "only cluster administrators add funds" in out and "request-funds" in out
    assert balance(svc, "eve") == 0
    out = run("team", "request-funds", "eve", "25", "--note", "first runs", actor="eve")
    assert out.strip() == ("fund request 1: $25.00 for team eve (pending); the cluster administrators "
                           "approve or decline it")
    assert "there is no team 'eve'" in run("team", "request-funds", "eve", "5", actor="bob", ok=False)
    assert "at most 500" in run("team", "request-funds", "eve", "5", "--note", "x" * 501, actor="eve", ok=False)
    assert "not a plain amount" in run("team", "request-funds", "eve", "lots", actor="eve", ok=False)
    listed = run("funds", "list")
    assert "first runs" in listed and "$25.00" in listed and "pending" in listed
    assert json.loads(run("funds", "list", "--json"))[0]["state"] == "pending"
    assert "only cluster administrators" in run("funds", "approve", "1", actor="eve", ok=False)
    assert "there is no fund request 1" in run("funds", "approve", "1", actor="bob", ok=False)
    out = run("funds", "approve", "1", "--note", "welcome")
    assert out.startswith("fund request 1 of team eve ($25.00): approved; ledger entry ")
    assert balance(svc, "eve") == 25
    assert "approved already" in run("funds", "approve", "1", ok=False)
    assert balance(svc, "eve") == 25
    assert run("funds", "list").count("eve") == 0  # nothing pending
    assert "welcome" in run("funds", "list", "--state", "approved")
    # decline needs a reason; the team cancels its own pending request
    run("team", "request-funds", "eve", "5", actor="eve")
    run("team", "request-funds", "eve", "6", actor="eve")
    assert "Missing option '--note'" in run("funds", "decline", "2", ok=False)
    assert "declined" in run("funds", "decline", "2", "--note", "use the course budget")
    assert "cancelled" in run("funds", "cancel", "3", actor="eve")
    assert "cancelled already" in run("funds", "approve", "3", ok=False)
    mine = run("funds", "list", "--state", "all", "--team", "eve", actor="eve")
    assert "use the course budget" in mine and "cancelled" in mine and "approved" in mine
    assert balance(svc, "eve") == 25
    assert "there is no fund request" in run("funds", "approve", str(2**64), ok=False)


# ------------------------------------------------------------------ remote mode (/api/)

@pytest.fixture
def site(tmp_path):
    from tests.support.git_server import serve
    from portal.app import create_app
    from tests.support.web import make_world

    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    runner = CliRunner()

    def run(*args, ok=True, actor=None, who=None, base=None):
        argv = (["--as", actor] if actor else []) + (["--url", base] if who else []) + list(args)
        env = {"SLIPWAY_URL": None, "SLIPWAY_USER": None,
               "SLIPWAY_TOKEN": ids[f"{who}_token"] if who else None}
        r = runner.invoke(main, argv, obj=Ctx(services=svc), env=env, catch_exceptions=False)
        assert (r.exit_code == 0) == ok, (argv, r.exit_code, r.output)
        return r.output

    with serve(create_app(svc)) as base:
        yield (lambda *a, **kw: run(*a, base=base, **kw)), svc


def test_remote_request_list_approve_match_local(site):
    run, svc = site
    out = run("team", "request-funds", "nlp", "12.5", "--note", "remote ask", who="alice")
    assert out.startswith("fund request 1: $12.50 for team nlp (pending)")
    assert "needs role" in run("team", "request-funds", "nlp", "5", who="carol", ok=False)
    assert "only cluster administrators add funds" in run("team", "add-funds", "nlp", "5", who="alice", ok=False)
    for args in [("funds", "list"), ("funds", "list", "--state", "all"), ("funds", "list", "--json")]:
        assert run(*args, who="dave") == run(*args, actor="dave"), args
    assert run("funds", "list", "--team", "nlp", who="alice") == run("funds", "list", "--team", "nlp", actor="alice")
    assert "only cluster administrators" in run("funds", "approve", "1", who="alice", ok=False)
    before = balance(svc, "nlp")
    assert "approved" in run("funds", "approve", "1", who="dave")
    assert "approved already" in run("funds", "approve", "1", who="dave", ok=False)
    assert balance(svc, "nlp") == before + Decimal("12.50")
