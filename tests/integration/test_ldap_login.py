"""Login against a REAL slapd (tests/ldap_server.py): search with the service account, bind as the
user. No ldap3 MOCK anywhere."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from portal.db import Membership, Team, User
from portal.identity import passwords
from portal.identity.login import INACTIVE, INVALID, UNAVAILABLE, authenticate, verify_credentials
from tests.support.fakes import FakeBackend, make_services
from tests.ldap_server import PASSWORDS, free_port, ldap_config, ldap_server, user_dn  # noqa: F401


@pytest.fixture
def svc(tmp_path, ldap_server):  # noqa: F811
    s = make_services(tmp_path, backend=FakeBackend(), **ldap_config(ldap_server))
    yield s
    s.db.dispose()


def test_first_login_creates_user_and_personal_team(svc):
    t0 = time.perf_counter()
    user = verify_credentials(svc, "alice", PASSWORDS["alice"])
    first = time.perf_counter() - t0
    assert user is not None
    assert (user.name, user.unix_user, user.email, user.ldap_dn, user.active) == (
        "alice", "sw-alice", "alice@example.org", user_dn("alice"), True)
    assert user.password_hash is None
    with svc.db.session() as s:
        team = s.scalar(select(Team).where(Team.name == "alice"))
        assert team.personal and team.ldap_group is None
        assert [(m.user.name, m.role) for m in team.memberships] == [("alice", "owner")]
    t0 = time.perf_counter()
    again = verify_credentials(svc, "ALICE", PASSWORDS["alice"])   # uid matching ignores case
    second = time.perf_counter() - t0
    assert again is not None and again.id == user.id and again.name == "alice"
    with svc.db.session() as s:
        assert s.query(User).count() == 1 and s.query(Team).count() == 1
    print(f"\nLDAP login: first {first * 1000:.1f} ms (creates rows), next {second * 1000:.1f} ms")


@pytest.mark.parametrize("username, password", [
    ("alice", "wrong-password"),
    ("alice", ""),                       # anonymous bind would "succeed"
    ("alice", PASSWORDS["bob"]),
    ("nobody", "whatever-1"),
    ("*", PASSWORDS["alice"]),
    ("alice)(uid=*", PASSWORDS["alice"]),
    ("*)(|(uid=*", PASSWORDS["alice"]),
    ("alice*", PASSWORDS["alice"]),
    ("al*", PASSWORDS["alice"]),
    ("alice\\", PASSWORDS["alice"]),
    ("alice\x00", PASSWORDS["alice"]),
    ("", PASSWORDS["alice"]),
])
def test_refused(svc, username, password):
    r = authenticate(svc, username, password)
    assert r.user is None and r.reason == INVALID, r
    with svc.db.session() as s:
        assert s.query(User).count() == 0


def test_service_account_is_not_a_login(svc):
    from tests.ldap_server import SERVICE_PASSWORD

    assert verify_credentials(svc, "slipway", SERVICE_PASSWORD) is None


def test_local_break_glass_account_beside_ldap(svc, ldap_server):  # noqa: F811
    with svc.db.transaction() as s:
        s.add(User(name="root-admin", unix_user="root", is_cluster_admin=True,
                   password_hash=passwords.hash_password("break-glass-1"), created_at=svc.now()))
    assert verify_credentials(svc, "root-admin", "break-glass-1") is not None
    assert verify_credentials(svc, "root-admin", "wrong-pass-1") is None
    ldap_server.stop()
    # directory down: LDAP users cannot log in (and are told why), local accounts still can
    r = authenticate(svc, "alice", PASSWORDS["alice"])
    assert r.user is None and r.reason == UNAVAILABLE
    assert verify_credentials(svc, "root-admin", "break-glass-1") is not None


def test_unreachable_server_is_unavailable_not_wrong_password(tmp_path):
    from tests.ldap_server import SERVICE_DN

    s = make_services(tmp_path, backend=FakeBackend(), ldap_url=f"ldap://127.0.0.1:{free_port()}",
                      ldap_user_base="ou=people,dc=x", ldap_bind_dn=SERVICE_DN)
    try:
        r = authenticate(s, "alice", "pw-123456")
        assert r.user is None and r.reason == UNAVAILABLE
    finally:
        s.db.dispose()


def test_wrong_service_password_is_unavailable(tmp_path, ldap_server):  # noqa: F811
    cfg = dict(ldap_config(ldap_server), ldap_bind_password="nope")
    s = make_services(tmp_path, backend=FakeBackend(), **cfg)
    try:
        assert authenticate(s, "alice", PASSWORDS["alice"]).reason == UNAVAILABLE
    finally:
        s.db.dispose()


def test_inactive_user_refused(svc):
    assert verify_credentials(svc, "bob", PASSWORDS["bob"]) is not None
    with svc.db.transaction() as s:
        s.scalar(select(User).where(User.name == "bob")).active = False
    r = authenticate(svc, "bob", PASSWORDS["bob"])
    assert r.user is None and r.reason == INACTIVE


def test_existing_local_user_is_linked_not_duplicated(svc):
    with svc.db.transaction() as s:
        u = User(name="carol", unix_user="carol-old", created_at=svc.now())
        t = Team(name="carol", personal=True, created_at=svc.now())
        s.add_all([u, t])
        s.flush()
        s.add(Membership(user_id=u.id, team_id=t.id, role="owner"))
    user = verify_credentials(svc, "carol", PASSWORDS["carol"])
    assert user is not None and user.ldap_dn == user_dn("carol") and user.unix_user == "sw-carol"
    with svc.db.session() as s:
        assert s.query(User).count() == 1 and s.query(Team).count() == 1


def test_login_timing_unknown_vs_wrong(svc):
    """Unknown users also pay a bind, so timing says little (printed, loosely checked)."""
    def best(name):
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            verify_credentials(svc, name, "wrong-password")
            ts.append(time.perf_counter() - t0)
        return min(ts)

    wrong, unknown = best("alice"), best("nobody")
    print(f"\nLDAP refusal: wrong password {wrong * 1000:.1f} ms, unknown user {unknown * 1000:.1f} ms")
    assert unknown > wrong * 0.3


def test_concurrent_first_logins_make_one_user(svc):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        users = list(pool.map(lambda _: verify_credentials(svc, "bob", PASSWORDS["bob"]), range(4)))
    assert all(u is not None for u in users) and len({u.id for u in users}) == 1
    with svc.db.session() as s:
        assert s.query(User).count() == 1 and s.query(Team).count() == 1


class RecordingSlurm:
    """A Slurm backend with every method (``run`` included, so code that converges accounts with
    sacctmgr would use it): each call is recorded and fails."""

    def __init__(self):
        self.calls: list[str] = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*a, **kw):
            self.calls.append(name)
            raise AssertionError(f"Slurm was called from a page view: backend.{name}()")

        return call


def test_first_login_in_the_browser_calls_no_slurm(tmp_path, ldap_server):  # noqa: F811
    """POST /login of a user the portal has never seen (real slapd): the user and their personal
    team are made, the dashboard shows the team, and Slurm is not asked anything (its account
    comes from the reconciler's account sync, outside the request)."""
    from portal.app import create_app
    from tests.support.web import csrf_token

    slurm = RecordingSlurm()
    s = make_services(tmp_path, backend=slurm, **ldap_config(ldap_server))
    try:
        c = create_app(s).test_client()
        r = c.post("/login", data={"username": "carol", "password": PASSWORDS["carol"],
                                   "csrf_token": csrf_token(c)})
        assert r.status_code == 302 and r.headers["Location"] == "/", r.get_data(as_text=True)[:300]
        page = c.get("/")
        body = page.get_data(as_text=True)
        assert page.status_code == 200 and "Dashboard" in body
        assert 'href="/teams/carol"' in body
        with s.db.session() as db:
            team = db.scalar(select(Team).where(Team.name == "carol"))
            assert team.personal and [(m.user.name, m.role) for m in team.memberships] == [("carol", "owner")]
        assert c.get("/teams/carol").status_code == 200
        assert slurm.calls == []
    finally:
        s.db.dispose()
