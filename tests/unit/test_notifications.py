"""Users' notifications (issue 15 part 6, docs/MONITORING.md): one mail per job end to its
pusher, driven by the reconciler's tick against the fake Slurm; ends outside the reconciler;
each kind on or off; no address or no mail configured: nothing sent, nothing fails; a mail
server that is down: retried, never sent twice; low balance once per crossing; the workspace
idle mail; the settings page, the API and the CLI."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.adapters.mail import SmtpMailer
from portal.api import notifications as _api_routes  # noqa: F401  (its routes join /api)
from portal.app import create_app
from portal.cli.context import Ctx
from portal.cli.notifications import notifications as notifications_cli
from portal.db import Job, LedgerEntry, Membership, ReconcilerState, User, to_micros
from portal.db.notify_models import Notification, NotifyTeamBalance
from portal.jobs import service
from portal.jobs.reconciler import Reconciler
from portal.monitoring import notify, notify_jobs, notify_outbox, notify_settings as settings
from portal.teams.access import Actor, OpError
from portal.web.notifications import bp as notifications_bp
from tests.support.fakes import Clock, FakeBackend, InMemoryMailer, Mail, make_services, seed
from tests.support.web import csrf_token, login, set_password

BASE = "http://portal.example"


@pytest.fixture
def env(tmp_path):
    backend, clock, mailer = FakeBackend(), Clock(), InMemoryMailer()
    svc = make_services(tmp_path, backend=backend, clock=clock, mailer=mailer, base_url=BASE,
                        storage_interval=10**9)
    ids = seed(svc)
    set_email(svc, "alice", "alice@example.org")
    yield svc, backend, clock, mailer, ids
    svc.db.dispose()


def set_email(svc, name, email):
    with svc.db.transaction() as s:
        s.scalar(select(User).where(User.name == name)).email = email


def add_user(svc, name, team_id=None, role="user", email=None) -> int:
    with svc.db.transaction() as s:
        u = User(name=name, unix_user=f"sw-{name}", email=email, created_at=svc.now())
        s.add(u)
        s.flush()
        if team_id:
            s.add(Membership(user_id=u.id, team_id=team_id, role=role, created_at=svc.now()))
        return u.id


def make_job(svc, slurm_id, state="running", branch="exp-1", pusher=1, **extra) -> int:
    now = svc.now()
    with svc.db.transaction() as s:
        job = Job(project_id=1, branch=branch, commit_sha="c0ffee" + "0" * 34, pusher_id=pusher,
                  state=state, slurm_job_id=slurm_id, gpu_type="a4000", gpu_count=1,
                  image="python", time_limit_min=60, created_at=now, state_changed_at=now,
                  submitted_at=now if slurm_id else None,
                  started_at=now if state == "running" else None, **extra)
        s.add(job)
        s.flush()
        return job.id


def job(svc, jid) -> Job:
    with svc.db.session() as s:
        return s.get(Job, jid)


def rows(svc, **where) -> list[Notification]:
    with svc.db.session() as s:
        q = select(Notification).order_by(Notification.id)
        for k, v in where.items():
            q = q.where(getattr(Notification, k) == v)
        return list(s.scalars(q))


def with_results(svc, jid, ref="refs/heads/exp-1", sha="ab" * 20, updated=True):
    with svc.db.transaction() as s:
        j = s.get(Job, jid)
        j.results_ref, j.results_sha, j.branch_updated = ref, sha, updated


def run_and_end(svc, backend, clock, slurm_state="COMPLETED", minutes=10, exit_code=0,
                results=True, branch="exp-1", slurm_id=11):
    """A job runs ``minutes`` in the fake Slurm and ends in ``slurm_state``: its id."""
    jid = make_job(svc, slurm_id, branch=branch)
    t0 = clock()
    backend.set_queue(slurm_id, "RUNNING", start=t0, gpus={"a4000": 1})
    Reconciler(svc).tick()
    if results:
        with_results(svc, jid, ref=f"refs/heads/{branch}")
    end = clock.advance(minutes=minutes)
    backend.finish(slurm_id, slurm_state, start=t0, end=end, exit_code=exit_code)
    clock.advance(seconds=5)
    return jid


# ------------------------------------------------------------------------------- job ends

def test_a_job_end_sends_its_pusher_one_mail_with_state_cost_results_and_link(env):
    svc, backend, clock, mailer, _ids = env
    jid = run_and_end(svc, backend, clock, minutes=10)
    report = Reconciler(svc).tick()
    assert (jid, "running", "succeeded") in report.changes
    j = job(svc, jid)
    assert j.state == "succeeded" and j.cost == Decimal("0.083333")   # 10 min of $0.50/h
    [mail] = mailer.sent
    assert mail.to == "alice@example.org"
    assert mail.subject == f"Slipway: job {jid} succeeded (nlp/proj exp-1)"
    assert "State:    succeeded" in mail.body
    assert "Cost:     $0.083 (exactly 0.083333 USD)" in mail.body
    assert f"refs/heads/exp-1 at {'ab' * 6}; branch exp-1 updated" in mail.body
    assert f"Job page: {BASE}/jobs/{jid}" in mail.body
    assert "commit c0ffee000000" in mail.body and "on a4k-1" in mail.body
    assert f"{BASE}/settings/notifications" in mail.body
    # more ticks, a second reconciler, a restart: never a second mail
    Reconciler(svc).tick()
    clock.advance(minutes=5)
    Reconciler(svc).tick()
    notify.after_tick(svc, svc.now(), type("R", (), {"changes": [(jid, "running", "succeeded")],
                                                    "errors": []})())
    assert len(mailer.sent) == 1
    [row] = rows(svc, kind="job_ended")
    assert (row.subject, row.status, row.attempts, row.email) == (str(jid), "sent", 1,
                                                                  "alice@example.org")


def test_failed_and_cancelled_jobs_say_why(env):
    svc, backend, clock, mailer, _ids = env
    failed = run_and_end(svc, backend, clock, "FAILED", exit_code=3, results=False)
    clock.advance(seconds=61)   # it ran but reported no results: told after a short wait
    Reconciler(svc).tick()
    cancelled = make_job(svc, 12, branch="exp-2")
    backend.set_queue(12, "RUNNING", start=clock(), gpus={"a4000": 1})
    Reconciler(svc).tick()
    service.request_cancel(svc, cancelled, by="alice")
    backend.finish(12, "CANCELLED", start=clock(), end=clock.advance(minutes=2))
    with_results(svc, cancelled, ref="refs/heads/exp-2", updated=False)
    Reconciler(svc).tick()
    by_subject = {m.subject: m for m in mailer.sent}
    f = by_subject[f"Slipway: job {failed} failed (nlp/proj exp-1)"]
    assert "Reason:   exit code 3" in f.body and "Exit code: 3" in f.body
    assert "Results:  none pushed" in f.body
    c = by_subject[f"Slipway: job {cancelled} was cancelled (nlp/proj exp-2)"]
    assert "Reason:   cancelled by alice" in c.body and "branch exp-2 was not updated" in c.body
    assert len(mailer.sent) == 2
    assert {r.kind for r in rows(svc)} == {"job_failed", "job_cancelled"}


def test_the_mail_waits_a_little_for_the_results_report_then_goes_without_it(env):
    svc, backend, clock, mailer, _ids = env
    jid = run_and_end(svc, backend, clock, results=False)
    Reconciler(svc).tick()
    assert job(svc, jid).state == "succeeded" and mailer.sent == []   # results may be coming
    with_results(svc, jid)                                             # the runner's report
    Reconciler(svc).tick()
    [mail] = mailer.sent
    assert "refs/heads/exp-1 at abababababab" in mail.body


def test_a_queued_job_cancelled_before_submission_is_told_too(env):
    svc, backend, clock, mailer, _ids = env
    Reconciler(svc).tick()          # the watch list exists before the job
    jid = make_job(svc, None, state="queued")
    r = service.request_cancel(svc, jid, by="alice", reason="not needed")
    assert r.state == "cancelled" and backend.cancels == []
    backend.down = True             # even with Slurm not answering
    Reconciler(svc).tick()
    [mail] = mailer.sent
    assert mail.subject == f"Slipway: job {jid} was cancelled (nlp/proj exp-1)"
    assert "Reason:   not needed" in mail.body and "none (it never started)" in mail.body
    assert "Cost:     $0.00" in mail.body
    Reconciler(svc).tick()
    assert len(mailer.sent) == 1


def test_the_first_look_tells_recent_ends_only_and_the_watch_list_stays_small(env):
    svc, _backend, clock, mailer, _ids = env
    old = make_job(svc, None, state="queued", branch="old")
    service.request_cancel(svc, old, by="alice")
    clock.advance(hours=2)
    recent = make_job(svc, None, state="queued", branch="recent")
    service.request_cancel(svc, recent, by="alice")
    waiting = make_job(svc, 13, state="pending", branch="waiting")
    notify.after_tick(svc, svc.now(), type("R", (), {"changes": [], "errors": []})())
    assert [m.subject for m in mailer.sent] == [f"Slipway: job {recent} was cancelled "
                                                f"(nlp/proj recent)"]
    with svc.db.session() as s:
        state = s.get(ReconcilerState, notify_jobs.STATE_KEY).value
    assert f'"watch": [{waiting}]' in state and f'"max_id": {waiting}' in state


# --------------------------------------------------------------------- settings and skips

def test_each_kind_turns_off_and_on(env):
    svc, backend, clock, mailer, ids = env
    alice = Actor(ids["user_id"], "alice")
    assert settings.show(svc, alice)["settings"] == dict.fromkeys(settings.KINDS, True)
    shown = settings.update(svc, alice, {"job_ended": False, "job_failed": "on"})
    assert shown["settings"]["job_ended"] is False and shown["settings"]["job_failed"] is True
    ok = run_and_end(svc, backend, clock)
    Reconciler(svc).tick()
    assert mailer.sent == []
    [row] = rows(svc, subject=str(ok))
    assert (row.status, row.detail) == ("skipped", "turned off in the notification settings")
    bad = run_and_end(svc, backend, clock, "FAILED", exit_code=1, branch="exp-2", slurm_id=12)
    Reconciler(svc).tick()
    assert [m.subject for m in mailer.sent] == [f"Slipway: job {bad} failed (nlp/proj exp-2)"]
    settings.update(svc, alice, {"job_ended": True})
    Reconciler(svc).tick()
    assert len(mailer.sent) == 1    # turning it back on never sends what was skipped


def test_bad_settings_are_refused_with_what_is_wrong(env):
    svc, _b, _c, _m, ids = env
    alice = Actor(ids["user_id"], "alice")
    with pytest.raises(OpError, match="unknown notification kind 'job_done'; the kinds are: "
                                      "job_ended, job_failed"):
        settings.update(svc, alice, {"job_done": False})
    with pytest.raises(OpError, match="must be on or off, not 'maybe'"):
        settings.update(svc, alice, {"job_ended": False, "job_failed": "maybe"})
    assert settings.show(svc, alice)["settings"]["job_ended"] is True   # nothing half-applied
    with pytest.raises(OpError, match="not an email address"):
        settings.set_email(svc, alice, "Alice <alice@example.org>")
    with pytest.raises(OpError, match="operator.*--as USER"):
        settings.show(svc, Actor(0, "root", True))
    with svc.db.transaction() as s:
        s.get(User, ids["user_id"]).ldap_dn = "uid=alice,ou=people,dc=example"
    with pytest.raises(OpError, match="comes from the directory"):
        settings.set_email(svc, alice, "other@example.org")


def test_a_user_without_an_address_gets_nothing_and_nothing_fails(env):
    svc, backend, clock, mailer, _ids = env
    set_email(svc, "alice", None)
    jid = run_and_end(svc, backend, clock)
    report = Reconciler(svc).tick()
    assert mailer.sent == [] and not [e for e in report.errors if "notif" in e]
    [row] = rows(svc, subject=str(jid))
    assert (row.status, row.detail) == ("skipped", "no email address")


def test_no_mail_configured_sends_nothing_and_fails_nothing(env):
    svc, backend, clock, mailer, ids = env
    svc.mailer = None
    jid = run_and_end(svc, backend, clock)
    report = Reconciler(svc).tick()
    assert job(svc, jid).state == "succeeded" and mailer.sent == []
    assert not [e for e in report.errors if "notif" in e]
    assert rows(svc)[0].detail == notify_outbox.MAIL_OFF
    shown = settings.show(svc, Actor(ids["user_id"], "alice"))
    assert shown["mail"] is False and shown["note"].startswith("mail is off")


class FlakyMailer:
    """Refuses while ``down`` (False, as SmtpMailer answers), or raises."""

    def __init__(self):
        self.down, self.raises, self.sent, self.tries = True, False, [], 0

    def send(self, to, subject, body):
        self.tries += 1
        if self.raises:
            raise OSError("boom")
        if self.down:
            return False
        self.sent.append(Mail(to, subject, body))
        return True


def test_a_mail_server_down_costs_one_try_per_tick_and_the_mail_goes_later_once(env):
    svc, backend, clock, _m, _ids = env
    svc.mailer = mailer = FlakyMailer()
    a, b = make_job(svc, 11), make_job(svc, 12, branch="exp-2")
    t0 = clock()
    for slurm_id, jid, branch in ((11, a, "exp-1"), (12, b, "exp-2")):
        with_results(svc, jid, ref=f"refs/heads/{branch}")
        backend.finish(slurm_id, "COMPLETED", start=t0, end=clock.advance(minutes=3))
    report = Reconciler(svc).tick()
    assert job(svc, a).state == job(svc, b).state == "succeeded"
    assert mailer.tries == 1   # the first refusal stops this tick's sending
    assert "mail server did not take a message" in " ".join(report.errors)
    first = rows(svc, subject=str(a))[0]
    assert (first.status, first.attempts) == ("queued", 1) and "did not take it" in first.detail
    clock.advance(seconds=10)
    Reconciler(svc).tick()
    assert mailer.tries == 1   # nothing tried for 30 s after a failure
    mailer.raises = True
    clock.advance(seconds=21)
    Reconciler(svc).tick()      # a mailer that raises never breaks the tick either
    assert mailer.tries == 2
    mailer.raises = mailer.down = False
    clock.advance(minutes=2)
    Reconciler(svc).tick()
    Reconciler(svc).tick()
    assert sorted(m.subject for m in mailer.sent) == sorted(
        f"Slipway: job {j} succeeded (nlp/proj {br})" for j, br in ((a, "exp-1"), (b, "exp-2")))
    assert {r.status for r in rows(svc)} == {"sent"}


def test_a_message_refused_every_time_is_given_up(env):
    svc, _b, clock, _m, ids = env
    svc.mailer = FlakyMailer()
    with svc.db.transaction() as s:
        [nid] = notify_outbox.enqueue(s, svc, [notify_outbox.Notice(
            "job_ended", "999", ids["user_id"], "t", "b")])
    for _ in range(notify_outbox.MAX_ATTEMPTS + 2):
        notify_outbox.flush(svc)
        clock.advance(minutes=20)
    [row] = rows(svc)
    assert (row.id, row.status, row.attempts) == (nid, "failed", notify_outbox.MAX_ATTEMPTS)
    assert row.detail.startswith("gave up: the mail server did not take it")


# --------------------------------------------------------------------------- low balance

def charge(svc, team_id, dollars, key):
    with svc.db.transaction() as s:
        s.add(LedgerEntry(team_id=team_id, kind="gpu", amount_micros=-to_micros(dollars),
                          idempotency_key=f"test:{key}", created_by="test",
                          created_at=svc.now()))


def low_mails(mailer):
    """This module's low-balance mails (the alarms' own "team balance low" mail is theirs)."""
    return [m for m in mailer.sent if m.subject.startswith("Slipway: team ")]


def test_low_balance_tells_owners_and_administrators_once_per_crossing(env):
    svc, _backend, clock, mailer, ids = env
    team = ids["team_id"]
    add_user(svc, "bob", team, "administrator", "bob@example.org")
    add_user(svc, "carol", team, "user", "carol@example.org")
    tick = lambda: Reconciler(svc).tick()  # noqa: E731
    tick()                                       # $25.00: seen, above
    charge(svc, team, "21.00", 1)                # $4.00 < $5.00
    tick()
    tick()
    low = low_mails(mailer)
    assert sorted(m.to for m in low) == ["alice@example.org", "bob@example.org"]
    assert low[0].subject == "Slipway: team nlp's balance is under $5.00"
    assert "it is $4.00 now" in low[0].body and f"{BASE}/teams/nlp/billing" in low[0].body
    from portal.billing import ledger as billing
    billing.add_funds(svc.db, "nlp", "10.00", by="test", now=clock.advance(minutes=1))
    tick()                                       # $14.00: back above, no mail
    charge(svc, team, "10.00", 2)                # $4.00 again: a second crossing
    tick()
    tick()
    assert len(low_mails(mailer)) == 4
    with svc.db.session() as s:
        st = s.get(NotifyTeamBalance, team)
        assert (st.low, st.crossings) == (True, 2)


def test_a_team_first_seen_under_the_threshold_is_not_told_until_it_crosses(env):
    svc, _b, _c, mailer, ids = env
    charge(svc, ids["team_id"], "24.00", 1)
    Reconciler(svc).tick()
    assert low_mails(mailer) == []


# ------------------------------------------------------------------------------ workspaces

def test_workspace_mails_follow_the_setting_and_the_stop_mail_replaces_the_cancelled_one(env):
    svc, _backend, clock, mailer, ids = env
    Reconciler(svc).tick()
    ws = make_job(svc, 21, kind="workspace")
    assert notify.workspace_mail(svc, ws, "reminded", "Slipway: workspace idle", "idle\n",
                                 at=clock())
    assert not notify.workspace_mail(svc, ws, "reminded", "again", "x", at=clock())  # once
    assert notify.workspace_mail(svc, ws, "reminded", "Slipway: workspace idle", "idle\n",
                                 at=clock.advance(hours=1))          # a new reminder
    assert notify.workspace_mail(svc, ws, "stopped", "Slipway: workspace stopped", "stop\n")
    assert [m.subject for m in mailer.sent] == ["Slipway: workspace idle"] * 2 + [
        "Slipway: workspace stopped"]
    with svc.db.transaction() as s:
        s.get(Job, ws).state = "cancelled"
        s.get(Job, ws).state_changed_at = svc.now()
    clock.advance(seconds=61)      # past the wait for a results report
    Reconciler(svc).tick()
    assert len(mailer.sent) == 3          # not a "cancelled" mail on top of the stop mail
    [row] = rows(svc, kind="job_cancelled")
    assert row.status == "skipped" and "idle-stop mail" in row.detail
    settings.update(svc, Actor(ids["user_id"], "alice"), {"workspace_idle": "off"})
    other = make_job(svc, 22, kind="workspace", branch="exp-2")
    assert not notify.workspace_mail(svc, other, "reminded", "s", "b", at=clock())
    assert len(mailer.sent) == 3


# ------------------------------------------------------------------------ the SMTP adapter

def test_the_smtp_adapter_never_raises_when_the_server_is_down():
    from tests.support.smtp import free_port
    m = SmtpMailer("127.0.0.1", free_port(), sender="slipway@test", timeout_s=2)
    assert m.send("alice@example.org", "s", "b") is False
    assert m.failures == 1 and "127.0.0.1" in m.last_error
    assert m.send("not an address", "s", "b") is False and m.failures == 2
    assert m.send("a@b.org\nBcc: x@y.org", "s", "b") is False


def test_the_smtp_adapter_hands_a_real_server_one_message_with_a_clean_subject():
    from tests.support.smtp import smtp_server
    with smtp_server() as (port, inbox):
        m = SmtpMailer("127.0.0.1", port, sender="slipway@test")
        assert m.send("alice@example.org", "Job 7\nBcc: evil@x.org ended", "It succeeded.\n")
        [msg] = inbox.messages
    assert msg["Subject"] == "Job 7 Bcc: evil@x.org ended" and msg["Bcc"] is None
    assert msg["X-Envelope-To"] == "alice@example.org" and msg["From"] == "slipway@test"
    assert msg["Date"] and msg["Message-ID"] and msg.get_payload().strip() == "It succeeded."
    assert (m.sent, m.failures) == (1, 0)


# ----------------------------------------------------------------- page, API and CLI

def make_app(svc):
    app = create_app(svc)
    if "notifications" not in app.blueprints:   # until portal/web registers it
        app.register_blueprint(notifications_bp)
    return app


def test_the_settings_page_turns_kinds_off_and_says_when_mail_is_off(env):
    svc, _b, _c, _m, ids = env
    set_password(svc, "alice")
    app = make_app(svc)
    c = app.test_client()
    assert c.get("/settings/notifications").status_code == 302      # log in first
    assert login(c, "alice").status_code == 302
    page = c.get("/settings/notifications").get_data(as_text=True)
    assert page.count('type="checkbox"') == len(settings.KINDS) and "alice@example.org" in page
    assert 'id="mail-off"' not in page
    r = c.post("/settings/notifications", data={"job_failed": "on"})      # no CSRF token
    assert r.status_code == 400
    boxes = {k: "on" for k in settings.KINDS if k != "job_ended"}
    r = c.post("/settings/notifications", data={**boxes, "csrf_token": csrf_token(c)})
    assert r.status_code == 302
    assert settings.show(svc, Actor(ids["user_id"], "alice"))["settings"]["job_ended"] is False
    page = c.get("/settings/notifications").get_data(as_text=True)
    assert re.search(r'id="kind-job_ended"(?! checked)>', page)
    assert re.search(r'id="kind-job_failed" checked>', page)
    r = c.post("/settings/notifications/email", data={"email": "nope", "csrf_token":
                                                      csrf_token(c)})
    assert r.status_code == 400 and "not an email address" in r.get_data(as_text=True)
    svc.mailer = None
    assert 'id="mail-off"' in c.get("/settings/notifications").get_data(as_text=True)


def test_the_api_reads_and_writes_the_callers_settings(env):
    svc, _b, _c, _m, ids = env
    from portal.identity.tokens import create_token
    with svc.db.transaction() as s:
        token = create_token(s, s.get(User, ids["user_id"]), "cli", now=svc.now())
    c = make_app(svc).test_client()
    h = {"Authorization": f"Bearer {token}"}
    d = c.get("/api/notifications", headers=h).get_json()
    assert d["ok"] and d["mail"] and d["email"] == "alice@example.org"
    assert d["settings"] == dict.fromkeys(settings.KINDS, True) and d["recent"] == []
    d = c.put("/api/notifications", headers=h, json={"job_ended": False}).get_json()
    assert d["settings"]["job_ended"] is False
    r = c.put("/api/notifications", headers=h, json={"job_ended": "perhaps"})
    assert r.status_code == 400 and "on or off" in r.get_json()["error"]
    r = c.put("/api/notifications", headers=h, json={"email": "x@y.org", "nope": True})
    assert r.status_code == 400 and "unknown notification kind" in r.get_json()["error"]
    d = c.put("/api/notifications", headers=h, json={"email": "new@example.org"}).get_json()
    assert d["email"] == "new@example.org"
    assert c.get("/api/notifications").status_code == 401


def test_the_cli_shows_and_sets_for_the_as_user(env):
    svc, _b, _c, _m, ids = env
    run = lambda actor, *a: CliRunner().invoke(  # noqa: E731
        notifications_cli, list(a), obj=Ctx(actor, services=svc))
    r = run("alice", "set", "job_ended", "off")
    assert r.exit_code == 0 and "job_ended: off for alice" in r.output
    r = run("alice", "show")
    assert r.exit_code == 0 and re.search(r"job_ended\s+.*off", r.output)
    assert "mail goes to alice@example.org" in r.output
    r = run("alice", "set", "job_done", "off")
    assert r.exit_code != 0 and "job_done" in r.output
    r = run(None, "show")
    assert r.exit_code != 0 and "--as USER" in r.output
    r = run("alice", "email", "alice@new.example")
    assert r.exit_code == 0 and "alice@new.example" in r.output
    r = run("alice", "show", "--json")
    assert '"job_ended": false' in r.output and '"email": "alice@new.example"' in r.output


def test_the_smtp_adapter_checks_the_servers_certificate_and_logs_in(monkeypatch):
    import smtplib
    import ssl
    seen = {}

    class FakeSMTP:
        def __init__(self, host, port, timeout):
            seen.update(host=host, port=port, timeout=timeout)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def starttls(self, context=None):
            seen["tls"] = context

        def login(self, user, password):
            seen["login"] = (user, password)

        def send_message(self, msg):
            seen["to"] = msg["To"]

    monkeypatch.setattr(smtplib, "SMTP", FakeSMTP)
    m = SmtpMailer("mail.example", 587, sender="ops@example.org", username="u", password="p",
                   starttls=True, timeout_s=7)
    assert m.send("alice@example.org", "s", "b") is True
    assert (seen["host"], seen["port"], seen["timeout"], seen["login"], seen["to"]) == (
        "mail.example", 587, 7, ("u", "p"), "alice@example.org")
    assert seen["tls"].verify_mode == ssl.CERT_REQUIRED and seen["tls"].check_hostname


def test_the_migration_goes_down_and_up_again(tmp_path):
    from portal.db import upgrade
    from sqlalchemy import create_engine, inspect
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade_names = set(inspect(create_engine(url)).get_table_names())
    assert {"notify_settings", "notifications", "notify_team_balance"} <= upgrade_names
    from alembic import command
    from portal.db import alembic_config
    command.downgrade(alembic_config(url), "0012")
    assert not {"notify_settings", "notifications", "notify_team_balance"} & set(
        inspect(create_engine(url)).get_table_names())
    upgrade(url)
