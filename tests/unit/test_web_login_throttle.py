"""Failed logins are throttled per account and per address (429 + Retry-After), without the
password being checked while throttled; a right password clears the account's count."""
from __future__ import annotations

import pytest

from portal.app import create_app
from portal.testing import FakeBackend, make_services
from portal.web import auth as web_auth
from portal.web.testkit import login, make_world
from portal.web.throttle import LoginThrottle


@pytest.fixture
def env(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend(), login_max_failures=3,
                        login_max_failures_per_address=5, login_failure_window=60)
    make_world(svc)
    app = create_app(services_=svc)
    yield svc, app
    svc.db.dispose()


def test_wrong_passwords_lock_the_account_then_even_the_right_one_waits(env, monkeypatch):
    _svc, app = env
    c = app.test_client()
    for _ in range(3):
        assert login(c, "alice", "wrong").status_code == 401
    checked = []
    real = web_auth.verify
    monkeypatch.setattr(web_auth, "verify", lambda u, p: checked.append(u) or real(u, p))
    r = login(c, "alice")  # the right password, but too late
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "Too many failed logins" in r.get_data(as_text=True)
    assert checked == []  # refused without asking LDAP / the password hash
    assert login(c, "bob").status_code == 302  # another account from the same address still works


def test_address_limit_and_success_clears_the_account(env):
    _svc, app = env
    c = app.test_client()
    assert login(c, "alice", "wrong").status_code == 401
    assert login(c, "alice", "wrong").status_code == 401
    assert login(c, "alice").status_code == 302  # cleared alice's count
    c2 = app.test_client()
    for name in ("x1", "x2"):  # unknown accounts count against the address too
        assert login(c2, name, "pw").status_code == 401
    assert login(c2, "alice", "wrong").status_code == 401  # 5th failure from 127.0.0.1
    assert login(c2, "bob").status_code == 429  # the address is throttled now


def test_window_slides():
    now = [1000.0]
    t = LoginThrottle(per_user=2, per_address=100, window_s=60, clock=lambda: now[0])
    t.failed("Alice", "10.0.0.1")
    now[0] += 30
    t.failed("alice", "10.0.0.2")
    assert t.retry_after("ALICE", "10.0.0.3") == 30  # the first failure leaves the window at +60
    now[0] += 30
    assert t.retry_after("alice", "10.0.0.3") == 0
