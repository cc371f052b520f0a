"""Benchmark: `kill -9` of the active Slipway server → the other server reconciling (issue 16,
docs/FAULTS.md §4), median and worst over N kills (default 5).

Two `slipway serve` processes share one PostgreSQL database (a throwaway server, tests/pg_server.py)
and one data directory; the reconciler runs in whichever holds the PostgreSQL advisory lock. Each
round SIGKILLs the leader and times, from the kill:
  * lease taken — the other server records itself as the leader (the `since` of its record);
  * first tick  — the end of the other server's first tick (the tick record the alarms read).
The killed server is then started again (it stands by) and the next round kills the new leader,
so the lease goes back and forth. Optionally a GPU job runs throughout (--job), so ticks have work.

Usage (a cluster must be up; `slurm_conf/cluster up --dir DIR --port-base N`, then):
    SLURM_CONF=DIR/etc/slurm.conf .venv/bin/python bench/bench_slipway_failover.py [-n 5]
        [--interval 5] [--job]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from portal.jobs.leadership import LEADER_KEY  # noqa: E402
from portal.monitoring.alarm_store import TICK_KEY  # noqa: E402
from tests.pg_server import create_database, start_postgres  # noqa: E402
from tests.support.failover_proxy import FailoverProxy  # noqa: E402
from tests.support.harness import another_server, cleanup, job_id_from_push, start_slipway, \
    write_project  # noqa: E402

JOB = """#!/bin/bash
for i in $(seq 1 3600); do echo "tick $i" >> progress.txt; sleep 1; done
"""


def _state(engine, key: str) -> dict | None:
    with engine.connect() as c:
        raw = c.execute(text("SELECT value FROM reconciler_state WHERE key = :k"), {"k": key}).scalar()
    return json.loads(raw) if raw else None


def _wait(cond, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5, help="kills (default 5)")
    ap.add_argument("--interval", default="5",
                    help="SLIPWAY_RECONCILE_INTERVAL of both servers (default 5 s, Slipway's own)")
    ap.add_argument("--job", action="store_true", help="keep a 1-GPU job running throughout")
    ap.add_argument("--sqlite", action="store_true",
                    help="SQLite in the shared data dir (the file lock) instead of PostgreSQL")
    args = ap.parse_args()
    cluster_env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    pg = None if args.sqlite else start_postgres()
    db = {} if pg is None else {"SLIPWAY_DATABASE_URL": create_database(pg.url, "bench_failover")}
    proxy = FailoverProxy()
    a = start_slipway(cluster_env, SLIPWAY_BASE_URL=proxy.url,
                      SLIPWAY_RECONCILE_INTERVAL=args.interval, **db)
    engine = create_engine(db.get("SLIPWAY_DATABASE_URL") or f"sqlite:///{a.data_dir / 'slipway.db'}",
                           poolclass=NullPool)
    b = None
    rows: list[tuple[float, float]] = []
    try:
        proxy.backends.append(int(a.url.rsplit(":", 1)[1]))
        _wait(lambda: (_state(engine, LEADER_KEY) or {}).get("pid") == a.proc.pid, "A leads")
        b = another_server(a)
        proxy.backends.append(int(b.url.rsplit(":", 1)[1]))
        if args.job:
            a.cli("user", "add", "bench", "--unix-user", "sw-bob")
            a.cli("team", "add-funds", "bench", "1000.00")
            a.cli("project", "create", "bench", "p", "--gpus", "a4000:1", "--image", "busybox")
            a.tokens["bench"] = a.cli("token", "create", "bench").stdout.strip()
            work = Path(tempfile.mkdtemp(prefix="bench-failover-", dir="/tmp")) / "work"
            a.git("clone", "-q", a.remote("bench", "bench", "p"), str(work))
            write_project(work, JOB)
            a.git("add", "-A", cwd=work)
            a.git("commit", "-qm", "bench", cwd=work)
            job = job_id_from_push(a.git("push", "origin", "HEAD:refs/heads/run", cwd=work).stderr)
            a.wait_job(job, {"running"})
        servers = {a.proc.pid: a, b.proc.pid: b}
        for i in range(args.n):
            # the standby has asked at least once; then a kill at any moment of the tick cycle
            time.sleep(float(args.interval) * (1 + random.random()) + 0.5)
            leader_pid = _state(engine, LEADER_KEY)["pid"]
            leader = servers.pop(leader_pid)
            [(other_pid, other)] = servers.items()
            os.kill(leader_pid, signal.SIGKILL)
            killed = datetime.now(timezone.utc)
            leader.proc.wait(10)

            def handed_over():
                rec, tick = _state(engine, LEADER_KEY) or {}, _state(engine, TICK_KEY) or {}
                end = datetime.fromisoformat(tick["end"]) if tick.get("end") else None
                if rec.get("pid") == other_pid and end is not None and end > killed:
                    return datetime.fromisoformat(rec["since"]), end
                return None
            since, first_tick = _wait(handed_over, f"round {i + 1}: the other server reconciles")
            rows.append(((since - killed).total_seconds(), (first_tick - killed).total_seconds()))
            print(f"kill {i + 1}: lease taken after {rows[-1][0]:.2f} s, first tick ended "
                  f"after {rows[-1][1]:.2f} s", flush=True)
            leader.start()   # back as the standby
            servers[leader.proc.pid] = leader
        lease = [r[0] for r in rows]
        tick = [r[1] for r in rows]
        how = "SQLite, file lock" if args.sqlite else "PostgreSQL advisory lock"
        print(f"\n{len(rows)} kills, reconcile interval {args.interval} s, {how}"
              f"{', a job running' if args.job else ''}")
        print(f"lease taken: median {statistics.median(lease):.2f} s, worst {max(lease):.2f} s")
        print(f"first tick:  median {statistics.median(tick):.2f} s, worst {max(tick):.2f} s")
    finally:
        if b is not None:
            b.stop()
        engine.dispose()
        proxy.close()
        cleanup(a, cluster_env)
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()
