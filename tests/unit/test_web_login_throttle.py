"""Failed logins are throttled per (account, address) and per address (429 + Retry-After), without
the password being checked while throttled; a right password forgives its address's failures.
(The owner-from-another-address and rotating-attacker cases: test_login_throttle_no_lockout.py.)"""
from __future__ import annotations

import pytest

from portal.app import create_app
from tests.support.fakes import FakeBackend, make_services
from portal.web import auth as web_auth
from tests.support.web import login, make_world
from portal.identity.throttle import LoginThrottle


@pytest.fixture
def env(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend(), login_max_failures=3,
                        login_max_failures_per_address=5, login_failure_window=60)
    make_world(svc)
    app = create_app(svc)
    yield svc, app
    svc.db.dispose()


def test_wrong_passwords_slow_their_address_then_even_the_right_one_waits(env, monkeypatch):
    _svc, app = env
    c = app.test_client()
    for _ in range(3):
        assert login(c, "alice", "wrong").status_code == 401
    checked = []
    real = web_auth.verify
    monkeypatch.setattr(web_auth, "verify", lambda u, p: checked.append(u) or real(u, p))
    r = login(c, "alice")  # the right password, but from the address that has been guessing
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "Too many failed logins" in r.get_data(as_text=True)
    assert checked == []  # refused without asking LDAP / the password hash
    assert login(c, "bob").status_code == 302  # another account from the same address still works


def test_address_limit_and_success_forgives_the_address(env):
    _svc, app = env
    c = app.test_client()
    assert login(c, "alice", "wrong").status_code == 401
    assert login(c, "alice", "wrong").status_code == 401
    assert login(c, "alice").status_code == 302  # forgave alice's failures from this address
    c2 = app.test_client()
    for name in ("x1", "x2"):  # unknown accounts count against the address too
        assert login(c2, name, "pw").status_code == 401
    assert login(c2, "alice", "wrong").status_code == 401  # 5th failure from 127.0.0.1
    assert login(c2, "bob").status_code == 429  # the address is throttled now


def test_delays_grow_then_the_window_forgets():
    """Was a sliding window that locked the account; now each failure past the free ones from an
    address doubles that address's wait, and a quiet window forgets it."""
    now = [1000.0]
    t = LoginThrottle(per_user=2, per_address=100, window_s=60, clock=lambda: now[0])
    assert t.begin("Alice", "10.0.0.1") == 0
    now[0] += 30
    assert t.begin("alice", "10.0.0.1") == 0
    assert t.retry_after("ALICE", "10.0.0.1") == 1   # 2 free failures used: wait 1 s
    assert t.begin("alice", "10.0.0.1") == 1           # refused, and not counted
    assert t.retry_after("alice", "10.0.0.3") == 0   # another address is not slowed
    now[0] += 1
    assert t.begin("alice", "10.0.0.1") == 0
    assert t.begin("alice", "10.0.0.1") == 2           # doubled
    now[0] += 60                                       # a quiet window: forgotten
    assert t.retry_after("alice", "10.0.0.1") == 0


def test_parallel_guesses_cannot_slip_past_the_limit():
    """Attempts are counted before the password is checked: of 40 simultaneous guesses at one
    account from one address only the free ones get to the password check."""
    import threading

    t = LoginThrottle(per_user=5, per_address=1000, window_s=60)
    barrier, allowed = threading.Barrier(40), []

    def guess(i):
        barrier.wait()
        if t.begin("alice", "10.0.0.1") == 0:
            allowed.append(i)
    threads = [threading.Thread(target=guess, args=(i,)) for i in range(40)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(allowed) == 5


def test_success_takes_back_its_count_and_memory_is_bounded():
    t = LoginThrottle(per_user=3, per_address=3, window_s=60, max_keys=100)
    for _ in range(10):  # ten good logins from one address never throttle it
        assert t.begin("alice", "10.0.0.1") == 0
        t.succeeded("alice", "10.0.0.1")
    assert t.retry_after("bob", "10.0.0.1") == 0
    for i in range(1000):  # a spray of user names keeps at most max_keys keys
        t.begin(f"user{i}", f"10.1.{i // 250}.{i % 250}")
    assert len(t._failures) <= 100


def test_behind_a_trusted_proxy_the_client_address_is_counted(tmp_path):
    """With trusted_proxies=1 the per-address count is the client's (X-Forwarded-For), so one
    client's failures do not lock out everyone behind the same reverse proxy."""
    from tests.support.web import csrf_token

    svc = make_services(tmp_path, backend=FakeBackend(), login_max_failures=100,
                        login_max_failures_per_address=2, trusted_proxies=1)
    make_world(svc)
    app = create_app(svc)
    try:
        def attempt(client, forwarded, name, password):
            return client.post("/login", data={"username": name, "password": password,
                                               "csrf_token": csrf_token(client)},
                               headers={"X-Forwarded-For": forwarded})
        bad = app.test_client()
        assert attempt(bad, "203.0.113.9", "x", "nope").status_code == 401
        assert attempt(bad, "203.0.113.9", "y", "nope").status_code == 401
        assert attempt(bad, "203.0.113.9", "z", "nope").status_code == 429
        good = app.test_client()  # same proxy (127.0.0.1), another client
        assert login(good, "alice").status_code == 302
    finally:
        svc.db.dispose()
