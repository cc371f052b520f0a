"""Alarms (docs/MONITORING.md, issue 15 part 5) against the fake Slurm: what sinfo's nodes, the
tick's errors and the database say opens an alarm ONCE, with ONE mail to each recipient, keeps
it quiet while it lasts, resolves it ONCE with one more mail; two reconcilers never open the same
alarm twice; a restart never sends a mail again; without mail the alarms are on the web only.
The front doors: /admin/alarms (and the header's count), GET /api/alarms, ``slipway alarms``."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from types import MappingProxyType

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

import portal.api.alarms  # noqa: F401  (its routes join the API blueprint before any app exists)
from portal.app import create_app
from portal.billing import ledger as billing
from portal.cli import Ctx, main
from portal.cli import alarms as alarms_cli
from portal.db import Team
from portal.db.alarm_models import Alarm, AlarmMail
from portal.jobs.reconciler import Reconciler
from portal.jobs.reconciler.report import TickReport
from portal.monitoring import alarm_mail, alarm_store, alarms
from portal.teams.access import Actor, Forbidden, NotFound
from portal.web.alarms import bp as alarms_bp
from slurm_bridge.records import GpuCount, NodeRecord
from tests.support.fakes import Clock, FakeBackend, make_services
from tests.support.web import add_charge, add_job, add_project, add_team, add_user, csrf_token, \
    login

ALARM_SUBJECT = re.compile(r"\[Slipway \S+\] (ALARM|resolved): ")
ADMIN_MAIL = "ops@example.org"


def node(name, state="idle", flags=(), reason="", a4000=4) -> NodeRecord:
    return NodeRecord(name=name, state=state, flags=tuple(flags), reason=reason,
                      partitions=("train",), cpus=8, alloc_cpus=0,
                      gpus=MappingProxyType({"a4000": GpuCount(a4000, 0)}))


HEALTHY = [node("a4k-1"), node("a4k-2")]


def alarm_mails(svc) -> list:
    """The alarm messages the mailer got (other monitoring mail, if any, left out)."""
    return [m for m in svc.mailer.sent if ALARM_SUBJECT.match(m.subject)]


def rows(svc, key=None) -> list[Alarm]:
    with svc.db.session() as s:
        q = select(Alarm).order_by(Alarm.id)
        return list(s.scalars(q.where(Alarm.key == key) if key else q))


def world_services(tmp_path, backend=None, clock=None):
    svc = make_services(tmp_path, backend=backend or FakeBackend(), clock=clock or Clock(),
                        storage_interval=10**9)
    return svc


@pytest.fixture
def env(tmp_path):
    backend, clock = FakeBackend(), Clock()
    svc = world_services(tmp_path, backend, clock)
    add_user(svc, "ops", admin=True, email=ADMIN_MAIL)
    add_user(svc, "quiet-admin", admin=True)              # no email: nothing to send
    add_user(svc, "owner", email="owner@example.org")
    add_user(svc, "teamadmin", email="teamadmin@example.org")
    add_user(svc, "member", email="member@example.org")   # a plain user: no alarm mail
    add_team(svc, "nlp", {"owner": "owner", "teamadmin": "administrator", "member": "user"},
             funds="25.00")
    backend.node_records = list(HEALTHY)
    yield svc, backend, clock
    svc.db.dispose()


def tick(svc, clock, seconds=5):
    clock.advance(seconds=seconds)
    return Reconciler(svc).tick()


# ------------------------------------------------------------------------------- nodes

def test_a_drain_opens_one_alarm_and_one_mail_and_a_resume_resolves_it_once(env):
    svc, backend, clock = env
    tick(svc, clock)
    assert rows(svc) == [] and alarm_mails(svc) == []
    backend.node_records = [node("a4k-1"), node("a4k-2", flags=("DRAIN",), reason="fan swap")]
    tick(svc, clock)
    (a,) = rows(svc)
    assert (a.key, a.kind, a.subject, a.resolved_at) == ("node-drained:a4k-2", "node-drained", "a4k-2", None)
    assert a.detail == "node a4k-2 is drained: fan swap" and a.opened_at == clock.t
    (m,) = alarm_mails(svc)
    assert m.to == ADMIN_MAIL and m.subject == "[Slipway slipway] ALARM: node drained: a4k-2"
    assert "node a4k-2 is drained: fan swap" in m.body and "/admin/alarms" in m.body
    for _ in range(3):   # still drained: nothing new
        tick(svc, clock)
    assert len(rows(svc)) == 1 and len(alarm_mails(svc)) == 1
    backend.node_records = list(HEALTHY)
    tick(svc, clock)
    (a,) = rows(svc)
    assert a.resolved_at == clock.t and a.resolution == "node a4k-2 is idle"
    assert [m.subject for m in alarm_mails(svc)][1:] == ["[Slipway slipway] resolved: node drained: a4k-2"]
    tick(svc, clock)
    assert len(rows(svc)) == 1 and len(alarm_mails(svc)) == 2
    # drained again later: a new alarm in the history
    backend.node_records = [node("a4k-1"), node("a4k-2", "mixed", ("DRAIN",), "disk")]
    tick(svc, clock)
    assert [(a.key, a.resolved_at is None) for a in rows(svc)] == [
        ("node-drained:a4k-2", False), ("node-drained:a4k-2", True)]
    assert rows(svc)[-1].detail.startswith("node a4k-2 is draining (its running jobs finish")


def test_not_responding_then_down_and_sinfo_failing_changes_nothing(env):
    svc, backend, clock = env
    # a moment of NOT_RESPONDING (Slurm's after every resume, or a slurmd registering): nothing
    backend.node_records = [node("a4k-1", flags=("NOT_RESPONDING",)), node("a4k-2")]
    tick(svc, clock)
    backend.node_records = list(HEALTHY)
    tick(svc, clock)
    assert rows(svc) == [] and alarm_mails(svc) == []
    # a dead slurmd: not responding for more than 10 s, then down
    backend.node_records = [node("a4k-1", flags=("NOT_RESPONDING",)), node("a4k-2")]
    tick(svc, clock)
    assert rows(svc) == []
    tick(svc, clock, seconds=10)
    assert [a.key for a in rows(svc)] == ["node-not-responding:a4k-1"]
    assert rows(svc)[0].detail == "node a4k-1 does not answer slurmctld (idle+not_responding)"
    backend.node_records = [node("a4k-1", "down", ("NOT_RESPONDING",), "Not responding"), node("a4k-2")]
    tick(svc, clock)
    assert sorted(a.key for a in rows(svc) if a.resolved_at is None) == [
        "node-down:a4k-1", "node-not-responding:a4k-1"]
    down = rows(svc, "node-down:a4k-1")[0]
    assert down.detail == "node a4k-1 is down (down+not_responding): Not responding"
    backend.nodes_down = True          # sinfo fails: the nodes are unknown, nothing resolves
    rep = tick(svc, clock)
    assert rep.nodes_error and all(a.resolved_at is None for a in rows(svc))
    backend.nodes_down = False
    backend.node_records = list(HEALTHY)
    tick(svc, clock)
    assert all(a.resolved_at is not None for a in rows(svc))
    assert len(alarm_mails(svc)) == 4  # two opened, two resolved


def test_fewer_gpus_from_slurms_reason_and_from_the_most_seen(env):
    svc, backend, clock = env
    tick(svc, clock)   # a4k-1 seen with 4 a4000
    backend.node_records = [node("a4k-1", a4000=3), node("a4k-2")]
    tick(svc, clock)
    (a,) = rows(svc)
    assert a.key == "node-gpus:a4k-1" and "fewer GPUs than it had (a4000: 3 of 4)" in a.detail
    backend.node_records = [node("a4k-1"), node("a4k-2", flags=("DRAIN",),
                            reason="gres/gpu count reported lower than configured (2 < 4)")]
    tick(svc, clock)
    assert rows(svc, "node-gpus:a4k-1")[0].resolved_at is not None
    (b,) = [a for a in rows(svc) if a.resolved_at is None]
    assert b.key == "node-gpus:a4k-2"   # the GPU drain is this alarm, not also "drained"
    assert "fewer GPUs than configured: gres/gpu count reported lower" in b.detail
    # a node that does not answer tells nothing of its GPUs: the alarm stays, none opens
    backend.node_records = [node("a4k-1", "down", ("NOT_RESPONDING",), a4000=0),
                            node("a4k-2", "down", a4000=0, flags=("DRAIN",),
                                 reason="gres/gpu count reported lower than configured (2 < 4)")]
    tick(svc, clock)
    assert rows(svc, "node-gpus:a4k-1")[-1].resolved_at is not None   # resolved above
    assert len(rows(svc, "node-gpus:a4k-1")) == 1 and rows(svc, "node-gpus:a4k-2")[0].resolved_at is None
    backend.node_records = [node("a4k-1", "down", ("NOT_RESPONDING",), a4000=0), node("a4k-2")]
    tick(svc, clock)
    assert rows(svc, "node-gpus:a4k-2")[0].resolved_at is not None
    # a node whose hardware changed for good: an administrator accepts its count
    backend.node_records = [node("a4k-1", a4000=2), node("a4k-2")]
    tick(svc, clock)
    assert rows(svc, "node-gpus:a4k-1")[-1].resolved_at is None
    ops = Actor(1, "ops", True)
    with pytest.raises(Forbidden):
        alarms.accept_gpu_count(svc, Actor(3, "owner"), "a4k-1")
    with pytest.raises(NotFound):
        alarms.accept_gpu_count(svc, ops, "no-such-node")
    assert alarms.accept_gpu_count(svc, ops, "a4k-1")["forgotten"] == 1
    tick(svc, clock)
    assert all(a.resolved_at is not None for a in rows(svc))


# ------------------------------------------------------------------ Slurm and reconciler

def test_poll_failure_opens_slurmctld_and_keeps_node_alarms(env):
    svc, backend, clock = env
    backend.node_records = [node("a4k-1", flags=("DRAIN",), reason="x"), node("a4k-2")]
    tick(svc, clock)
    backend.down = True
    rep = tick(svc, clock)
    assert not rep.polled
    ctl = rows(svc, "slurmctld:slipway")
    assert len(ctl) == 1 and ctl[0].detail.startswith("Slurm's controller does not answer: ")
    assert "slurmctld is down (fake)" in ctl[0].detail
    assert rows(svc, "node-drained:a4k-1")[0].resolved_at is None   # unknown: left open
    tick(svc, clock)
    assert len(rows(svc, "slurmctld:slipway")) == 1
    backend.down = False
    tick(svc, clock)
    assert rows(svc, "slurmctld:slipway")[0].resolution == "slurmctld answered squeue"
    assert [m.subject.split("] ")[1] for m in alarm_mails(svc)] == [
        "ALARM: node drained: a4k-1", "ALARM: slurmctld unreachable: slipway",
        "resolved: slurmctld unreachable: slipway"]


def test_accounting_failures_open_slurmdbd(env):
    svc, backend, clock = env
    pid = add_project(svc, "nlp", "p")
    add_job(svc, pid, branch="b", state="running", slurm_job_id=77, node="a4k-1")
    backend.accounting_down = True   # the job left the queue; sacct does not answer
    tick(svc, clock)
    (a,) = rows(svc, "slurmdbd:slipway")
    assert a.detail.startswith("Slurm's accounting (sacct, slurmdbd) does not answer")
    tick(svc, clock)
    assert len(rows(svc, "slurmdbd:slipway")) == 1
    backend.accounting_down = False
    tick(svc, clock)
    assert rows(svc, "slurmdbd:slipway")[0].resolved_at is not None


def test_a_slow_tick_and_a_stuck_reconciler(env):
    svc, backend, clock = env
    tick(svc, clock)
    slow = TickReport(polled=True, duration_s=90.0)
    alarms.evaluate(svc, svc.now(), {}, HEALTHY, slow)
    (a,) = rows(svc, "reconciler-lag:slipway")
    assert a.detail == "a reconciler tick took 90 s (the limit is 60 s)"
    tick(svc, clock)
    assert rows(svc, "reconciler-lag:slipway")[0].resolution.startswith("the reconciler keeps up")
    # no tick for two minutes: the page (API, CLI) sees it without Slurm
    clock.advance(seconds=120)
    calls = backend.jobs_calls
    d = alarms.page(svc, Actor(1, "ops", True))
    assert d["reconciler"]["behind"] and d["reconciler"]["age_s"] == 120.0
    assert [x["key"] for x in d["open"]] == ["reconciler-lag:slipway"]
    assert "no reconciler tick has finished for 120 s" in d["open"][0]["detail"]
    alarms.page(svc, Actor(1, "ops", True))     # asked again: still one alarm, one mail
    assert backend.jobs_calls == calls          # no Slurm call from the page
    assert len(rows(svc, "reconciler-lag:slipway")) == 2
    assert [m.subject for m in alarm_mails(svc)].count(
        "[Slipway slipway] ALARM: reconciler behind: slipway") == 2
    tick(svc, clock)                            # it runs again: resolved
    assert rows(svc, "reconciler-lag:slipway")[-1].resolved_at is not None
    assert alarms.page(svc, Actor(3, "owner"))["reconciler"] is None   # admins only


# ------------------------------------------------------------------------ the database

def test_a_burst_of_failed_jobs(env):
    svc, backend, clock = env
    pid = add_project(svc, "nlp", "p")
    for i in range(4):
        add_job(svc, pid, branch=f"f{i}", state="failed", ended_at=clock.t)
    tick(svc, clock)
    assert rows(svc, "failed-jobs:slipway") == []
    add_job(svc, pid, branch="f4", state="failed", ended_at=clock.t)
    add_job(svc, pid, branch="old", state="failed", ended_at=clock.t - timedelta(hours=1))
    tick(svc, clock)
    (a,) = rows(svc, "failed-jobs:slipway")
    assert a.detail == "5 jobs failed in the last 10 minutes (the limit is 5); by team: nlp: 5"
    tick(svc, clock, seconds=601)   # the window moved past them
    assert rows(svc, "failed-jobs:slipway")[0].resolution == "0 jobs failed in the last 10 minutes"


def test_a_low_balance_mails_the_admins_and_the_teams_owners_and_administrators(env):
    svc, backend, clock = env
    tick(svc, clock)
    add_charge(svc, "nlp", 9001, "21.00", 0)   # $4.00 left
    tick(svc, clock)
    (a,) = rows(svc, "balance:nlp")
    assert a.detail == "team nlp's balance is $4.00, under $5.00: jobs stop at $0.00"
    assert sorted(m.to for m in alarm_mails(svc)) == [ADMIN_MAIL, "owner@example.org",
                                                      "teamadmin@example.org"]
    tick(svc, clock)
    assert len(alarm_mails(svc)) == 3
    billing.add_funds(svc.db, "nlp", "10.00", by="test", now=svc.now())
    tick(svc, clock)
    assert rows(svc, "balance:nlp")[0].resolution == "team nlp's balance is $14.00"
    assert len(alarm_mails(svc)) == 6
    # a team never funded has no balance to watch
    add_team(svc, "empty", {"owner": "owner"})
    tick(svc, clock)
    assert rows(svc, "balance:empty") == []


def test_storage_near_quota(env):
    svc, backend, clock = env
    pid = add_project(svc, "nlp", "p")
    add_job(svc, pid, branch="o", state="succeeded", output_state="kept", output_bytes=850)
    with svc.db.transaction() as s:
        s.scalar(select(Team).where(Team.name == "nlp")).storage_quota_bytes = 1000
    tick(svc, clock)
    assert rows(svc, "storage:nlp") == []
    add_job(svc, pid, branch="o2", state="succeeded", output_state="kept", output_bytes=100)
    tick(svc, clock, seconds=5)
    assert rows(svc, "storage:nlp") == []           # measured at most once a minute
    tick(svc, clock, seconds=60)
    (a,) = rows(svc, "storage:nlp")
    assert a.detail == "team nlp uses 950 B of its 1.00 kB storage quota (95%; the alarm is at 90%)"
    assert "owner@example.org" in {m.to for m in alarm_mails(svc)}


# ------------------------------------------------------- two reconcilers, restarts, mail

def test_two_reconcilers_do_not_double_open(env, tmp_path, monkeypatch):
    svc, backend, clock = env
    other_backend = FakeBackend(node_records=[node("a4k-1", flags=("DRAIN",), reason="x"),
                                              node("a4k-2")])
    other = make_services(tmp_path, backend=other_backend, clock=clock)   # the same database
    backend.node_records = list(other_backend.node_records)
    tick(svc, clock)
    Reconciler(other).tick()
    assert len(rows(svc, "node-drained:a4k-1")) == 1
    assert len(alarm_mails(svc)) == 1 and alarm_mails(other) == []
    # the race itself: the second one did not see the first's alarm; the index stops it
    backend.node_records = [node("a4k-1", flags=("DRAIN",), reason="x"), node("a4k-2", "down")]
    tick(svc, clock)
    monkeypatch.setattr(alarm_store, "open_alarms", lambda s: {})
    other_backend.node_records = list(backend.node_records)
    Reconciler(other).tick()
    assert len(rows(svc, "node-down:a4k-2")) == 1 and len(rows(svc, "node-drained:a4k-1")) == 1
    assert alarm_mails(other) == []
    with svc.db.session() as s:
        assert s.scalar(select(func.count()).select_from(AlarmMail)) == 2
    with pytest.raises(IntegrityError):
        with svc.db.transaction() as s:
            s.add(Alarm(key="node-down:a4k-2", kind="node-down", subject="a4k-2", detail="",
                        opened_at=clock.t))
    other.db.dispose()


def test_a_restart_never_sends_again_and_a_failed_mail_is_tried_again(env, tmp_path):
    svc, backend, clock = env
    backend.node_records = [node("a4k-1", flags=("DRAIN",), reason="x"), node("a4k-2")]

    class Broken:
        def __init__(self):
            self.tries = 0

        def send(self, to, subject, body):
            self.tries += 1
            raise OSError("connection refused")

    inbox, broken = svc.mailer, Broken()
    svc.mailer = broken
    tick(svc, clock)
    assert broken.tries == 1
    with svc.db.session() as s:
        (m,) = s.scalars(select(AlarmMail))
        assert (m.state, m.attempts, m.error) == ("pending", 1, "OSError: connection refused")
    tick(svc, clock, seconds=5)
    assert broken.tries == 1          # not before its next try (a minute later)
    svc.mailer = inbox
    tick(svc, clock, seconds=60)
    assert len(alarm_mails(svc)) == 1
    restarted = make_services(tmp_path, backend=backend, clock=clock)
    for _ in range(2):
        clock.advance(seconds=5)
        Reconciler(restarted).tick()
    assert alarm_mails(restarted) == [] and len(alarm_mails(svc)) == 1
    with svc.db.session() as s:
        (m,) = s.scalars(select(AlarmMail))
        assert (m.state, m.attempts, m.sent_at) == ("sent", 2, clock.t - timedelta(seconds=10))
    # a message claimed by a live sender is left alone; a stale claim is taken over
    with svc.db.transaction() as s:
        a = s.scalar(select(Alarm))
        s.add(AlarmMail(alarm_id=a.id, event="opened", to_addr="late@example.org",
                        state="pending", created_at=clock.t, claimed_at=clock.t, attempts=0))
    assert alarm_mail.deliver(svc) == 0
    clock.advance(minutes=11)
    assert alarm_mail.deliver(svc) == 1 and alarm_mails(svc)[-1].to == "late@example.org"
    restarted.db.dispose()


def test_without_mail_alarms_are_only_on_the_web(env):
    svc, backend, clock = env
    svc.mailer = None
    backend.node_records = [node("a4k-1", flags=("DRAIN",), reason="x"), node("a4k-2")]
    tick(svc, clock)
    assert len(rows(svc)) == 1
    with svc.db.session() as s:
        assert s.scalar(select(func.count()).select_from(AlarmMail)) == 0


# ---------------------------------------------------------------------------- front doors

@pytest.fixture
def served(env):
    svc, backend, clock = env
    add_team(svc, "vision", {"member": "owner"}, funds="2.00")   # member owns a low team
    backend.node_records = [node("a4k-1", flags=("DRAIN",), reason="fan"), node("a4k-2")]
    add_charge(svc, "nlp", 9002, "22.00", 0)
    tick(svc, clock)
    backend.node_records = list(HEALTHY)
    tick(svc, clock)            # the drain resolved: history
    backend.node_records = [node("a4k-1"), node("a4k-2", "down")]
    tick(svc, clock)
    app = create_app(svc)
    if "alarms" not in app.blueprints:   # until the lead registers it in portal/web
        app.register_blueprint(alarms_bp)
    return svc, app


def _context_of(app, client, path) -> dict:
    """The template context ``path`` was rendered with."""
    from flask import template_rendered

    seen = []

    def record(sender, template, context, **extra):
        seen.append(context)

    with template_rendered.connected_to(record, app):
        assert client.get(path).status_code == 200
    return seen[-1]


def test_the_admin_page_lists_open_alarms_then_the_history(served):
    svc, app = served
    c = app.test_client()
    login(c, "ops", "pw-ops")
    html = c.get("/admin/alarms").get_data(as_text=True)
    assert html.index('id="open-alarms"') < html.index("node-down:a4k-2") < html.index('id="alarm-history"')
    assert html.index('id="alarm-history"') < html.index('data-alarm="node-drained:a4k-1"')
    assert "balance:nlp" in html and "balance:vision" in html and "Last tick ended" in html
    assert _context_of(app, c, "/admin/alarms")["open_alarms"] == 3   # the header's count
    assert c.get("/admin/alarms?page=0").status_code == 400
    for who in ("owner", "member"):
        c2 = app.test_client()
        login(c2, who, f"pw-{who}")
        assert c2.get("/admin/alarms").status_code == 404
        assert _context_of(app, c2, "/")["open_alarms"] is None
    # accept the GPU count: a form with the CSRF token
    r = c.post("/admin/alarms/nodes/a4k-1/accept-gpus", data={"csrf_token": csrf_token(c)})
    assert r.status_code == 302


def test_the_api_shows_admins_everything_and_members_their_teams_money_alarms(served):
    svc, app = served
    c = app.test_client()
    login(c, "ops", "pw-ops")
    d = c.get("/api/alarms?all=1").get_json()
    assert sorted(a["key"] for a in d["open"]) == ["balance:nlp", "balance:vision", "node-down:a4k-2"]
    assert [a["key"] for a in d["history"]] == ["node-drained:a4k-1"] and d["history_total"] == 1
    assert d["history"][0]["mail"] == {"sent": 2, "pending": 0, "failed": 0}
    assert d["reconciler"]["behind"] is False
    assert c.get("/api/alarms").get_json()["history"] is None
    assert c.get("/api/alarms?all=maybe").status_code == 400
    assert c.get("/api/alarms?per_page=999").status_code == 400
    m = app.test_client()
    login(m, "member", "pw-member")   # a user in nlp, the owner of vision
    d = m.get("/api/alarms?all=1").get_json()
    assert sorted(a["key"] for a in d["open"]) == ["balance:nlp", "balance:vision"]
    assert d["reconciler"] is None and d["history"] == []
    r = m.post("/api/alarms/nodes/a4k-1/accept-gpus", headers={"X-CSRFToken": csrf_token(m)})
    assert r.status_code == 403


def _cli(svc, *args, actor=None, ok=True):
    if "alarms" not in main.commands:   # until the lead registers it in portal/cli
        main.add_command(alarms_cli.alarms)
    argv = (["--as", actor] if actor else []) + list(args)
    r = CliRunner().invoke(main, argv, obj=Ctx(services=svc),
                           env={"SLIPWAY_URL": None, "SLIPWAY_USER": None}, catch_exceptions=False)
    assert (r.exit_code == 0) == ok, (argv, r.output)
    return r.output


def test_the_cli_lists_alarms_in_words_and_json(served):
    svc, _app = served
    out = _cli(svc, "alarms")
    assert "reconciler: last tick ended" in out and "Open alarms (3)" in out
    assert "node down" in out and "History" not in out
    out = _cli(svc, "alarms", "--all")
    assert "History (page 1 of 1, 1 resolved)" in out and "node a4k-1 is idle" in out
    d = json.loads(_cli(svc, "alarms", "--all", "--json"))
    assert d == alarms.page(svc, Actor(0, "root", True), history=True)
    d = json.loads(_cli(svc, "alarms", "--json", actor="owner"))
    assert [a["key"] for a in d["open"]] == ["balance:nlp"]
    assert "only cluster administrators" in _cli(svc, "alarms", "accept-gpus", "a4k-1",
                                                 actor="owner", ok=False)
    assert "no GPU count is recorded" in _cli(svc, "alarms", "accept-gpus", "zz", ok=False)


def test_the_cli_in_remote_mode_prints_what_local_mode_prints(served):
    from tests.support.git_server import serve
    from portal.identity.tokens import create_token
    from portal.db import User

    svc, app = served
    with svc.db.transaction() as s:
        token = create_token(s, s.scalar(select(User).where(User.name == "ops")), "cli", now=svc.now())
    if "alarms" not in main.commands:
        main.add_command(alarms_cli.alarms)
    with serve(app) as base:
        for args in (["alarms"], ["alarms", "--all"], ["alarms", "--all", "--json"]):
            r = CliRunner().invoke(main, ["--url", base, *args], obj=Ctx(services=svc),
                                   env={"SLIPWAY_TOKEN": token, "SLIPWAY_USER": None},
                                   catch_exceptions=False)
            assert r.exit_code == 0, r.output
            assert r.output == _cli(svc, *args), args


def test_the_schema_keeps_one_open_alarm_per_key(env):
    svc, _backend, _clock = env
    with svc.db.engine.connect() as c:
        if c.dialect.name == "sqlite":
            sql = c.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name='uq_alarms_open_key'").scalar()
            assert "UNIQUE" in sql and "WHERE resolved_at IS NULL" in sql
    with svc.db.transaction() as s:   # resolved alarms with the same key may be many
        for _ in range(2):
            s.add(Alarm(key="x:y", kind="x", subject="y", detail="", opened_at=svc.now(),
                        resolved_at=svc.now()))
    assert len(rows(svc, "x:y")) == 2
