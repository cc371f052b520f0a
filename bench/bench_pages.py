"""Benchmark: page latency on a big database, against a static file, with zero Slurm calls.

    .venv/bin/python bench/bench_pages.py [--db URL | --start-postgres] [--jobs 100000]
        [--projects 1000] [--teams 20] [--ledger 200000] [--clients 20] [--rounds 30]
        [--threads 16] [--page-slots 0] [--max-seconds 180] [--profile]

1. builds a database (default: SQLite in a temp dir; ``--db postgresql+psycopg://…`` an EMPTY
   PostgreSQL database, or ``--start-postgres`` a throwaway server from ``tests/pg_server.py``)
   through the migrations, then bulk-inserts 20 teams, 1,000 projects (80% in team ``big``),
   100,000 jobs (~80% in ``big``; a few hundred active) and ~200,000 ledger entries (deposits and
   GPU charges over 90 days);
2. serves the REAL app (``create_app``) with waitress (``threads=16``) in a subprocess, with a
   Slurm backend whose every method counts the call and raises;
3. 20 client threads (one ``requests.Session`` each, logged in as a local password user who is a
   member of every team) each run ``--rounds`` rounds of: the static CSS, ``/jobs?team=big``,
   ``/teams/big`` (each client starts at a different URL so the three are always mixed), bounded
   by ``--max-seconds``;
4. prints JSON: p50/p95 (ms) per URL, ``ratio_p95`` = p95(page)/p95(static) (goal ≤ 3),
   ``slurm_calls`` (must be 0), errors, build times and row counts.

``--profile`` skips the HTTP part: it renders each page 30× in-process under cProfile and prints
the top functions and the slowest SQL statements (py-spy is not installed).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STATIC = "/static/slipway.css"
USER, PASSWORD = "bench", "bench-password"
BIG = "big"
ACTIVE = ("queued", "pending", "running")
ENDED = ("succeeded", "succeeded", "succeeded", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class CountingBackend:
    """A Slurm backend whose every method counts the call and raises: the pages must not call it."""

    def __init__(self):
        self.calls: list[str] = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def boom(*a, **kw):
            self.calls.append(name)
            raise RuntimeError(f"benchmark: a page called Slurm: backend.{name}()")

        return boom


def services(data_dir: Path, url: str, backend, page_slots: int = 0):
    from tests.support.fakes import make_services

    return make_services(data_dir, backend=backend, clock=utcnow, database_url=url, page_slots=page_slots)


# ------------------------------------------------------------------------------ database

def build(url: str, data_dir: Path, *, n_teams: int, n_projects: int, n_jobs: int, n_ledger: int,
          seed: int = 1) -> dict:
    from sqlalchemy import func, insert, select
    from werkzeug.security import generate_password_hash

    from portal.billing import ledger as billing
    from portal.db import Job, LedgerEntry, Membership, Project, Team, User

    rng = random.Random(seed)
    t0 = time.perf_counter()
    svc = services(data_dir, url, CountingBackend())  # runs the migrations
    db = svc.db
    with db.session() as s:
        if s.scalar(select(func.count(Job.id))) or s.scalar(select(func.count(Team.id))):
            raise SystemExit(f"{url}: database is not empty; give an empty one")
    now = utcnow()
    t_migrate = time.perf_counter() - t0
    B = 2000  # rows per executemany batch, one transaction each

    def bulk(table, rows):
        for i in range(0, len(rows), B):
            with db.engine.begin() as c:
                c.execute(insert(table), rows[i:i + B])

    t1 = time.perf_counter()
    with db.engine.begin() as c:
        users = [{"name": USER, "unix_user": "bench", "is_cluster_admin": False, "created_at": now,
                  "password_hash": generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000"),
                  "active": True}]
        users += [{"name": f"u{i:03d}", "unix_user": f"u{i:03d}", "is_cluster_admin": False,
                   "created_at": now, "password_hash": None, "active": True} for i in range(50)]
        c.execute(insert(User), users)
        uid = {n: i for i, n in c.execute(select(User.id, User.name))}
        team_names = [BIG] + [f"team{i:02d}" for i in range(1, n_teams)]
        c.execute(insert(Team), [{"name": n, "personal": False, "created_at": now, "fairshare": 100}
                                 for n in team_names])
        tid = {n: i for i, n in c.execute(select(Team.id, Team.name))}
        members = [{"user_id": uid[USER], "team_id": tid[t], "role": "owner", "created_at": now}
                   for t in team_names]
        members += [{"user_id": uid[f"u{i:03d}"], "team_id": tid[team_names[i % n_teams]],
                     "role": "user", "created_at": now} for i in range(50)]
        c.execute(insert(Membership), members)
        n_big = int(n_projects * 0.8)
        projects = []
        for i in range(n_projects):
            team = BIG if i < n_big else team_names[1 + (i - n_big) % (n_teams - 1)]
            projects.append({"team_id": tid[team], "name": f"proj-{i:04d}", "gpu_type": "a4000",
                             "gpu_count": 1, "image": "python", "time_limit_min": 60,
                             "created_at": now - timedelta(days=90)})
        c.execute(insert(Project), projects)
        pids = list(c.execute(select(Project.id, Project.team_id).order_by(Project.id)))
        big_pids = [p for p, t in pids if t == tid[BIG]]
        other_pids = [p for p, t in pids if t != tid[BIG]]
        team_of = dict(pids)
        jobs = []
        for i in range(n_jobs):
            pid = rng.choice(big_pids) if rng.random() < 0.8 else rng.choice(other_pids)
            created = now - timedelta(minutes=(n_jobs - i) * 90 * 24 * 60 // n_jobs)
            active = i >= n_jobs - 300  # the newest 300 jobs are still active
            state = rng.choice(ACTIVE) if active else rng.choice(ENDED)
            ended = None if active else created + timedelta(minutes=rng.randint(1, 300))
            jobs.append({
                "project_id": pid, "branch": f"b{i}" if active else f"exp-{rng.randint(0, 40)}",
                "commit_sha": f"{i:040x}", "pusher_id": uid[USER], "state": state,
                "slurm_job_id": 10_000 + i if state != "queued" else None, "gpu_type": "a4000",
                "gpu_count": rng.choice((1, 1, 2, 4)), "image": "python", "time_limit_min": 60,
                "node": "a4k-1" if state not in ("queued", "pending") else None,
                "port": 20000 + i % 40000 if state == "running" else None,
                "exit_code": None if active else (0 if state == "succeeded" else 1),
                "reason": "Resources" if state == "pending" else None, "created_at": created,
                "submitted_at": created, "started_at": created if state != "queued" else None,
                "ended_at": ended, "state_changed_at": ended or created, "attempt": 0,
                "cost_micros": 0 if active else rng.randint(10_000, 5_000_000)})
    bulk(Job, jobs)
    with db.engine.begin() as c:
        job_rows = list(c.execute(select(Job.id, Job.project_id, Job.created_at).order_by(Job.id)))
        ledger = []
        for t in team_names:  # deposits: a few per team
            for k in range(5):
                ledger.append({"team_id": tid[t], "kind": "deposit", "amount_micros": 10_000_000_000,
                               "idempotency_key": f"deposit:{t}:{k}", "created_by": "bench",
                               "note": "bench", "created_at": now - timedelta(days=90 - k)})
        i = 0
        while len(ledger) < n_ledger:
            jid, pid, created = job_rows[i % len(job_rows)]
            minute = i // len(job_rows)
            ledger.append({"team_id": team_of[pid], "kind": "gpu", "amount_micros": -rng.randint(1_000, 200_000),
                           "idempotency_key": f"gpu:{jid}:0:{minute}", "job_id": jid, "attempt": 0,
                           "from_minute": minute, "to_minute": minute + 1, "gpu_type": "a4000",
                           "gpu_count": 1, "rate_micros": 1_200_000, "resource": str(jid),
                           "created_by": "billing", "note": "bench charge",
                           "created_at": (created if created.tzinfo else created.replace(tzinfo=timezone.utc))
                           + timedelta(minutes=minute + 1)})
            i += 1
    keys = set().union(*(row.keys() for row in ledger))
    bulk(LedgerEntry, [{k: row.get(k) for k in keys} for row in ledger])
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE")
    else:
        with db.engine.begin() as c:
            c.exec_driver_sql("ANALYZE")
    t_insert = time.perf_counter() - t1
    with db.session() as s:
        counts = {"teams": s.scalar(select(func.count(Team.id))),
                  "projects": s.scalar(select(func.count(Project.id))),
                  "jobs": s.scalar(select(func.count(Job.id))),
                  "ledger_entries": s.scalar(select(func.count(LedgerEntry.id))),
                  "big_team_jobs": s.scalar(select(func.count(Job.id)).join(Project, Job.project_id == Project.id)
                                            .where(Project.team_id == tid[BIG])),
                  "big_team_ledger": s.scalar(select(func.count(LedgerEntry.id))
                                              .where(LedgerEntry.team_id == tid[BIG])),
                  # the running balances (triggers) equal the ledger sums after the bulk load
                  "balance_mismatches": len(billing.balance_mismatches(s))}
    db.dispose()
    return {"migrate_s": round(t_migrate, 2), "insert_s": round(t_insert, 2), "rows": counts}


# -------------------------------------------------------------------------------- server

def serve(url: str, data_dir: Path, port: int, threads: int, page_slots: int = 0) -> None:
    """Subprocess: the real app under waitress; /__bench/slurm-calls reports the Slurm calls."""
    import logging

    import waitress
    from flask import jsonify

    from portal.app import create_app

    logging.getLogger("waitress").setLevel(logging.ERROR)
    backend = CountingBackend()
    svc = services(data_dir, url, backend, page_slots)
    app = create_app(svc)
    app.add_url_rule("/__bench/slurm-calls", "bench_slurm_calls",
                     lambda: jsonify({"calls": len(backend.calls), "names": backend.calls[:20]}))
    waitress.serve(app, host="127.0.0.1", port=port, threads=threads, connection_limit=200,
                   channel_timeout=60, _quiet=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    import requests

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if requests.get(base + STATIC, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not come up")


def _cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def login(base: str):
    import re

    import requests

    s = requests.Session()
    page = s.get(base + "/login", timeout=30).text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    r = s.post(base + "/login", data={"username": USER, "password": PASSWORD, "csrf_token": token},
               allow_redirects=False, timeout=30)
    if r.status_code != 302:
        raise SystemExit(f"login failed: {r.status_code}")
    return s


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100 * len(v) + 0.5)) - 1))
    return v[k]


def load(base: str, urls: dict[str, str], clients: int, rounds: int, max_seconds: float) -> dict:
    sessions = [login(base) for _ in range(clients)]
    for s in sessions[:2]:  # warm-up (templates, caches), not measured
        for u in urls.values():
            s.get(base + u, timeout=60)
    lat: dict[str, list[float]] = {k: [] for k in urls}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds
    barrier = threading.Barrier(clients)
    names = list(urls)

    def client(k: int):
        s = sessions[k]
        order = names[k % len(names):] + names[:k % len(names)]
        barrier.wait()
        for _ in range(rounds):
            for name in order:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    r = s.get(base + urls[name], timeout=60)
                    ok = r.status_code == 200 and (name == "static" or BIG in r.text)
                    _ = r.content
                except Exception as exc:  # noqa: BLE001
                    ok, r = False, exc
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    if ok:
                        lat[name].append(dt)
                    else:
                        errors.append(f"{name}: {getattr(r, 'status_code', r)}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    out = {"wall_s": round(wall, 2), "requests": sum(len(v) for v in lat.values()),
           "bytes": {n: len(sessions[0].get(base + u, timeout=60).content) for n, u in urls.items()},
           "errors": len(errors), "error_samples": errors[:5],
           "timed_out": time.monotonic() > deadline, "urls": {}}
    for name, v in lat.items():
        out["urls"][name] = {"url": urls[name], "n": len(v), "p50_ms": round(statistics.median(v), 2) if v else None,
                             "p95_ms": round(pct(v, 95), 2), "max_ms": round(max(v), 2) if v else None}
    sp95 = out["urls"]["static"]["p95_ms"]
    out["ratio_p95"] = {n: round(out["urls"][n]["p95_ms"] / sp95, 2) for n in names if n != "static"}
    out["ratio_p50"] = {n: round(out["urls"][n]["p50_ms"] / out["urls"]["static"]["p50_ms"], 2)
                        for n in names if n != "static"}
    return out


# ------------------------------------------------------------------------------- profile

def profile(url: str, data_dir: Path, urls: dict[str, str], n: int = 30) -> None:
    import cProfile
    import pstats

    from sqlalchemy import event

    from portal.app import create_app

    backend = CountingBackend()
    svc = services(data_dir, url, backend)
    app = create_app(svc)
    stmts: dict[str, list[float]] = {}

    @event.listens_for(svc.db.engine, "before_cursor_execute")
    def _b(conn, cursor, statement, params, context, executemany):
        conn.info.setdefault("t", []).append(time.perf_counter())

    @event.listens_for(svc.db.engine, "after_cursor_execute")
    def _a(conn, cursor, statement, params, context, executemany):
        stmts.setdefault(" ".join(statement.split())[:160], []).append(
            (time.perf_counter() - conn.info["t"].pop()) * 1000)

    c = app.test_client()
    page = c.get("/login").get_data(as_text=True)
    import re
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    assert c.post("/login", data={"username": USER, "password": PASSWORD, "csrf_token": token}).status_code == 302
    for name, u in urls.items():
        c.get(u)
        stmts.clear()
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(n):
            r = c.get(u)
            assert r.status_code == 200, (u, r.status_code)
        prof.disable()
        print(f"\n===== {name} {u}: {(time.perf_counter() - t0) / n * 1000:.2f} ms/request (in-process)")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        print("slowest SQL (ms per execution, mean):")
        for st, ts in sorted(stmts.items(), key=lambda kv: -sum(kv[1]))[:8]:
            print(f"  {sum(ts) / len(ts):8.2f} ms x{len(ts) // n:<3} {st}")
    print("slurm calls:", len(backend.calls))
    svc.db.dispose()


# ---------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", help="SQLAlchemy URL of an EMPTY database (default: SQLite in a temp dir)")
    ap.add_argument("--start-postgres", action="store_true", help="run on a throwaway PostgreSQL")
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--projects", type=int, default=1_000)
    ap.add_argument("--teams", type=int, default=20)
    ap.add_argument("--ledger", type=int, default=200_000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=30, help="rounds of (static, jobs, team) per client")
    ap.add_argument("--threads", type=int, default=16, help="waitress threads")
    ap.add_argument("--page-slots", type=int, default=0,
                    help="short requests admitted at once (0: the app's default, 2 x cores; "
                         "a number >= --threads turns the gate off)")
    ap.add_argument("--max-seconds", type=float, default=180)
    ap.add_argument("--profile", action="store_true", help="cProfile the pages in-process instead")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.serve:
        serve(args.db, Path(args.data_dir), args.port, args.threads, args.page_slots)
        return 0

    urls = {"static": STATIC, "jobs": f"/jobs?team={BIG}", "team": f"/teams/{BIG}"}
    pg = None
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        data_dir = Path(tmp)
        try:
            if args.start_postgres:
                from tests.pg_server import start_postgres
                pg = start_postgres()
                url = pg.url
            else:
                url = args.db or f"sqlite:///{data_dir / 'var' / 'slipway.db'}"
            built = build(url, data_dir, n_teams=args.teams, n_projects=args.projects,
                          n_jobs=args.jobs, n_ledger=args.ledger)
            print(f"built in {built['migrate_s'] + built['insert_s']:.1f} s: {built['rows']}", file=sys.stderr)
            if args.profile:
                profile(url, data_dir, urls)
                return 0
            port = _free_port()
            base = f"http://127.0.0.1:{port}"
            proc = subprocess.Popen([sys.executable, __file__, "--serve", "--db", url, "--data-dir", str(data_dir),
                                     "--port", str(port), "--threads", str(args.threads),
                                     "--page-slots", str(args.page_slots)], cwd=REPO)
            try:
                _wait_up(base, proc)
                cpu0, own0 = _cpu_seconds(proc.pid), time.process_time()
                result = load(base, urls, args.clients, args.rounds, args.max_seconds)
                result["server_cpu_s"] = round(_cpu_seconds(proc.pid) - cpu0, 2)
                result["client_cpu_s"] = round(time.process_time() - own0, 2)
                import requests
                slurm = requests.get(base + "/__bench/slurm-calls", timeout=30).json()
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            if pg is not None:
                pg.stop()
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    out = {"bench": "pages", "db": dialect, "server": f"waitress threads={args.threads}",
           "clients": args.clients, "rounds": args.rounds, "cpus": os.cpu_count(), **built, **result,
           "slurm_calls": slurm["calls"], "goal": "ratio_p95 <= 3 for every page, slurm_calls == 0"}
    out["ok"] = (slurm["calls"] == 0 and result["errors"] == 0
                 and all(r <= 3 for r in result["ratio_p95"].values()))
    print(json.dumps(out, indent=2))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
