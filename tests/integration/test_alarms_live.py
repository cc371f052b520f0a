"""Alarms against the live cluster, through a real Slipway with a real SMTP server (issue 15
part 5): draining a node (``scontrol update … state=drain``) opens an alarm and sends its one
mail within two ticks, resuming it resolves it (one more mail); killing a slurmd opens "not
responding" and "down" (SlurmdTimeout=6, MessageTimeout=5 in
slurm_conf/templates/slurm.conf.tmpl: not responding after one ~6 s ping cycle, down 14-18 s after
the kill; the node stays not responding while down), and the slurmd, started again, resolves
both.

The test reads Slipway's database directly (SQLite, read-only) to see each tick end: the alarm
must be there by the end of the second tick that ended after the command."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.support.harness import cleanup, start_slipway
from tests.support.smtp import smtp_server

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "slurm_conf" / "cluster"
ADMIN_MAIL = "ops@example.org"
TICK_KEY = "monitoring.alarms.tick"


@pytest.fixture(scope="module")
def smtp():
    with smtp_server() as (port, inbox):
        yield port, inbox


@pytest.fixture(scope="module")
def sw(slurm_cluster, smtp):
    port, _inbox = smtp
    sw = start_slipway(slurm_cluster.env, SLIPWAY_SMTP_HOST="127.0.0.1",
                       SLIPWAY_SMTP_PORT=str(port))
    sw.cluster = slurm_cluster
    try:
        sw.cli("user", "add", "ops", "--admin")
        with _db(sw, write=True) as c:   # the CLI has no --email: the column the pages set
            c.execute("UPDATE users SET email = ? WHERE name = 'ops'", (ADMIN_MAIL,))
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


class _db:
    def __init__(self, sw, write: bool = False):
        path = sw.data_dir / "slipway.db"
        self.conn = sqlite3.connect(str(path) if write else f"file:{path}?mode=ro", uri=not write,
                                    timeout=30)

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.conn.commit()
        self.conn.close()


def _utc(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _tick_end(sw) -> datetime | None:
    with _db(sw) as c:
        row = c.execute("SELECT value FROM reconciler_state WHERE key = ?", (TICK_KEY,)).fetchone()
    return _utc(json.loads(row[0])["end"]) if row else None


def _alarm(sw, key: str) -> tuple | None:
    """(opened_at, resolved_at, detail) of the newest alarm with ``key``."""
    with _db(sw) as c:
        row = c.execute("SELECT opened_at, resolved_at, detail FROM alarms WHERE key = ? "
                        "ORDER BY id DESC LIMIT 1", (key,)).fetchone()
    return row


def _within_ticks(sw, since: datetime, done, ticks: int, what: str, timeout: float = 60):
    """Poll until ``done()``; the number of reconciler ticks that ended after ``since`` by then
    must be at most ``ticks``."""
    ends: set[datetime] = set()
    deadline = time.monotonic() + timeout
    while True:
        end = _tick_end(sw)
        value = done()
        if end is not None and end > since:
            ends.add(end)
        if value:
            assert len(ends) <= ticks, f"{what} took {len(ends)} ticks (at most {ticks})"
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} ({len(ends)} ticks ended)\n"
                                 + sw.log_file.read_text()[-3000:])
        time.sleep(0.05)


def _wait(what: str, fn, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def _subjects(inbox, title: str) -> list[str]:
    return [m["Subject"] for m in inbox.messages if m["Subject"].endswith(f": {title}")]


def _scontrol(sw, *args: str) -> None:
    res = subprocess.run(["scontrol", "update", *args], env=sw.env, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr


def test_a_drain_opens_an_alarm_with_one_mail_and_a_resume_resolves_it(sw, smtp):
    _port, inbox = smtp
    _wait("the first tick", lambda: _tick_end(sw), 30, 0.2)
    title = "node drained: a4k-2"
    since = datetime.now(timezone.utc)
    _scontrol(sw, "nodename=a4k-2", "state=drain", "reason=alarm e2e")
    try:
        opened = _within_ticks(sw, since, lambda: _alarm(sw, "node-drained:a4k-2"), 2,
                               "the drain alarm")
        assert opened[1] is None and opened[2] == "node a4k-2 is drained: alarm e2e", opened
        _wait("the alarm mail", lambda: _subjects(inbox, title), 10, 0.1)
        msg = next(m for m in inbox.messages if m["Subject"].endswith(title))
        assert msg["To"] == ADMIN_MAIL and "node a4k-2 is drained: alarm e2e" in msg.get_payload(decode=True).decode()
        time.sleep(3)   # more ticks, still drained: nothing new
        assert _subjects(inbox, title) == ["[Slipway slipway] ALARM: node drained: a4k-2"]
    finally:
        since = datetime.now(timezone.utc)
        _scontrol(sw, "nodename=a4k-2", "state=resume")
    resolved = _within_ticks(sw, since, lambda: (a := _alarm(sw, "node-drained:a4k-2"))
                             and a[1] is not None and a, 2, "the resolution")
    assert resolved[0] == opened[0]
    _wait("the resolution mail", lambda: len(_subjects(inbox, title)) == 2, 10, 0.1)
    time.sleep(2)
    assert _subjects(inbox, title) == ["[Slipway slipway] ALARM: node drained: a4k-2",
                                       "[Slipway slipway] resolved: node drained: a4k-2"]
    with _db(sw) as c:
        assert c.execute("SELECT COUNT(*) FROM alarms WHERE key = 'node-drained:a4k-2'"
                         ).fetchone()[0] == 1
    d = json.loads(_alarms_cli(sw, "--all", "--json"))
    (mine,) = [a for a in d["history"] if a["key"] == "node-drained:a4k-2"]
    assert mine["mail"] == {"sent": 2, "pending": 0, "failed": 0}, d
    # Slurm marks a resumed node not responding until it answers a ping: no alarm for that
    assert mine["resolution"].startswith("node a4k-2 is idle"), d
    assert not [a for a in d["history"] + d["open"] if a["kind"] == "node-not-responding"], d


def _alarms_cli(sw, *args: str) -> str:
    """``slipway alarms ARGS`` in local mode on the server's database (the command object itself,
    so this runs whether or not the root group lists it yet)."""
    code = ("import sys; from portal.cli import main; from portal.cli.alarms import alarms; "
            "'alarms' in main.commands or main.add_command(alarms); "
            "main(['alarms', *sys.argv[1:]], prog_name='slipway')")
    res = subprocess.run([sys.executable, "-c", code, *args], env=sw.env, capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def _slurmd_pid(cluster_dir: Path, node: str) -> int:
    pid = int((cluster_dir / "run" / f"slurmd-{node}.pid").read_text().strip())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert Path(argv[0].decode()).name == "slurmd" and b"-N" in argv \
        and argv[argv.index(b"-N") + 1] == node.encode(), argv
    return pid


def _restart_slurmd(sw) -> None:
    """`cluster up` starts the daemons that are not running (the one killed) and waits until
    every node is back; ReturnToService=2 lets the node return by itself."""
    res = subprocess.run([str(CLUSTER_SCRIPT), "up", "--dir", str(sw.cluster.dir)],
                         env={**os.environ, **sw.cluster.env}, capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stderr


def test_a_killed_slurmd_is_not_responding_and_down(sw, smtp):
    _port, inbox = smtp
    _wait("the first tick", lambda: _tick_end(sw), 30, 0.2)
    pid = _slurmd_pid(sw.cluster.dir, "a4k-1")
    os.kill(pid, signal.SIGKILL)
    try:
        nr = _wait("not responding", lambda: _alarm(sw, "node-not-responding:a4k-1"), 60)
        assert nr[1] is None and "does not answer slurmctld" in nr[2], nr
        down = _wait("down", lambda: _alarm(sw, "node-down:a4k-1"), 90)
        assert down[1] is None and "node a4k-1 is down" in down[2], down
        # no order between the two: "not responding" waits out its grace (GRACE_S, 10 s) from
        # the end of the first failed ping cycle, and Slurm may declare the node down sooner
        assert _alarm(sw, "node-gpus:a4k-1") is None   # a dead node says nothing of its GPUs
        _wait("both mails", lambda: _subjects(inbox, "node not responding: a4k-1")
              and _subjects(inbox, "node down: a4k-1"), 10, 0.1)
    finally:
        _restart_slurmd(sw)
    _wait("both resolved", lambda: all((a := _alarm(sw, k)) and a[1] is not None for k in
                                       ("node-not-responding:a4k-1", "node-down:a4k-1")), 60)
    _wait("the resolution mails", lambda: len(_subjects(inbox, "node down: a4k-1")) == 2
          and len(_subjects(inbox, "node not responding: a4k-1")) == 2, 10, 0.1)
    assert _alarm(sw, "node-gpus:a4k-1") is None
