"""Web pages with Flask's test client against a real SQLite DB (make_services + FakeBackend)."""
from __future__ import annotations

import re
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from portal.billing import ledger as billing
from portal.app import create_app
from portal.db import AccessToken, Job, Membership, Project, Team, User
from portal.jobs import runner_spec
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import csrf_token, login, make_world


@pytest.fixture
def env(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    app = create_app(svc)
    yield svc, app, ids, backend
    svc.db.dispose()


def client_as(app, name):
    c = app.test_client()
    r = login(c, name)
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    return c


def post(c, url, **data):
    data.setdefault("csrf_token", csrf_token(c))
    return c.post(url, data=data)


def balance(svc, team):
    with svc.db.session() as s:
        return billing.balance(s, s.scalar(select(Team.id).where(Team.name == team)))


# ------------------------------------------------------------------------------ login/logout

def test_anonymous_is_sent_to_login_with_local_next(env):
    _svc, app, ids, _ = env
    c = app.test_client()
    r = c.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    r = c.get("/teams/nlp")
    assert r.status_code == 302 and "/login?next=" in r.headers["Location"]
    assert c.get("/login").status_code == 200


def test_login_wrong_password_refused_and_right_one_works(env):
    _svc, app, _ids, _ = env
    c = app.test_client()
    r = login(c, "alice", "wrong")
    assert r.status_code == 401 and "wrong password" in r.get_data(as_text=True)
    r = login(c, "nobody", "pw-nobody")
    assert r.status_code == 401
    r = login(c, "alice")
    assert r.status_code == 302 and r.headers["Location"] == "/"
    page = c.get("/").get_data(as_text=True)
    assert "Dashboard" in page and "nlp" in page and "$24.25" in page  # 25 - 0.75 of charges


@pytest.mark.parametrize("nxt,expected", [
    ("/teams/nlp", "/teams/nlp"),
    ("/jobs?state=active", "/jobs?state=active"),
    ("//evil.example/x", "/"),
    ("https://evil.example/", "/"),
    ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"),
])
def test_login_next_must_be_local(env, nxt, expected):
    _svc, app, _ids, _ = env
    c = app.test_client()
    tok = csrf_token(c)
    r = c.post("/login", data={"username": "alice", "password": "pw-alice", "csrf_token": tok, "next": nxt})
    assert r.status_code == 302 and r.headers["Location"] == expected


def test_logout_is_a_csrf_protected_post(env):
    _svc, app, _ids, _ = env
    c = client_as(app, "alice")
    assert c.get("/logout").status_code == 405
    assert c.post("/logout").status_code == 400            # no CSRF token
    assert c.get("/").status_code == 200                    # still logged in
    r = post(c, "/logout")
    assert r.status_code == 302
    assert c.get("/").status_code == 302                    # logged out


def test_a_cookie_copied_before_logout_is_logged_out_too(env):
    """Logging out ends the session itself, not just this browser's cookie: a copy taken before
    (another tab, a stolen cookie) opens nothing afterwards, pages or API."""
    _svc, app, _ids, _ = env
    c = client_as(app, "alice")
    copy = app.test_client()
    copy.set_cookie("slipway_session", c.get_cookie("slipway_session").value)
    assert copy.get("/").status_code == 200
    assert copy.get("/api/teams").status_code == 200
    assert post(c, "/logout").status_code == 302
    assert copy.get("/").status_code == 302                  # to the login page
    assert copy.get("/api/teams").status_code == 401
    # logging in again opens a new session; the old cookie stays dead
    c2 = client_as(app, "alice")
    assert c2.get("/").status_code == 200 and copy.get("/").status_code == 302


def test_a_session_ends_after_its_lifetime_and_on_end_all(env):
    from datetime import timedelta

    from portal.identity import web_sessions

    svc, app, ids, _ = env
    c = client_as(app, "alice")
    assert c.get("/").status_code == 200
    real_clock = svc.clock
    svc.clock = lambda: real_clock() + timedelta(hours=svc.config.session_lifetime_hours, seconds=1)
    try:
        assert c.get("/").status_code == 302                 # too old: log in again
    finally:
        svc.clock = real_clock
    assert c.get("/").status_code == 200
    other = client_as(app, "alice")
    with svc.db.transaction() as s:
        assert web_sessions.end_all(s, ids["alice"]) >= 2
    assert c.get("/").status_code == 302 and other.get("/").status_code == 302


def test_session_cookie_flags(env):
    svc, app, _ids, _ = env
    c = app.test_client()
    r = login(c, "alice")
    cookie = [v for k, v in r.headers.items() if k == "Set-Cookie" and "slipway_session" in v][0]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    svc.config.base_url = "https://slipway.example"
    app2 = create_app(svc)
    assert app2.config["SESSION_COOKIE_SECURE"] is True
    svc.config.base_url = "http://127.0.0.1:8000"


def test_inactive_user_session_ends(env):
    svc, app, _ids, _ = env
    c = client_as(app, "carol")
    with svc.db.transaction() as s:
        s.scalar(select(User).where(User.name == "carol")).active = False
    assert c.get("/").status_code == 302


# ------------------------------------------------------------------------------------ CSRF

def test_csrf_rejected_without_token(env):
    svc, app, _ids, _ = env
    c = app.test_client()
    r = c.post("/login", data={"username": "alice", "password": "pw-alice"})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    c = client_as(app, "dave")  # a cluster administrator: the one who may add funds
    before = balance(svc, "nlp")
    r = c.post("/teams/nlp/billing/funds", data={"amount": "10"})
    assert r.status_code == 400
    r = c.post("/teams/nlp/billing/funds", data={"amount": "10", "csrf_token": "forged"})
    assert r.status_code == 400
    assert balance(svc, "nlp") == before
    # the session API also needs the token for writes
    assert c.post("/api/teams/nlp/funds", json={"amount": "10"}).status_code == 400
    tok = csrf_token(c)
    assert c.post("/api/teams/nlp/funds", json={"amount": "10"}, headers={"X-CSRFToken": tok}).status_code == 201


# ------------------------------------------------------------------------------ every page

def test_every_page_renders_for_a_member(env):
    svc, app, ids, _ = env
    for who in ("alice", "carol"):
        c = client_as(app, who)
        for url in ["/", "/jobs", "/jobs?team=nlp&state=active", "/teams/nlp", "/teams/nlp/billing",
                    "/projects/nlp/proj", f"/jobs/{ids['running']}", f"/jobs/{ids['pending']}",
                    f"/jobs/{ids['succeeded']}", "/tokens"]:
            r = c.get(url)
            assert r.status_code == 200, (who, url, r.status_code)
            body = r.get_data(as_text=True)
            assert "vision" not in body and "secret" not in body, (who, url)
            assert "<script src=\"/static/slipway.js\"" in body


def test_dashboard_lists_teams_balances_and_recent_jobs(env):
    _svc, app, ids, _ = env
    body = client_as(app, "alice").get("/").get_data(as_text=True)
    assert "$24.25" in body and f"#{ids['running']}" in body and "exp-1" in body


def test_project_page_shows_remote_url_commands_and_copy_button(env):
    svc, app, _ids, _ = env
    body = client_as(app, "carol").get("/projects/nlp/proj").get_data(as_text=True)
    url = svc.config.repo_url("nlp", "proj")
    assert url in body
    assert f"git remote add slipway {url}" in body and "git push slipway exp-1" in body
    assert f'data-copy="{url}"' in body
    assert "Storage" in body and "Delete project" not in body  # carol is a user


def test_job_page_fields(env):
    _svc, app, ids, _ = env
    c = client_as(app, "carol")
    body = c.get(f"/jobs/{ids['pending']}").get_data(as_text=True)
    assert "Resources" in body and "pending" in body
    body = c.get(f"/jobs/{ids['running']}").get_data(as_text=True)
    assert "a4k-1" in body and f"/jobs/{ids['running']}/proxy/" in body and 'id="cancel"' in body
    assert f'data-url="/api/jobs/{ids["running"]}/log"' in body
    body = c.get(f"/jobs/{ids['succeeded']}").get_data(as_text=True)
    assert "refs/heads/results/exp-0/3" in body and 'id="cancel"' not in body


def test_live_log_endpoint_reads_from_offset(env):
    svc, app, ids, _ = env
    c = client_as(app, "carol")
    jid = ids["running"]
    d = c.get(f"/api/jobs/{jid}/log?offset=0").get_json()
    assert d["data"] == "epoch 1 loss 0.93\nepoch 2 loss 0.71\n" and d["state"] == "running"
    off = d["next_offset"]
    with runner_spec.log_path(svc, jid).open("a") as fh:
        fh.write("epoch 3 loss 0.55\n")
    d = c.get(f"/api/jobs/{jid}/log?offset={off}").get_json()
    assert d["data"] == "epoch 3 loss 0.55\n" and d["offset"] == off
    d = c.get(f"/api/jobs/{ids['pending']}/log?offset=0").get_json()
    assert d["exists"] is False and d["data"] == ""


# ----------------------------------------------------------------------------- role checks

def test_user_cannot_add_funds_cluster_admin_can(env):
    svc, app, _ids, _ = env
    carol = client_as(app, "carol")
    body = carol.get("/teams/nlp/billing").get_data(as_text=True)
    assert 'id="add-funds"' not in body and "Download CSV" not in body
    assert post(carol, "/teams/nlp/billing/funds", amount="10").status_code == 403
    assert carol.get("/teams/nlp/ledger.csv").status_code == 403
    before = balance(svc, "nlp")
    bob = client_as(app, "bob")  # a team administrator requests funds, never adds them
    body = bob.get("/teams/nlp/billing").get_data(as_text=True)
    assert 'id="add-funds"' not in body and 'id="request-funds"' in body
    assert 'id="chart-spending"' in body and "Download CSV" in body
    r = post(bob, "/teams/nlp/billing/funds", amount="10.50", note="grant 7")
    assert r.status_code == 403 and "request funds" in r.get_data(as_text=True)
    dave = client_as(app, "dave")  # a cluster administrator
    assert 'id="add-funds"' in dave.get("/teams/nlp/billing").get_data(as_text=True)
    r = post(dave, "/teams/nlp/billing/funds", amount="10.50", note="grant 7")
    assert r.status_code == 302
    assert balance(svc, "nlp") == before + Decimal("10.50")
    r = post(dave, "/teams/nlp/billing/funds", amount="ten")  # refused: 400, the message, the input
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and "not a plain amount" in page and 'value="ten"' in page
    assert balance(svc, "nlp") == before + Decimal("10.50")
    assert "grant 7" in bob.get("/teams/nlp/billing").get_data(as_text=True)


def test_ledger_csv(env):
    _svc, app, _ids, _ = env
    r = client_as(app, "alice").get("/teams/nlp/ledger.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    lines = r.get_data(as_text=True).strip().splitlines()
    assert lines[0].startswith("id,created_at,kind,amount") and len(lines) == 4
    assert "attachment" in r.headers["Content-Disposition"]


def test_members_roles(env):
    svc, app, _ids, _ = env
    bob = client_as(app, "bob")     # administrator
    assert post(bob, "/teams/nlp/members/alice/remove").status_code == 403   # owner
    assert post(bob, "/teams/nlp/members", username="erin", role="owner").status_code == 403
    assert post(bob, "/teams/nlp/members", username="erin", role="user").status_code == 302
    assert post(bob, "/teams/nlp/members", username="erin", role="administrator").status_code == 302
    assert post(bob, "/teams/nlp/members/erin/remove").status_code == 302
    carol = client_as(app, "carol")
    assert post(carol, "/teams/nlp/members", username="erin", role="user").status_code == 403
    assert post(carol, "/teams/nlp/members/bob/remove").status_code == 403
    alice = client_as(app, "alice")
    r = post(alice, "/teams/nlp/members", username="alice", role="user")   # last owner
    assert r.status_code == 302
    assert "last owner" in alice.get("/teams/nlp").get_data(as_text=True)
    assert post(alice, "/teams/nlp/members", username="bob", role="owner").status_code == 302
    with svc.db.session() as s:
        roles = dict(s.execute(select(User.name, Membership.role).join(Membership)
                               .join(Team).where(Team.name == "nlp")).all())
    assert roles == {"alice": "owner", "bob": "owner", "carol": "user"}
    r = post(alice, "/teams/nlp/members", username="ghost", role="user")
    assert "there is no user" in alice.get("/teams/nlp").get_data(as_text=True)


def test_settings_validation_errors_shown(env):
    svc, app, ids, _ = env
    c = client_as(app, "carol")
    r = post(c, "/projects/nlp/proj/settings", gpu_type="a4000", gpu_count="9", image="python", time="60")
    assert r.status_code == 400
    body = r.get_data(as_text=True)
    assert 'class="problems"' in body and "a4000" in body
    r = post(c, "/projects/nlp/proj/settings", gpu_type="a4000", gpu_count="1", image="nope", time="60")
    assert r.status_code == 400 and "unknown image" in r.get_data(as_text=True)
    r = post(c, "/projects/nlp/proj/settings", gpu_type="a4000", gpu_count="1", image="python", time="soon")
    assert r.status_code == 400 and "cannot read time" in r.get_data(as_text=True)
    r = post(c, "/projects/nlp/proj/settings", gpu_type="a6000", gpu_count="2", image="python", time="2h")
    assert r.status_code == 302
    with svc.db.session() as s:
        p = s.get(Project, ids["proj"])
        assert (p.gpu_type, p.gpu_count, p.time_limit_min) == ("a6000", 2, 120)


def test_create_project_from_team_page(env):
    svc, app, _ids, _ = env
    # a plain user may not create projects (administrators and owners do), and sees no form
    carol = client_as(app, "carol")
    body = carol.get("/teams/nlp").get_data(as_text=True)
    assert 'id="new-project"' not in body and 'id="new-project-note"' in body
    r = post(carol, "/teams/nlp/projects", name="by-user", gpu_type="a4000", gpu_count="1", image="python", time="30")
    assert r.status_code == 403 and "needs role: administrator or owner" in r.get_data(as_text=True)
    assert not (svc.config.repos_root / "nlp" / "by-user.git").exists()
    with svc.db.session() as s:
        assert s.scalar(select(Project.id).where(Project.name == "by-user")) is None
    c = client_as(app, "bob")  # administrator
    assert 'id="new-project"' in c.get("/teams/nlp").get_data(as_text=True)
    r = post(c, "/teams/nlp/projects", name="new-one", gpu_type="a4000", gpu_count="2", image="python", time="30m")
    assert r.status_code == 302 and r.headers["Location"].endswith("/projects/nlp/new-one")
    assert (svc.config.repos_root / "nlp" / "new-one.git").is_dir()
    r = post(c, "/teams/nlp/projects", name="new-one", gpu_type="a4000", gpu_count="1", image="python", time="30")
    assert "exists already" in c.get("/teams/nlp").get_data(as_text=True)
    r = post(c, "/teams/nlp/projects", name="../x", gpu_type="a4000", gpu_count="1", image="python", time="30")
    assert "invalid project" in c.get("/teams/nlp").get_data(as_text=True)
    r = post(c, "/teams/nlp/projects", name="big", gpu_type="a6000", gpu_count="5", image="python", time="30")
    assert "Project not created" in c.get("/teams/nlp").get_data(as_text=True)


def test_project_delete_needs_exact_confirmation_and_admin(env):
    svc, app, ids, backend = env
    # an active job blocks deletion; end them first
    with svc.db.transaction() as s:
        for j in s.scalars(select(Job).where(Job.project_id == ids["proj"])):
            j.state = "cancelled"
    carol = client_as(app, "carol")
    assert post(carol, "/projects/nlp/proj/delete", confirm="nlp/proj").status_code == 403
    alice = client_as(app, "alice")
    r = post(alice, "/projects/nlp/proj/delete", confirm="proj")
    assert r.status_code == 302 and r.headers["Location"].endswith("/projects/nlp/proj")
    assert "type nlp/proj exactly" in alice.get("/projects/nlp/proj").get_data(as_text=True)
    assert (svc.config.repos_root / "nlp" / "proj.git").is_dir()
    log = runner_spec.log_path(svc, ids["succeeded"])
    assert log.exists()
    r = post(alice, "/projects/nlp/proj/delete", confirm="nlp/proj")
    assert r.status_code == 302 and r.headers["Location"].endswith("/teams/nlp")
    assert not (svc.config.repos_root / "nlp" / "proj.git").exists()
    assert not log.exists()
    with svc.db.session() as s:
        assert s.get(Project, ids["proj"]) is None
        assert s.scalar(select(Job).where(Job.id == ids["running"])) is None
    assert alice.get("/projects/nlp/proj").status_code == 404
    assert backend.jobs_calls == 0


def test_project_delete_refused_with_active_jobs(env):
    svc, app, _ids, _ = env
    alice = client_as(app, "alice")
    post(alice, "/projects/nlp/proj/delete", confirm="nlp/proj")
    assert "active jobs" in alice.get("/projects/nlp/proj").get_data(as_text=True)
    assert (svc.config.repos_root / "nlp" / "proj.git").is_dir()


def test_cancel_rules(env):
    svc, app, ids, backend = env
    # a plain member cancels any job of the team's projects, not only their own pushes
    carol = client_as(app, "carol")
    assert 'id="cancel"' in carol.get(f"/jobs/{ids['pending']}").get_data(as_text=True)
    r = post(carol, f"/jobs/{ids['pending']}/cancel")                          # alice's job
    assert r.status_code == 302
    assert backend.cancels == [(1002, None, False)]
    with svc.db.session() as s:
        assert s.get(Job, ids["pending"]).cancel_reason == "cancelled by carol"
    r = post(carol, f"/jobs/{ids['running']}/cancel")                          # her own
    assert r.status_code == 302
    assert backend.cancels[-1] == (1001, "TERM", True)
    # outsiders: the job does not exist for them; Slurm is not asked
    mallory = client_as(app, "mallory")
    assert post(mallory, f"/jobs/{ids['pending']}/cancel").status_code == 404
    assert len(backend.cancels) == 2
    bob = client_as(app, "bob")
    r = post(bob, f"/jobs/{ids['succeeded']}/cancel")
    assert r.status_code == 302 and "already ended" in bob.get(f"/jobs/{ids['succeeded']}").get_data(as_text=True)


def test_tokens_create_shown_once_list_revoke(env):
    svc, app, _ids, _ = env
    c = client_as(app, "erin")
    r = post(c, "/tokens", name="laptop")
    assert r.status_code == 201
    token = re.search(r'id="new-token">(swp_[^<]+)<', r.get_data(as_text=True)).group(1)
    body = c.get("/tokens").get_data(as_text=True)
    assert "laptop" in body and token not in body and token[:12] in body
    assert app.test_client().get("/api/teams", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with svc.db.session() as s:
        tid = s.scalar(select(AccessToken.id).where(AccessToken.name == "laptop"))
    assert post(c, f"/tokens/{tid}/revoke").status_code == 302
    assert app.test_client().get("/api/teams", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    # another user's token cannot be revoked
    with svc.db.session() as s:
        other = s.scalar(select(AccessToken.id).join(User).where(User.name == "mallory"))
    assert post(c, f"/tokens/{other}/revoke").status_code == 404


def test_team_create_and_owner_only_delete(env):
    svc, app, _ids, _ = env
    erin = client_as(app, "erin")
    r = post(erin, "/teams", name="lab")
    assert r.status_code == 302 and r.headers["Location"].endswith("/teams/lab")
    post(erin, "/teams/lab/members", username="bob", role="administrator")
    post(erin, "/teams/lab/projects", name="p1", gpu_type="a4000", gpu_count="1", image="python", time="60")
    bob = client_as(app, "bob")
    assert post(bob, "/teams/lab/delete", confirm="lab").status_code == 403
    r = post(erin, "/teams/lab/delete", confirm="la")
    assert r.status_code == 302 and "type lab exactly" in erin.get("/teams/lab").get_data(as_text=True)
    r = post(erin, "/teams/lab/delete", confirm="lab")
    assert r.status_code == 302
    assert erin.get("/teams/lab").status_code == 404
    assert not (svc.config.repos_root / "lab" / "p1.git").exists()


def test_cluster_admin_sees_everything(env):
    _svc, app, ids, _ = env
    dave = client_as(app, "dave")
    for url in ["/teams/nlp", "/teams/vision/billing", "/projects/vision/secret", f"/jobs/{ids['vision_job']}"]:
        assert dave.get(url).status_code == 200, url
    body = dave.get("/jobs").get_data(as_text=True)
    assert "vision/secret" in body and "nlp/proj" in body


# ---------------------------------------------------------------------------------- proxy

class _Echo(BaseHTTPRequestHandler):
    def _reply(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        out = (f"{self.command} {self.path}\ncookie={self.headers.get('Cookie')}\n"
               f"auth={self.headers.get('Authorization')}\nprefix={self.headers.get('X-Forwarded-Prefix')}\n"
               f"body={body.decode()}\n").encode()
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/landed")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("Connection", "close, X-Secret-Hop")
        self.send_header("X-Secret-Hop", "1")
        self.send_header("Keep-Alive", "timeout=5")
        self.send_header("Set-Cookie", "slipway_session=evil; Path=/")
        self.send_header("Set-Cookie", "remember_token=planted; Path=/")
        self.send_header("Set-Cookie", "theme=dark; Path=/jobs")
        self.send_header("Content-Security-Policy", "default-src 'self'")
        self.send_header("X-App", "yes")
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _reply

    def log_message(self, *a):
        pass


def test_proxy_forwards_to_running_job_only_for_members(env):
    svc, app, ids, _ = env
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        with svc.db.transaction() as s:
            s.get(Job, ids["running"]).port = port
        svc.node_address = {"a4k-1": "127.0.0.1"}.get
        carol = client_as(app, "carol")
        carol.set_cookie("remember_token", "portal-remember-me")
        jid = ids["running"]
        r = carol.get(f"/jobs/{jid}/proxy/hello?x=1", headers={"Authorization": "Bearer swp_portal"})
        assert r.status_code == 200
        text = r.get_data(as_text=True)
        assert "GET /hello?x=1" in text and f"prefix=/jobs/{jid}/proxy" in text
        # no cookie of the portal's origin reaches the job (session, remember-me), nor a token
        assert "cookie=None" in text and "slipway_session" not in text and "remember" not in text
        assert "auth=None" in text
        basic = "Basic " + __import__("base64").b64encode(b"carol:swp_secret").decode()
        text = carol.get(f"/jobs/{jid}/proxy/hello", headers={"Authorization": basic}).get_data(as_text=True)
        assert "auth=None" in text
        text = carol.get(f"/jobs/{jid}/proxy/hello", headers={"Authorization": "Bearer app-own"}).get_data(as_text=True)
        assert "auth=Bearer app-own" in text  # the job's own scheme passes
        assert r.headers.get("X-App") == "yes"
        for hop in ("Connection", "Keep-Alive", "X-Secret-Hop"):
            assert hop not in r.headers
        # the job may not set cookies on the portal's origin
        assert "Set-Cookie" not in r.headers and "evil" not in str(r.headers) and "planted" not in str(r.headers)
        assert carol.get_cookie("theme", path="/jobs") is None
        assert carol.get_cookie("remember_token").value == "portal-remember-me"
        # sandboxed into an opaque origin (no allow-same-origin); the job's own policy is kept too
        csp = r.headers.getlist("Content-Security-Policy")
        assert "sandbox allow-scripts allow-forms allow-popups" in csp and "default-src 'self'" in csp
        assert not any("allow-same-origin" in c for c in csp)
        r = carol.post(f"/jobs/{jid}/proxy/form", data="a=1", content_type="application/x-www-form-urlencoded")
        assert r.status_code == 200 and "body=a=1" in r.get_data(as_text=True)
        r = carol.get(f"/jobs/{jid}/proxy/redirect")
        assert r.status_code == 302 and r.headers["Location"] == f"/jobs/{jid}/proxy/landed"
        sandbox = "sandbox allow-scripts allow-forms allow-popups"
        assert r.headers.getlist("Content-Security-Policy") == [sandbox]
        # not running -> 409; outsiders -> 404; anonymous -> login: sandboxed all the same
        r = carol.get(f"/jobs/{ids['pending']}/proxy/")
        assert r.status_code == 409 and r.headers.getlist("Content-Security-Policy") == [sandbox]
        r = client_as(app, "mallory").get(f"/jobs/{jid}/proxy/hello")
        assert r.status_code == 404 and r.headers.getlist("Content-Security-Policy") == [sandbox]
        r = app.test_client().get(f"/jobs/{jid}/proxy/hello")
        assert r.status_code == 302 and r.headers.getlist("Content-Security-Policy") == [sandbox]
        # the portal's own pages keep their policy
        page = carol.get(f"/jobs/{jid}")
        assert "sandbox" not in page.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    finally:
        server.shutdown()


def test_proxy_reports_nothing_listening(env):
    svc, app, ids, _ = env
    svc.node_address = lambda node: "127.0.0.1"
    with svc.db.transaction() as s:
        s.get(Job, ids["running"]).port = 1  # nothing listens on port 1
    r = client_as(app, "carol").get(f"/jobs/{ids['running']}/proxy/")
    assert r.status_code == 502 and b"$PORT" in r.data
