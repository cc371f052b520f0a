"""The reconciler's leader lease on SQLite (docs/FAULTS.md §4): exactly one reconciler of a
Slipway ticks at a time, across processes; ``kill -9`` of the leader frees the lease at once, so
the follower's next attempt takes it; a one-off tick waits for it and says who leads."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from portal.jobs import leadership
from portal.jobs.reconciler import Reconciler
from portal.jobs.reconciler.leader import (FileLease, PgAdvisoryLease, lock_key, make_lease)
from portal.jobs.reconciler.loop import NotLeader
from tests.support.fakes import FakeBackend, make_services

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 30   # for conditions waited on; never a measured duration


def _wait_for(cond, what: str, timeout: float = DEADLINE_S):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


@pytest.fixture
def env(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend, reconcile_interval=0.2)
    yield svc, backend
    svc.db.dispose()


# A second Slipway process on the same data dir (the same SQLite database): its reconciler's run
# loop, with an in-memory Slurm of its own, as `slipway serve` runs it.
CHILD = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from portal.jobs.reconciler import Reconciler
    from tests.support.fakes import FakeBackend, make_services
    svc = make_services(Path({tmp!r}), backend=FakeBackend(), reconcile_interval=0.2)
    print("ready", flush=True)
    Reconciler(svc).run(threading.Event())
""")


def _child(tmp_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO), tmp=str(tmp_path))],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _leader_pid(svc) -> int | None:
    d = leadership.current(svc)
    return d["pid"] if d else None


def test_the_lease_follows_the_database_url(tmp_path):
    svc = make_services(tmp_path)
    lease = make_lease(svc)
    assert isinstance(lease, FileLease) and lease.path == svc.config.data_dir / "reconciler.lock"
    pg = SimpleNamespace(db=SimpleNamespace(engine=SimpleNamespace(
        url=make_url("postgresql+psycopg://slipway@127.0.0.1:1/slipway"))),
        config=SimpleNamespace(cluster_name="hpc1"))
    lease = make_lease(pg)   # nothing connects before the first attempt
    assert isinstance(lease, PgAdvisoryLease) and lease.key == lock_key("hpc1")
    assert lease.description == f"PostgreSQL advisory lock {lock_key('hpc1')}"
    # the same key on every server; another cluster's Slipway in one database gets its own
    assert lock_key("hpc1") == lock_key("hpc1") != lock_key("hpc2")
    assert -2**63 <= lock_key("hpc1") < 2**63


def test_file_leases_exclude_each_other_until_released(tmp_path):
    a, b = FileLease(tmp_path / "reconciler.lock"), FileLease(tmp_path / "reconciler.lock")
    assert a.try_acquire() and a.try_acquire() and a.holds()   # taking it again: still ours
    assert not b.try_acquire() and not b.holds()
    assert not b.acquire(timeout=0.2)
    a.release()
    assert not a.holds() and b.try_acquire()
    assert oct((tmp_path / "reconciler.lock").stat().st_mode & 0o777) == "0o600"
    b.release()
    b.release()   # twice: nothing


def test_two_processes_one_leader_and_kill9_hands_over_at_the_next_attempt(env, tmp_path):
    svc, backend = env
    child = _child(tmp_path)
    try:
        _wait_for(lambda: _leader_pid(svc) == child.pid, "the first process leads")
        # this process's loop stands by: it asks for the lease every interval, ticks never
        attempts: list[tuple[float, bool]] = []
        r = Reconciler(svc)
        real_try = r.lease.try_acquire

        def counted():
            got = real_try()
            attempts.append((time.monotonic(), got))
            return got
        r.lease.try_acquire = counted
        stop = threading.Event()
        loop = threading.Thread(target=r.run, args=(stop,), daemon=True)
        loop.start()
        _wait_for(lambda: len(attempts) >= 3, "three attempts of the follower")
        assert not any(got for _, got in attempts) and backend.jobs_calls == 0
        assert _leader_pid(svc) == child.pid and r.leading_since is None

        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        dead_at = time.monotonic()
        _wait_for(lambda: _leader_pid(svc) == os.getpid(), "this process takes over")
        after = [got for t, got in attempts if t > dead_at]
        assert after and after[0] is True, attempts   # the first attempt after the death wins
        _wait_for(lambda: backend.jobs_calls > 0, "the new leader ticks")
        assert r.leading_since is not None
        stop.set()
        loop.join(10)
        assert not loop.is_alive()
        # stepping down in good order: the record is cleared and the lease is free
        assert leadership.current(svc) is None
        other = FileLease(svc.config.data_dir / "reconciler.lock")
        assert other.try_acquire()
        other.release()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_the_leader_record_says_who_leads_and_the_alarms_page_shows_it(env):
    from portal.monitoring import alarms

    svc, backend = env
    r = Reconciler(svc)
    assert r.lead()
    d = leadership.current(svc)
    assert d["pid"] == os.getpid() and d["holder"] == f"{d['host']}:{os.getpid()}"
    assert d["since"] == r.leading_since.isoformat() and d["lease"].startswith("file lock ")
    assert alarms.check_reconciler(svc)["active"] == d
    assert f"active on {d['holder']} since" in leadership.describe(d)
    assert r.lead() and backend.jobs_calls == 0   # leading goes on; lead() itself never ticks
    r.tick()                                        # the leader's own tick: at once
    assert backend.jobs_calls == 1
    r.step_down()
    assert leadership.current(svc) is None and not r.lease.holds()


def test_a_one_off_tick_waits_for_the_leader_then_names_it(env):
    svc, backend = env
    leader = Reconciler(svc)
    assert leader.lead()
    with pytest.raises(NotLeader, match=rf"active on .*:{os.getpid()} since"):
        Reconciler(svc).tick(wait=0.3)
    assert backend.jobs_calls == 0
    done = []
    t = threading.Thread(target=lambda: done.append(Reconciler(svc).tick(wait=DEADLINE_S)))
    t.start()
    time.sleep(0.2)            # it waits while the leader leads...
    assert not done and backend.jobs_calls == 0
    leader.step_down()         # ...and runs once the lease is let go
    t.join(DEADLINE_S)
    assert done and done[0].polled and backend.jobs_calls == 1
    other = FileLease(svc.config.data_dir / "reconciler.lock")   # and lets it go again
    assert other.try_acquire()
    other.release()


def test_reconcile_once_on_the_cli_waits_then_says_who_is_active(env):
    from portal.cli import Ctx, main

    svc, backend = env
    leader = Reconciler(svc)
    assert leader.lead()
    r = CliRunner().invoke(main, ["reconcile", "--once", "--wait", "0.2"], obj=Ctx(services=svc))
    assert r.exit_code == 1, r.output
    assert "waiting up to 0.2 s for the leader lease" in r.output
    assert f":{os.getpid()} since" in r.output and "no tick run" in r.output
    assert backend.jobs_calls == 0
    leader.step_down()
    r = CliRunner().invoke(main, ["reconcile", "--once"], obj=Ctx(services=svc))
    assert r.exit_code == 0 and "waiting" not in r.output, r.output
    assert backend.jobs_calls == 1


class _LosingLease:
    """A lease that is taken once, then found lost (a PostgreSQL session that died)."""

    description = "test lease"

    def __init__(self):
        self.held, self.free, self.released = False, True, 0

    def try_acquire(self):
        if self.free:
            self.held, self.free = True, False
        return self.held

    def acquire(self, timeout=None):
        return self.try_acquire()

    def holds(self):
        return self.held

    def release(self):
        self.held = False
        self.released += 1


def test_a_leader_that_lost_its_lease_stands_down_before_ticking(env):
    svc, backend = env
    lease = _LosingLease()
    r = Reconciler(svc, lease=lease)
    assert r.lead() and r.leading_since is not None
    lease.held = False            # the session died: another server may lead now
    assert not r.lead()           # checked before the tick: it stands by, nothing runs
    assert r.leading_since is None and lease.released == 1 and backend.jobs_calls == 0
    lease.free = True             # free again: taken at the next attempt
    assert r.lead() and r.leading_since is not None


def test_the_alarms_page_api_and_cli_say_where_the_reconciler_is_active(env):
    import portal.api.alarms  # noqa: F401  (its routes join the API blueprint)
    from portal.app import create_app
    from portal.cli import Ctx, main
    from portal.cli import alarms as alarms_cli
    from portal.web.alarms import bp as alarms_bp
    from tests.support.web import add_user, login

    svc, backend = env
    add_user(svc, "ops", admin=True)
    r = Reconciler(svc)
    assert r.lead()
    r.tick()                                  # a tick recorded too
    holder = f"{leadership.this_process()[0]}:{os.getpid()}"
    app = create_app(svc)
    if "alarms" not in app.blueprints:
        app.register_blueprint(alarms_bp)
    c = app.test_client()
    login(c, "ops")
    html = c.get("/admin/alarms").get_data(as_text=True)
    assert 'id="reconciler-active"' in html and holder in html and "file lock" in html
    d = c.get("/api/alarms").get_json()["reconciler"]["active"]
    assert d["holder"] == holder and d["since"] == r.leading_since.isoformat()
    if "alarms" not in main.commands:
        main.add_command(alarms_cli.alarms)
    out = CliRunner().invoke(main, ["alarms"], obj=Ctx(services=svc),
                             env={"SLIPWAY_URL": None, "SLIPWAY_USER": None}).output
    assert out.splitlines()[0].startswith(f"reconciler: active on {holder} since "), out
    assert "; last tick ended " in out.splitlines()[0]
    r.step_down()
    out = CliRunner().invoke(main, ["alarms"], obj=Ctx(services=svc),
                             env={"SLIPWAY_URL": None, "SLIPWAY_USER": None}).output
    assert out.startswith("reconciler: last tick ended"), out
