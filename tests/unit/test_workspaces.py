"""Workspaces in the service layer: start (the rules and caps), the runner spec (JupyterLab, the
credential kept out of every argv), stop, restart, what the gateway asks, the idle policy."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from portal.db import Job, User
from portal.jobs import states
from portal.jobs.runner_spec import WORKSPACE_COMMAND
from portal.teams.access import Actor, NotFound, OpError
from portal.workspaces import credential, idle, policy, queries, service
from tests.support.fakes import FakeBackend, InMemoryCatalog, InMemoryMailer, commit_to_bare, git, \
    make_services, seed

EP = {"slipway-entrypoint.sh": "echo hi\n", "notes.md": "hello\n"}
ADMIN = Actor(0, "root", True)


@pytest.fixture
def env(tmp_path):
    backend, mailer = FakeBackend(), InMemoryMailer()
    svc = make_services(tmp_path, backend=backend, mailer=mailer,
                        catalog=InMemoryCatalog({"python": ("charliecloud", "apptainer"),
                                                 "busybox": ("charliecloud",)}))
    ids = seed(svc)
    with svc.db.transaction() as s:
        s.get(User, ids["user_id"]).email = "alice@example.org"
        bob = User(name="bob", unix_user="sw-bob", created_at=svc.now())
        s.add(bob)
    bare = svc.config.repos_root / "nlp" / "proj.git"
    sha = commit_to_bare(bare, tmp_path / "work", EP)
    for b in ("exp-1", "exp-2", "exp-3"):
        git("--git-dir", str(bare), "update-ref", f"refs/heads/{b}", sha)
    yield svc, backend, mailer, Actor(ids["user_id"], "alice"), sha
    svc.db.dispose()


def bob(svc) -> Actor:
    with svc.db.session() as s:
        return Actor(s.scalar(select(User.id).where(User.name == "bob")), "bob")


def job(svc, job_id) -> Job:
    with svc.db.session() as s:
        return s.get(Job, job_id)


def run(svc, job_id, node="a4k-1", port=12345, started=None):
    with svc.db.transaction() as s:
        j = s.get(Job, job_id)
        states.transition(j, states.RUNNING, now=svc.now())
        j.node, j.port, j.started_at = node, port, started or svc.now()


def test_start_makes_a_workspace_job_running_jupyterlab_with_a_hidden_credential(env):
    svc, backend, _mail, alice, sha = env
    jid, msg = service.start_workspace(svc, alice, "nlp", "proj", branch="exp-1", gpus="a4000:1")
    assert msg == f"workspace {jid} queued (a4000 x1)"
    j = job(svc, jid)
    assert (j.kind, j.branch, j.commit_sha, j.state, j.time_limit_min) == (
        "workspace", "exp-1", sha, "pending", service.DEFAULT_TIME_MIN)
    spec = json.loads((Path(svc.config.jobs_dir) / str(jid) / "spec.json").read_text())
    tok = credential.token(svc.config.secret_key, jid)
    assert spec["env"][credential.ENV_NAME] == tok
    assert tok not in " ".join(spec["container_argv"])          # never in an argv (ps)
    _req = backend.submits[-1][1]
    assert tok not in json.dumps(dict(_req.env)) and tok not in " ".join(_req.command)
    assert spec["container_argv"][-len(WORKSPACE_COMMAND):] == WORKSPACE_COMMAND
    # ch-run keeps JUPYTER_TOKEN from the launch environment (it is not in any --unset-env glob)
    import fnmatch
    globs = [a.split("=", 1)[1] for a in spec["container_argv"] if a.startswith("--unset-env=")]
    assert not any(fnmatch.fnmatchcase(credential.ENV_NAME, g) for g in globs)
    assert any(fnmatch.fnmatchcase("HOME_DIR_SECRET", g) for g in globs)


@pytest.mark.parametrize("kwargs, words", [
    ({"branch": "nope"}, "there is no branch 'nope'"),
    ({"branch": ""}, "name the branch"),
    ({"branch": "exp-1", "image": "busybox"}, "has no JupyterLab"),
    ({"branch": "exp-1", "image": "nope"}, "unknown image 'nope'"),
    ({"branch": "exp-1", "cpus": 4, "gpus": "a4000:3"}, "at most 2 GPU(s)"),
    ({"branch": "exp-1", "gpus": "a4000:3"}, "at most 2 GPU(s)"),
    ({"branch": "exp-1", "gpus": "h100:1"}, "h100"),
    ({"branch": "exp-1", "inputs": {"input0": "nothing:1"}}, "no data repository nlp/nothing"),
])
def test_bad_starts_are_refused_and_leave_nothing(env, kwargs, words):
    svc, backend, _mail, alice, _sha = env
    with pytest.raises(OpError, match=words.replace("(", r"\(").replace(")", r"\)")):
        service.start_workspace(svc, alice, "nlp", "proj", **kwargs)
    with svc.db.session() as s:
        assert s.scalar(select(Job.id)) is None
    assert backend.submits == []


def test_a_cpu_only_workspace_is_not_held_to_the_gpu_cap(env):
    svc, backend, _m, alice, _sha = env
    policy.set_policy(svc, ADMIN, None, {"max_gpus": 0})
    jid, msg = service.start_workspace(svc, alice, "nlp", "proj", branch="exp-1", cpus=6)
    assert msg == f"workspace {jid} queued (cpu x6)"
    assert backend.submits[-1][1].gpus is None and backend.submits[-1][1].cpus == 6


def test_outsiders_cannot_start_see_or_reach_a_workspace(env):
    svc, _b, _m, alice, _sha = env
    with pytest.raises(NotFound):
        service.start_workspace(svc, bob(svc), "nlp", "proj", branch="exp-1")
    jid, _ = service.start_workspace(svc, alice, "nlp", "proj", branch="exp-1")
    for call in (lambda: queries.show_workspace(svc, bob(svc), jid),
                 lambda: service.stop_workspace(svc, bob(svc), jid),
                 lambda: service.gateway_target(svc, bob(svc).id, jid),
                 lambda: service.gateway_target(svc, None, jid)):
        with pytest.raises(NotFound):
            call()


def test_gateway_target_only_while_running_and_touch_clears_a_reminder(env):
    svc, _b, _m, alice, _sha = env
    jid, _ = service.start_workspace(svc, alice, "nlp", "proj", branch="exp-1")
    with pytest.raises(service.NotRunning, match="not running"):
        service.gateway_target(svc, alice.id, jid)
    run(svc, jid)
    t = service.gateway_target(svc, alice.id, jid)
    assert (t.host, t.port, t.token) == ("a4k-1", 12345, credential.token(svc.config.secret_key, jid))
    with svc.db.transaction() as s:
        s.get(Job, jid).reminded_at = svc.now()
    svc.clock.advance(minutes=3)
    service.touch(svc, jid)
    j = job(svc, jid)
    assert j.last_activity_at == svc.now() and j.reminded_at is None
    assert queries.show_workspace(svc, alice, jid)["url"].endswith(f"/workspaces/{jid}/lab/")


def test_caps_per_user_from_the_team_policy(env):
    svc, _b, _m, alice, _sha = env
    policy.set_policy(svc, ADMIN, "nlp", {"max_per_user": 1})
    service.start_workspace(svc, alice, "nlp", "proj", branch="exp-1")
    with pytest.raises(OpError, match="1 open workspace\\(s\\), the most allowed is 1") as e:
        service.start_workspace(svc, alice, "nlp", "proj", branch="exp-2")
    assert e.value.status == 409
    with pytest.raises(OpError, match="only cluster administrators"):
        policy.set_policy(svc, alice, "nlp", {"max_per_user": 5})


def test_stop_cancels_and_restart_continues_at_the_tip_with_the_output(env):
    svc, backend, _m, alice, sha = env
    jid, _ = service.start_workspace(svc, alice, "nlp", "proj", branch="exp-1")
    run(svc, jid)
    msg = service.stop_workspace(svc, alice, jid)
    assert f"workspace {jid}" in msg and backend.cancels
    with svc.db.transaction() as s:
        j = s.get(Job, jid)
        states.transition(j, states.CANCELLED, now=svc.now())
    out = Path(svc.config.jobs_dir) / str(jid) / "output"
    (out / "ckpt").write_bytes(b"state")
    new_id, msg = service.restart_workspace(svc, alice, jid)
    assert "restarts as workspace" in msg
    new = job(svc, new_id)
    assert (new.kind, new.branch, new.continue_from) == ("workspace", "exp-1", jid)
    assert (Path(svc.config.jobs_dir) / str(new_id) / "output" / "ckpt").read_bytes() == b"state"


def fake_activity(last=None, busy=False, answered=True):
    return lambda host, port, job_id, token: idle.Activity(last, busy, answered)


def test_idle_policy_reminds_then_stops_and_a_busy_kernel_is_not_idle(env):
    svc, backend, mailer, alice, _sha = env
    policy.set_policy(svc, ADMIN, None, {"idle_seconds": "60s", "remind_seconds": "20s"})
    quiet, busy = (service.start_workspace(svc, alice, "nlp", "proj", branch=b)[0]
                   for b in ("exp-1", "exp-2"))
    run(svc, quiet)
    run(svc, busy)
    acts = {quiet: idle.Activity(None, False, True), busy: idle.Activity(None, True, True)}

    def activity(host, port, job_id, token):
        assert token == credential.token(svc.config.secret_key, job_id)
        return acts[job_id]

    svc.clock.advance(seconds=30)
    assert dict(idle.check_idle(svc, activity=activity)) == {quiet: "active", busy: "active"}
    svc.clock.advance(seconds=15)                                     # 45 s idle: remind
    assert dict(idle.check_idle(svc, activity=activity))[quiet] == "reminded"
    assert job(svc, quiet).reminded_at is not None
    assert [r["job"] for r in idle.reminders_for(svc, alice.id)] == [quiet]
    assert any(f"workspace {quiet} is idle" in m.subject and m.to == "alice@example.org"
               for m in mailer.sent)
    svc.clock.advance(seconds=20)                                     # 65 s idle: stop
    result = dict(idle.check_idle(svc, activity=activity))
    assert result == {quiet: "stopped", busy: "active"}
    j = job(svc, quiet)
    assert j.cancel_requested_at is not None and "stopped after 60 seconds idle" in j.cancel_reason
    assert job(svc, busy).cancel_requested_at is None
    assert any(f"workspace {quiet} was stopped" in m.subject for m in mailer.sent)


def test_remind_only_policy_never_stops_and_activity_clears_the_reminder(env):
    svc, _b, _m, alice, _sha = env
    policy.set_policy(svc, ADMIN, "nlp", {"idle_seconds": 60, "remind_seconds": 10,
                                          "auto_stop": False})
    jid, _ = service.start_workspace(svc, alice, "nlp", "proj", branch="exp-1")
    run(svc, jid)
    svc.clock.advance(minutes=10)
    assert idle.check_idle(svc, activity=fake_activity()) == [(jid, "reminded")]
    assert job(svc, jid).cancel_requested_at is None
    svc.clock.advance(seconds=5)
    assert idle.check_idle(svc, activity=fake_activity(last=svc.now())) == [(jid, "active")]
    assert job(svc, jid).reminded_at is None


def test_jupyter_activity_reads_kernels_and_terminals():
    class R:
        def __init__(self, data, ok=True):
            self.data, self.ok = data, ok

        def raise_for_status(self):
            pass

        def json(self):
            return self.data

    calls = []

    def get(url, headers, timeout):
        calls.append((url, headers["Authorization"]))
        if url.endswith("/kernels"):
            return R([{"execution_state": "idle", "last_activity": "2026-12-06T08:00:00.5Z"}])
        return R([{"name": "1", "last_activity": "2026-12-06T08:05:00Z"}])

    act = idle.jupyter_activity("n1", 1234, 7, "tok", get=get)
    assert act.answered and not act.busy and act.last.isoformat() == "2026-12-06T08:05:00+00:00"
    assert calls[0] == ("http://n1:1234/workspaces/7/lab/api/kernels", "token tok")


def test_policy_levels_and_durations(env):
    svc, _b, _m, alice, _sha = env
    assert policy.parse_duration("1h30m") == 5400 and policy.parse_duration("45") == 2700
    with pytest.raises(OpError):
        policy.parse_duration("soon")
    policy.set_policy(svc, ADMIN, None, {"idle_seconds": "2h"})
    policy.set_policy(svc, ADMIN, "nlp", {"remind_seconds": "5m"})
    shown = policy.show_policy(svc, alice, "nlp")["effective"]
    assert (shown["idle_seconds"], shown["remind_seconds"], shown["auto_stop"]) == (7200, 300, True)
    with pytest.raises(OpError, match="cannot come before"):
        policy.set_policy(svc, ADMIN, "nlp", {"remind_seconds": "3h"})
    with pytest.raises(NotFound):
        policy.show_policy(svc, bob(svc), "nlp")


def test_the_idle_reminder_reaches_a_real_smtp_server(tmp_path):
    from portal.adapters.mail import SmtpMailer
    from tests.support.smtp import smtp_server
    with smtp_server() as (port, inbox):
        svc = make_services(tmp_path, mailer=SmtpMailer("127.0.0.1", port, sender="slipway@test"))
        ids = seed(svc)
        with svc.db.transaction() as s:
            s.get(User, ids["user_id"]).email = "alice@example.org"
        bare = svc.config.repos_root / "nlp" / "proj.git"
        sha = commit_to_bare(bare, tmp_path / "work", EP)
        git("--git-dir", str(bare), "update-ref", "refs/heads/exp-1", sha)
        alice = Actor(ids["user_id"], "alice")
        policy.set_policy(svc, ADMIN, None, {"idle_seconds": 60, "remind_seconds": 30})
        jid, _ = service.start_workspace(svc, alice, "nlp", "proj", branch="exp-1")
        run(svc, jid)
        svc.clock.advance(seconds=40)
        assert idle.check_idle(svc, activity=fake_activity()) == [(jid, "reminded")]
        [msg] = inbox.messages
        assert msg["Subject"] == f"Slipway: workspace {jid} is idle"
        assert msg["X-Envelope-To"] == "alice@example.org" and msg["From"] == "slipway@test"
        assert "bills while it is open" in msg.get_payload()
        svc.db.dispose()


def test_mail_and_gateway_come_from_the_config(tmp_path, monkeypatch):
    from portal.adapters.mail import SmtpMailer
    from portal.bootstrap import bootstrap
    from portal.config import load_config
    env = {"SLIPWAY_DATA_DIR": str(tmp_path / "a"), "SLIPWAY_BASE_URL": "http://portal.example:8000"}
    svc = bootstrap(load_config(env), backend=FakeBackend())
    assert svc.mailer is None                                  # no smtp_host: no mail
    assert queries.lab_url(svc, 7) == "http://portal.example:8001/workspaces/7/lab/"
    svc.db.dispose()
    env.update(SLIPWAY_DATA_DIR=str(tmp_path / "b"), SLIPWAY_SMTP_HOST="mail.example",
               SLIPWAY_SMTP_PORT="2525", SLIPWAY_SMTP_STARTTLS="yes", SLIPWAY_MAIL_FROM="ops@x",
               SLIPWAY_WORKSPACE_URL="https://lab.example/")
    svc = bootstrap(load_config(env), backend=FakeBackend())
    assert isinstance(svc.mailer, SmtpMailer)
    assert (svc.mailer.host, svc.mailer.port, svc.mailer.starttls, svc.mailer.sender) == (
        "mail.example", 2525, True, "ops@x")
    assert queries.lab_url(svc, 7) == "https://lab.example/workspaces/7/lab/"
    svc.db.dispose()
