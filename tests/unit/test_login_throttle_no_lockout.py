"""Issue 9 item 4: a stranger's wrong passwords slow the stranger (429 with a growing Retry-After)
but never lock the real user out: the owner, from an address that has not been failing, logs in
at once with the right password, even while an attacker rotates addresses against the account.
The throttle's clock is injected (no sleeps)."""
from __future__ import annotations

import pytest

from portal.app import create_app
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import login, make_world
from portal.identity.throttle import LoginThrottle


class Clock:
    def __init__(self):
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def env(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    make_world(svc)
    app = create_app(svc)
    clock = Clock()
    app.extensions["slipway_login_throttle"] = LoginThrottle(
        per_user=5, per_address=20, per_account=20, window_s=300, max_delay_s=60, clock=clock)
    yield app, clock
    svc.db.dispose()


def client_at(app, address: str):
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = address
    return c


def test_attacker_is_slowed_with_growing_delays_while_the_owner_gets_in(env):
    app, clock = env
    attacker = client_at(app, "198.51.100.7")
    for _ in range(5):
        assert login(attacker, "alice", "guess").status_code == 401
    waits = []
    for _ in range(5):
        r = login(attacker, "alice", "guess")
        assert r.status_code == 429
        wait = int(r.headers["Retry-After"])
        waits.append(wait)
        assert login(attacker, "alice", "guess").status_code == 429  # hammering does not help
        clock.t += wait
        assert login(attacker, "alice", "guess").status_code == 401  # one more guess, then wait
    assert waits == [1, 2, 4, 8, 16]
    # the right password from the attacker's address waits too (it has been failing) ...
    assert login(attacker, "alice").status_code == 429
    # ... but the owner, from their own address, logs in at once
    owner = client_at(app, "192.0.2.10")
    r = login(owner, "alice")
    assert r.status_code == 302 and "/login" not in r.headers["Location"]


def test_delay_is_capped(env):
    app, clock = env
    attacker = client_at(app, "198.51.100.7")
    for _ in range(12):
        r = login(attacker, "alice", "guess")
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) <= 60
            clock.t += int(r.headers["Retry-After"])
            assert login(attacker, "alice", "guess").status_code == 401
    r = login(attacker, "alice", "guess")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) == 60


def test_rotating_addresses_are_slowed_per_address_and_cannot_lock_the_owner_out(env):
    app, clock = env
    attackers = [client_at(app, f"203.0.113.{i}") for i in range(1, 31)]
    for c in attackers:  # 30 addresses, one guess each: the account's ceiling (20) is passed
        assert login(c, "alice", "guess").status_code == 401
    # every address that has been failing is now slowed by the account's ceiling ...
    for c in attackers[:5]:
        r = login(c, "alice", "guess")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    # ... by the account's failures (30, 10 past its ceiling: 2^10 s, capped at 60), not by each
    # address's own single failure
    assert int(login(attackers[0], "alice", "guess").headers["Retry-After"]) == 60
    clock.t += 60  # each failing address then gets one guess per delay, the account's count grows
    assert login(attackers[0], "alice", "guess").status_code == 401
    assert login(attackers[1], "alice", "guess").status_code == 429
    # and the owner from an address that has not been failing is never blocked
    owner = client_at(app, "192.0.2.10")
    assert login(owner, "alice").status_code == 302
    # another account is not touched by alice's attack, even from a failing address
    assert login(attackers[0], "bob").status_code == 302


def test_memory_stays_bounded_under_rotation():
    t = LoginThrottle(per_user=5, per_address=20, per_account=20, max_keys=200)
    for i in range(2000):
        t.begin(f"user{i % 7}", f"10.{i // 250}.{i % 250}.1")
    assert len(t._failures) <= 200


def test_a_refused_attempt_never_reaches_the_password_check(env, monkeypatch):
    from portal.web import auth as web_auth

    app, _clock = env
    attacker = client_at(app, "198.51.100.7")
    for _ in range(5):
        login(attacker, "alice", "guess")
    checked = []
    real = web_auth.verify
    monkeypatch.setattr(web_auth, "verify", lambda u, p: checked.append(u) or real(u, p))
    assert login(attacker, "alice", "guess").status_code == 429
    assert checked == []


def test_forgotten_after_a_quiet_window():
    clock = Clock()
    t = LoginThrottle(per_user=1, per_address=100, per_account=3, window_s=300, max_delay_s=60,
                      clock=clock)
    assert t.begin("alice", "a") == 0
    assert t.begin("alice", "a") == 1
    clock.t += 300
    assert t.begin("alice", "a") == 0  # the window forgot the failures
    assert len(t._failures) == 3     # pair, address, account


def test_success_does_not_clear_an_attackers_failures_at_the_account():
    clock = Clock()
    t = LoginThrottle(per_user=5, per_address=100, per_account=3, clock=clock)
    for addr in ("x1", "x2", "x3"):
        assert t.begin("alice", addr) == 0
    assert t.begin("alice", "owner") == 0
    t.succeeded("alice", "owner")          # the owner's right password ...
    assert t.begin("alice", "x1") == 1     # ... leaves the attackers slowed
    assert t.retry_after("alice", "owner") == 0
