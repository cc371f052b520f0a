"""The monitoring benchmark's database (bench/bench_monitoring.py): teams, projects, jobs and
their GPU charges over the last N days, and N days of one-minute cluster samples of 3 nodes,
then the real hourly pass and usage rollups over them."""
from __future__ import annotations

import math
import random
import time
from datetime import datetime, timedelta, timezone

from slurm_bridge.records import GpuCount, NodeRecord

USER, PASSWORD, BIG = "bench", "bench-password", "big"
ENDED = ("succeeded",) * 7 + ("failed",) * 2 + ("cancelled",)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def nodes_at(t: datetime) -> list[NodeRecord]:
    """3 nodes whose load follows the time of day (busy by day, quieter at night)."""
    busy = 0.5 + 0.45 * math.sin((t.hour * 60 + t.minute) / 1440 * 2 * math.pi)
    a4k = max(0, min(4, round(4 * busy)))
    a6k = max(0, min(2, round(2 * busy)))

    def node(name, gpus, used, shards=None):
        g = {gpus: GpuCount(4 if gpus == "a4000" else 2, used)}
        if shards is not None:
            g["shard"] = GpuCount(8, shards)
        return NodeRecord(name=name, state="mixed" if used else "idle", flags=(), reason="",
                          partitions=("train",), cpus=8, alloc_cpus=2 * used,
                          gpus=g, cpu_load=1.0 + used, real_memory_mb=8000,
                          alloc_memory_mb=1000 * used, last_heard=t)
    return [node("a4k-1", "a4000", a4k), node("a4k-2", "a4000", max(0, a4k - 1)),
            node("a6k-1", "a6000", a6k, shards=2)]


def build(url: str, data_dir, svc, *, n_jobs: int, days: int, seed: int = 1) -> dict:
    from sqlalchemy import func, insert, select
    from werkzeug.security import generate_password_hash

    from portal.db import Job, LedgerEntry, Membership, Project, Team, User
    from portal.db.monitoring_models import STEP_MINUTE, ClusterSample, UsageDay, UsageJob
    from portal.monitoring import sample_retention, usage_rollup
    from portal.monitoring.sample_math import epoch_minute, gpus_json, snapshot

    rng = random.Random(seed)
    db, now = svc.db, utcnow()
    B = 2000

    def bulk(table, rows):
        for i in range(0, len(rows), B):
            with db.engine.begin() as c:
                c.execute(insert(table), rows[i:i + B])

    t0 = time.perf_counter()
    with db.engine.begin() as c:
        c.execute(insert(User), [{"name": USER, "unix_user": "bench", "is_cluster_admin": True,
                                  "created_at": now, "active": True, "password_hash":
                                  generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")}]
                  + [{"name": f"u{i:03d}", "unix_user": f"u{i:03d}", "is_cluster_admin": False,
                      "created_at": now, "active": True, "password_hash": None}
                     for i in range(50)])
        uid = {n: i for i, n in c.execute(select(User.id, User.name))}
        teams = [BIG] + [f"team{i:02d}" for i in range(1, 20)]
        c.execute(insert(Team), [{"name": n, "personal": False, "created_at": now,
                                  "fairshare": 100} for n in teams])
        tid = {n: i for i, n in c.execute(select(Team.id, Team.name))}
        c.execute(insert(Membership), [{"user_id": uid[USER], "team_id": tid[t], "role": "owner",
                                        "created_at": now} for t in teams])
        c.execute(insert(Project), [{"team_id": tid[BIG if i < 800 else teams[1 + i % 19]],
                                     "name": f"proj-{i:04d}", "gpu_type": "a4000", "gpu_count": 1,
                                     "image": "python", "time_limit_min": 60,
                                     "created_at": now - timedelta(days=days + 1)}
                                    for i in range(1000)])
        pids = list(c.execute(select(Project.id, Project.team_id)))
    team_of = dict(pids)
    users = [uid[f"u{i:03d}"] for i in range(50)]
    jobs, charges = [], []
    span = days * 86400
    for i in range(n_jobs):
        pid, _ = rng.choice(pids)
        created = now - timedelta(seconds=span * (n_jobs - i) / n_jobs)
        active = i >= n_jobs - 300
        wait = int(rng.expovariate(1 / 120))
        run_s = rng.randint(30, 5 * 3600)
        started = min(now, created + timedelta(seconds=wait))
        state = "running" if active else rng.choice(ENDED)
        if active:
            ended = None
        elif state == "cancelled" and rng.random() < 0.5:
            started, ended = None, min(now, created + timedelta(seconds=wait))  # while waiting
        else:
            ended = min(now, started + timedelta(seconds=run_s))
        gpu_type = "a4000" if rng.random() < 0.8 else "a6000"
        count = rng.choice((1, 1, 2, 4)) if gpu_type == "a4000" else rng.choice((1, 2))
        jobs.append({"project_id": pid, "branch": f"b{i}", "commit_sha": f"{i:040x}",
                     "pusher_id": rng.choice(users), "state": state, "slurm_job_id": 100_000 + i,
                     "gpu_type": gpu_type, "gpu_count": count, "image": "python",
                     "time_limit_min": 600, "created_at": created, "submitted_at": created,
                     "started_at": started, "attempt_started_at": started, "attempt": 0,
                     "ended_at": ended, "state_changed_at": ended or created, "cost_micros": 0})
    bulk(Job, jobs)
    with db.engine.begin() as c:
        rows = list(c.execute(select(Job.id, Job.project_id, Job.started_at, Job.ended_at,
                                     Job.gpu_type, Job.gpu_count).order_by(Job.id)))
    for jid, pid, started, ended, gpu_type, count in rows:
        if started is None:
            continue
        end = ended or now
        minutes = max(1, math.ceil((end - started).total_seconds() / 60))
        rate = 1_200_000 if gpu_type == "a4000" else 2_400_000
        charges.append({"team_id": team_of[pid], "kind": "gpu",
                        "amount_micros": -(minutes * count * rate // 60),
                        "idempotency_key": f"gpu:{jid}:0:0", "job_id": jid, "attempt": 0,
                        "from_minute": 0, "to_minute": minutes, "gpu_type": gpu_type,
                        "gpu_count": count, "rate_micros": rate, "resource": str(jid),
                        "created_by": "billing", "note": "bench", "created_at": end})
    charges += [{"team_id": tid[t], "kind": "deposit", "amount_micros": 10**12,
                 "idempotency_key": f"deposit:{t}", "job_id": None, "attempt": None,
                 "from_minute": None, "to_minute": None, "gpu_type": None, "gpu_count": None,
                 "rate_micros": None, "resource": None, "created_by": "bench", "note": "bench",
                 "created_at": now - timedelta(days=days + 1)} for t in teams]
    bulk(LedgerEntry, charges)
    t_rows = time.perf_counter() - t0

    t1 = time.perf_counter()       # a month of minute samples, as the sampler writes them
    minute0 = epoch_minute(now - timedelta(days=days))
    samples = []
    for m in range(minute0, epoch_minute(now)):
        at = datetime.fromtimestamp(m * 60 + 5, timezone.utc)
        nodes = nodes_at(at)
        snap = snapshot({}, nodes)
        running = rng.randint(20, 60)
        samples.append({"step": STEP_MINUTE, "bucket": m, "at": at, "samples": 1,
                        "jobs_running": running, "jobs_running_max": running,
                        "jobs_pending": rng.randint(0, 40), "jobs_pending_max": None,
                        "cpus_alloc": snap.cpus_alloc, "cpus_alloc_max": snap.cpus_alloc,
                        "cpus_total": snap.cpus_total, "mem_alloc_mb": snap.mem_alloc_mb,
                        "mem_alloc_max_mb": snap.mem_alloc_mb, "mem_total_mb": snap.mem_total_mb,
                        "nodes_total": 3, "nodes_down": 0, "storage_bytes": 5 * 10**11,
                        "gpus": gpus_json(snap.gpus), "note": None})
    for s in samples:
        s["jobs_pending_max"] = s["jobs_pending"]
    bulk(ClusterSample, samples)
    t_samples = time.perf_counter() - t1
    t2 = time.perf_counter()
    hourly = {"hours": sample_retention.downsample(svc, now)}   # fold the month, prune
    hourly.update(sample_retention.prune(svc, now))
    t_hourly = time.perf_counter() - t2
    t4 = time.perf_counter()
    caught_up = usage_rollup.catch_up_jobs(svc, now)             # 100k jobs, the first time
    t_jobs = time.perf_counter() - t4
    t3 = time.perf_counter()
    folded = 0
    while True:
        n = usage_rollup.fold(svc, now)["entries"]
        folded += n
        if n == 0:
            break
    t_fold = time.perf_counter() - t3
    with db.engine.begin() as c:
        c.exec_driver_sql("ANALYZE")
    with db.session() as s:
        counts = {"jobs": s.scalar(select(func.count(Job.id))),
                  "ledger_entries": s.scalar(select(func.count(LedgerEntry.id))),
                  "cluster_samples": s.scalar(select(func.count(ClusterSample.id))),
                  "usage_days": s.scalar(select(func.count(UsageDay.id))),
                  "usage_jobs": s.scalar(select(func.count(UsageJob.job_id)))}
    svc.db.dispose()
    return {"rows_s": round(t_rows, 1), "samples_insert_s": round(t_samples, 1),
            "minute_samples_written": len(samples),
            "hourly_pass_first_s": round(t_hourly, 1), "hourly_pass": hourly,
            "ledger_fold_s": round(t_fold, 1), "ledger_entries_folded": folded,
            "jobs_rollup_first_s": round(t_jobs, 1), "jobs_rolled_up": caught_up, "rows": counts}
