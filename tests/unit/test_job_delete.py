"""Deleting one ended job (issue 9): its results ref in the real bare repository, its log and job
directory, its row — never its money (ledger rows keep the job id, the balance is unchanged) —
by the team's administrators/owners and cluster admins, after a confirmation, through the
service, the web page, the API and the CLI."""
from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from git_gateway import repos
from portal.billing import ledger as billing
from portal.app import create_app
from portal.cli import Ctx, main
from portal.db import Job, LedgerEntry, Team
from portal.jobs import delete, runner_spec
from tests.support.fakes import FakeBackend, commit_to_bare, make_services
from portal.teams import access
from tests.support.web import add_charge, add_job, csrf_token, login, make_world


def bare(svc):
    return svc.config.repos_root / "nlp" / "proj.git"


def git_bare(svc, *args):
    subprocess.run(["git", "--git-dir", str(bare(svc)), *args], check=True, capture_output=True)


@pytest.fixture
def world(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    sha = commit_to_bare(bare(svc), tmp_path / "work", {"slipway-entrypoint.sh": "echo hi\n"}, branch="exp-9")
    git_bare(svc, "update-ref", "refs/heads/exp-9", sha)
    jid = add_job(svc, ids["proj"], branch="exp-9", state="succeeded", pusher="carol", exit_code=0,
                  results_ref="refs/heads/results/exp-9/0", ended_at=svc.now(), log="trained\n")
    ref = f"refs/heads/results/exp-9/{jid}"
    git_bare(svc, "update-ref", ref, sha)
    with svc.db.transaction() as s:
        s.get(Job, jid).results_ref = ref
    add_charge(svc, "nlp", jid, "0.40", 0)
    (runner_spec.job_dir(svc, jid) / "spec.json").write_text("{}")
    ids.update(ended=jid, ref=ref, sha=sha)
    yield svc, ids
    svc.db.dispose()


def who(svc, name):
    with svc.db.session() as s:
        from portal.db import User
        u = s.scalar(select(User).where(User.name == name))
        return access.Actor(id=u.id, name=u.name, is_cluster_admin=bool(u.is_cluster_admin))


def money(svc):
    with svc.db.session() as s:
        tid = s.scalar(select(Team.id).where(Team.name == "nlp"))
        rows = sorted(s.execute(select(LedgerEntry.id, LedgerEntry.job_id, LedgerEntry.amount_micros)
                                .where(LedgerEntry.team_id == tid)).all())
        return billing.balance(s, tid), rows


def exists(svc, jid) -> bool:
    with svc.db.session() as s:
        return s.get(Job, jid) is not None


def test_service_deletes_ref_files_and_row_and_keeps_the_money(world):
    svc, ids = world
    jid, ref = ids["ended"], ids["ref"]
    before = money(svc)
    assert any(job == jid for _id, job, _a in before[1])
    assert repos.resolve_ref(svc.config.repos_root, "nlp", "proj", ref) == ids["sha"]

    r = delete.delete_job(svc, who(svc, "bob"), jid, str(jid))  # bob: administrator
    assert r.refs_removed == (ref,) and f"job {jid} deleted" in r.message and "ledger" in r.message
    assert repos.resolve_ref(svc.config.repos_root, "nlp", "proj", ref) is None
    assert repos.resolve_ref(svc.config.repos_root, "nlp", "proj", "refs/heads/exp-9") == ids["sha"]
    assert not runner_spec.job_dir(svc, jid).exists() and not runner_spec.log_path(svc, jid).exists()
    assert not exists(svc, jid)
    assert money(svc) == before  # entries keep their job id; the balance is the same
    # the id is never handed out again
    new = add_job(svc, ids["proj"], branch="exp-10", state="queued", pusher="alice")
    assert new > jid
    # deleting again: it does not exist any more
    with pytest.raises(delete.JobDeleteError) as e:
        delete.delete_job(svc, who(svc, "bob"), jid, str(jid))
    assert e.value.status == 404


@pytest.mark.parametrize("actor,job_key,confirm,status,text", [
    ("carol", "ended", None, 403, "may not delete jobs"),          # a member, not an administrator
    ("mallory", "ended", None, 404, "there is no job"),            # an outsider: it does not exist
    ("erin", "ended", None, 404, "there is no job"),
    ("alice", "ended", "", 400, "to confirm"),
    ("alice", "ended", "12345", 400, "to confirm"),
    ("alice", "running", None, 409, "cancel it first"),
    ("alice", "pending", None, 409, "cancel it first"),
])
def test_refusals_delete_nothing(world, actor, job_key, confirm, status, text):
    svc, ids = world
    jid = ids[job_key]
    before = money(svc)
    with pytest.raises(delete.JobDeleteError) as e:
        delete.delete_job(svc, who(svc, actor), jid, str(jid) if confirm is None else confirm)
    assert e.value.status == status and text in str(e.value)
    assert exists(svc, jid) and money(svc) == before
    assert repos.resolve_ref(svc.config.repos_root, "nlp", "proj", ids["ref"]) == ids["sha"]
    assert runner_spec.log_path(svc, ids["ended"]).exists()


def test_cluster_admin_and_owner_may_delete(world):
    svc, ids = world
    delete.delete_job(svc, who(svc, "dave"), ids["ended"], f"#{ids['ended']}")  # dave: cluster admin
    assert not exists(svc, ids["ended"])
    delete.delete_job(svc, who(svc, "alice"), ids["succeeded"], str(ids["succeeded"]))  # no ref, no dir
    assert not exists(svc, ids["succeeded"])


def test_a_failing_file_system_keeps_the_row(world, monkeypatch):
    svc, ids = world
    jid = ids["ended"]

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(delete, "_remove_dir", refuse)
    with pytest.raises(delete.JobDeleteError) as e:
        delete.delete_job(svc, who(svc, "alice"), jid, str(jid))
    assert e.value.status == 500 and "it is kept: try again" in str(e.value)
    assert exists(svc, jid)
    monkeypatch.undo()
    delete.delete_job(svc, who(svc, "alice"), jid, str(jid))  # the retry finishes the work
    assert not exists(svc, jid) and not runner_spec.job_dir(svc, jid).exists()


def test_delete_ref_helper_refuses_odd_names(world):
    svc, ids = world
    root = svc.config.repos_root
    for bad in ("exp-9", "refs/heads/a..b", "refs/heads/x\0y"):
        with pytest.raises(ValueError):
            repos.delete_ref(root, "nlp", "proj", bad)
    assert repos.delete_ref(root, "nlp", "proj", "refs/heads/results/none/1") is False
    assert repos.delete_ref(root, "nlp", "proj", ids["ref"]) is True
    assert repos.resolve_ref(root, "nlp", "proj", ids["ref"]) is None


# ------------------------------------------------------------------------------------- web

def client_as(app, name):
    c = app.test_client()
    assert login(c, name).status_code == 302
    return c


def test_web_button_for_admins_and_confirmed_delete(world):
    svc, ids = world
    app = create_app(svc)
    jid = ids["ended"]
    carol = client_as(app, "carol")
    assert 'id="delete-job"' not in carol.get(f"/jobs/{jid}").get_data(as_text=True)
    assert carol.post(f"/jobs/{jid}/delete", data={"confirm": str(jid),
                                                    "csrf_token": csrf_token(carol)}).status_code == 403
    alice = client_as(app, "alice")
    assert 'id="delete-job"' not in alice.get(f"/jobs/{ids['running']}").get_data(as_text=True)
    page = alice.get(f"/jobs/{jid}").get_data(as_text=True)
    assert 'id="delete-job"' in page and f'data-confirm="{jid}"' in page
    tok = csrf_token(alice)
    r = alice.post(f"/jobs/{jid}/delete", data={"confirm": "nope", "csrf_token": tok})
    assert r.status_code == 400 and "to confirm" in r.get_data(as_text=True) and exists(svc, jid)
    r = alice.post(f"/jobs/{ids['running']}/delete", data={"confirm": str(ids["running"]), "csrf_token": tok})
    assert r.status_code == 409 and "cancel it first" in r.get_data(as_text=True)
    r = alice.post(f"/jobs/{jid}/delete", data={"confirm": str(jid), "csrf_token": tok})
    assert r.status_code == 302 and r.headers["Location"].endswith("/jobs")
    assert f"job {jid} deleted" in alice.get("/jobs").get_data(as_text=True)
    assert alice.get(f"/jobs/{jid}").status_code == 404 and not exists(svc, jid)


# ------------------------------------------------------------------------------------- API

def test_api_delete(world):
    svc, ids = world
    c = create_app(svc).test_client()
    jid = ids["ended"]
    before = money(svc)

    def call(token, job, body):
        return c.delete(f"/api/jobs/{job}", json=body, headers={"Authorization": f"Bearer {token}"})

    r = call(ids["carol_token"], jid, {"confirm": str(jid)})
    assert r.status_code == 403 and r.get_json()["ok"] is False
    assert call(ids["mallory_token"], jid, {"confirm": str(jid)}).status_code == 404
    assert call(ids["alice_token"], jid, {}).status_code == 400
    assert call(ids["alice_token"], ids["running"], {"confirm": str(ids["running"])}).status_code == 409
    assert exists(svc, jid)
    r = call(ids["alice_token"], jid, {"confirm": str(jid)})
    assert r.status_code == 200 and r.get_json()["deleted"] == jid and r.get_json()["refs_removed"] == [ids["ref"]]
    assert c.get(f"/api/jobs/{jid}", headers={"Authorization": f"Bearer {ids['alice_token']}"}).status_code == 404
    assert money(svc) == before
    with svc.db.session() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.job_id == jid)) == 1


# ------------------------------------------------------------------------------------- CLI

def test_cli_job_delete_needs_yes_and_the_role(world):
    svc, ids = world
    runner = CliRunner()
    jid = ids["ended"]

    def run(*args, ok=True):
        r = runner.invoke(main, list(args), obj=Ctx(services=svc), catch_exceptions=False,
                          env={"SLIPWAY_URL": None, "SLIPWAY_USER": None})
        assert (r.exit_code == 0) == ok, r.output
        return r.output

    assert "--yes" in run("--as", "bob", "job", "delete", str(jid), ok=False) and exists(svc, jid)
    assert "may not delete jobs" in run("--as", "carol", "job", "delete", str(jid), "--yes", ok=False)
    assert "cancel it first" in run("--as", "bob", "job", "delete", str(ids["running"]), "--yes", ok=False)
    out = run("--as", "bob", "job", "delete", str(jid), "--yes")
    assert f"job {jid} deleted" in out and not exists(svc, jid)
    assert "there is no job" in run("job", "show", str(jid), ok=False)
    assert json.loads(run("job", "list", "--json")) and all(
        j["id"] != jid for j in json.loads(run("job", "list", "--json")))
