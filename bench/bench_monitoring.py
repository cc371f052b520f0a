"""Benchmark: the cluster dashboard and the usage pages on a month of history, and the sampler's
cost per tick (docs/MONITORING.md, issue 15).

    .venv/bin/python bench/bench_monitoring.py [--jobs 100000] [--days 30] [--clients 20]
        [--rounds 20] [--threads 16] [--ticks 200] [--max-seconds 240]

1. builds a SQLite database through the migrations: 20 teams, 1,000 projects, 100,000 jobs over
   the last ``--days`` days (one GPU charge per job that ran, deposits), and ``--days`` of
   one-minute cluster samples for 3 nodes (a4000 x4, a4000 x4, a6000 x2 + 8 shards) written in
   bulk, then folded and pruned by the real hourly pass (``sample_retention``: hourly rows for
   the month, minute rows for ``sample_minutes_days``), and the usage rollups folded by the real
   code (``usage_rollup``) — their one-time cost is printed;
2. the sampler's cost per tick, in-process (``samples.record`` with a 300-job squeue answer and
   the 3 nodes, a few new GPU charges a tick): ticks that write the minute's sample, ticks
   within a minute (no sample), and the hourly pass;
3. serves the real app with waitress (16 threads) in a subprocess, its Slurm backend a
   FakeBackend behind a proxy counting every call; 20 client threads (logged in as a cluster
   administrator) each run ``--rounds`` rounds of the static CSS, ``/admin/cluster`` (day and
   month), ``/usage`` (the cluster per day, team ``big`` per month) and ``/api/usage``;
4. prints JSON: p50/p95 per URL, ``ratio_p95`` = p95(page)/p95(static) (goal <= 3),
   ``slurm_calls`` (must be 0), the uncached (first) computation of each page's numbers, and the
   sampler's per-tick cost.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_pages as bp  # noqa: E402  (login, percentiles, ports, CPU seconds)
from bench_monitoring_data import build  # noqa: E402

URLS = {"static": bp.STATIC, "cluster_day": "/admin/cluster?range=day",
        "cluster_month": "/admin/cluster?range=month", "usage_cluster": "/usage?period=day",
        "usage_team_month": "/usage?scope=team:big&period=month",
        "api_usage": "/api/usage?scope=team:big&period=week"}
MARKS = {"cluster_day": "cluster-charts", "cluster_month": "cluster-charts",
         "usage_cluster": "usage-charts", "usage_team_month": "usage-charts",
         "api_usage": "gpu_minutes"}


class CountingBackend:
    """A FakeBackend behind a proxy that counts every method call (the pages must make none)."""

    def __init__(self):
        from tests.support.fakes import FakeBackend

        self.fake, self.calls = FakeBackend(), []

    def __getattr__(self, name):
        value = getattr(self.fake, name)
        if not callable(value):
            return value

        def counted(*a, **kw):
            self.calls.append(name)
            return value(*a, **kw)
        return counted


def services(data_dir: Path, url: str, backend):
    from tests.support.fakes import make_services

    return make_services(data_dir, backend=backend, clock=bp.utcnow, database_url=url)


def app_for(svc):
    from portal.app import create_app

    app = create_app(svc)
    if "monitoring" not in app.blueprints:        # until the lead registers it
        from portal.web.monitoring import bp as monitoring_bp
        app.register_blueprint(monitoring_bp)
    return app


# ------------------------------------------------------------------------------ sampler

def sampler_cost(url: str, data_dir: Path, ticks: int) -> dict:
    """``samples.record`` per tick on the built database (in-process)."""
    from sqlalchemy import insert, select

    from portal.db import Job, LedgerEntry, Project
    from portal.jobs.reconciler.report import TickReport
    from portal.monitoring import sample_retention, samples
    from slurm_bridge.records import QueueRecord
    from bench_monitoring_data import nodes_at

    import portal.api.monitoring  # noqa: F401  (the API routes, for the server's app)

    backend = CountingBackend()
    svc = services(data_dir, url, backend)
    rng = random.Random(7)
    with svc.db.session() as s:
        active = list(s.execute(select(Job.id, Project.team_id).join(Project)
                                .where(Job.state == "running").limit(300)))
    queue = {10_000 + i: QueueRecord(job_id=10_000 + i, state="RUNNING" if i % 3 else "PENDING",
                                     reason="None", node="a4k-1", start_time=None,
                                     submit_time=None, account="a", user="u", qos="normal",
                                     name="x", comment="slipway") for i in range(300)}
    now = bp.utcnow().replace(second=5, microsecond=0) + timedelta(minutes=1)
    with_sample, without, charge_key = [], [], [0]

    def charges():
        rows = []
        for jid, team_id in rng.sample(active, min(30, len(active))):
            charge_key[0] += 1
            rows.append({"team_id": team_id, "kind": "gpu", "amount_micros": -20_000,
                         "idempotency_key": f"bench-tick:{charge_key[0]}", "job_id": jid,
                         "attempt": 0, "from_minute": 10_000 + charge_key[0],
                         "to_minute": 10_001 + charge_key[0], "gpu_type": "a4000", "gpu_count": 1,
                         "rate_micros": 1_200_000, "resource": str(jid), "created_by": "billing",
                         "note": "bench", "created_at": now})
        with svc.db.engine.begin() as c:
            c.execute(insert(LedgerEntry), rows)

    sample_retention.maybe_run(svc, now)            # the hourly pass, due: not timed here
    for i in range(ticks):
        charges()                                    # ~30 running jobs billed this tick
        report = TickReport(polled=True, changes=[(jid, "running", "succeeded")
                                                  for jid, _ in rng.sample(active, 2)])
        t0 = time.perf_counter()
        samples.record(svc, now, queue, nodes_at(now), report)
        (with_sample if i % 2 == 0 else without).append((time.perf_counter() - t0) * 1000)
        assert not report.errors, report.errors
        now += timedelta(seconds=30)                 # two ticks a minute: one writes a sample
    t0 = time.perf_counter()
    done = sample_retention.maybe_run(svc, now + timedelta(hours=2), force=True)
    hourly_ms = (time.perf_counter() - t0) * 1000
    svc.db.dispose()

    def summary(v):
        return {"n": len(v), "mean_ms": round(statistics.mean(v), 2),
                "p95_ms": round(bp.pct(v, 95), 2), "max_ms": round(max(v), 2)}
    return {"tick_with_sample": summary(with_sample), "tick_without_sample": summary(without),
            "hourly_pass_ms": round(hourly_ms, 1), "hourly_pass": done,
            "slurm_calls": len(backend.calls)}


def cold_pages(url: str, data_dir: Path) -> dict:
    """The first (uncached) computation of each page's numbers, in-process."""
    from portal.monitoring import sample_views, usage, usage_cache
    from portal.teams.access import Actor

    svc = services(data_dir, url, CountingBackend())
    admin = Actor(id=0, name="root", is_cluster_admin=True)
    out = {}
    for name, fn in (("cluster_day", lambda: sample_views.dashboard(svc, admin, "day")),
                     ("cluster_month", lambda: sample_views.dashboard(svc, admin, "month")),
                     ("usage_cluster_day", lambda: usage.statistics(svc, admin, "cluster", "day")),
                     ("usage_team_month",
                      lambda: usage.statistics(svc, admin, "team:big", "month"))):
        usage_cache.clear()
        t0 = time.perf_counter()
        fn()
        out[name] = round((time.perf_counter() - t0) * 1000, 1)
        t0 = time.perf_counter()
        fn()
        out[name + "_cached"] = round((time.perf_counter() - t0) * 1000, 2)
    svc.db.dispose()
    return out


# ------------------------------------------------------------------------------- server

def serve(url: str, data_dir: Path, port: int, threads: int) -> None:
    import logging

    import waitress
    from flask import jsonify

    import portal.api.monitoring  # noqa: F401  (its routes join the API blueprint)

    logging.getLogger("waitress").setLevel(logging.ERROR)
    backend = CountingBackend()
    app = app_for(services(data_dir, url, backend))
    app.add_url_rule("/__bench/slurm-calls", "bench_slurm_calls",
                     lambda: jsonify({"calls": len(backend.calls), "names": backend.calls[:20]}))
    waitress.serve(app, host="127.0.0.1", port=port, threads=threads, connection_limit=200,
                   channel_timeout=60, _quiet=True)


def load(base: str, clients: int, rounds: int, max_seconds: float) -> dict:
    sessions = [bp.login(base) for _ in range(clients)]
    for s in sessions[:2]:
        for u in URLS.values():
            s.get(base + u, timeout=120)
    lat: dict[str, list[float]] = {k: [] for k in URLS}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds
    barrier = threading.Barrier(clients)
    names = list(URLS)

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
                    r = s.get(base + URLS[name], timeout=60)
                    ok = r.status_code == 200 and (name == "static" or MARKS[name] in r.text)
                except Exception as exc:  # noqa: BLE001
                    ok, r = False, exc
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    (lat[name].append(dt) if ok else
                     errors.append(f"{name}: {getattr(r, 'status_code', r)}"))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = {"wall_s": round(time.perf_counter() - t0, 2),
           "requests": sum(len(v) for v in lat.values()), "errors": len(errors),
           "error_samples": errors[:5], "timed_out": time.monotonic() > deadline,
           "bytes": {n: len(sessions[0].get(base + u, timeout=60).content) for n, u in URLS.items()},
           "urls": {}}
    for name, v in lat.items():
        out["urls"][name] = {"n": len(v), "p50_ms": round(statistics.median(v), 2) if v else None,
                             "p95_ms": round(bp.pct(v, 95), 2) if v else None}
    sp95 = out["urls"]["static"]["p95_ms"]
    out["ratio_p95"] = {n: round(out["urls"][n]["p95_ms"] / sp95, 2)
                        for n in names if n != "static" and out["urls"][n]["p95_ms"]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=240)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.db, Path(args.data_dir), args.port, args.threads)
        return 0
    with tempfile.TemporaryDirectory(prefix="slipway-bench-mon-") as tmp:
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir / 'var' / 'slipway.db'}"
        built = build(url, data_dir, services(data_dir, url, CountingBackend()),
                      n_jobs=args.jobs, days=args.days)
        print(f"built: {json.dumps(built)}", file=sys.stderr)
        cold = cold_pages(url, data_dir)
        print(f"cold: {json.dumps(cold)}", file=sys.stderr)
        port = bp._free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, __file__, "--serve", "--db", url, "--data-dir",
                                 str(data_dir), "--port", str(port), "--threads",
                                 str(args.threads)], cwd=HERE.parent)
        try:
            bp._wait_up(base, proc)
            cpu0 = bp._cpu_seconds(proc.pid)
            result = load(base, args.clients, args.rounds, args.max_seconds)
            result["server_cpu_s"] = round(bp._cpu_seconds(proc.pid) - cpu0, 2)
            import requests
            slurm = requests.get(base + "/__bench/slurm-calls", timeout=30).json()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sampler = sampler_cost(url, data_dir, args.ticks)
    out = {"bench": "monitoring", "db": "sqlite", "clients": args.clients, "rounds": args.rounds,
           "cpus": os.cpu_count(), "built": built, "cold_compute_ms": cold, **result,
           "slurm_calls": slurm["calls"], "sampler": sampler,
           "goal": "ratio_p95 <= 3 for every page, slurm_calls == 0"}
    out["ok"] = (slurm["calls"] == 0 and sampler["slurm_calls"] == 0 and result["errors"] == 0
                 and all(r <= 3 for r in result["ratio_p95"].values()))
    print(json.dumps(out, indent=2))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
