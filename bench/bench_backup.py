"""How long `slipway backup` / `slipway restore` take, and how big a backup is, for a realistic
Slipway (issue 16 item 6; docs/FAULTS.md §6). Run by hand:

    .venv/bin/python bench/bench_backup.py [--pg] [--jobs 100000] [--ledger 300000] ...

Builds (in a temp dir) a SQLite Slipway (or PostgreSQL with --pg, on a throwaway server from
tests/pg_server.py): T teams, P projects each with a real bare repository of C commits of
incompressible files and 5 branches, L MiB of git-lfs objects, N jobs (1 in 50 with a 20 KB log),
M ledger entries, V data versions of F files each; then times the backup (through
portal.backup.backup: what the CLI calls), its size, and the restore onto an empty data
directory (the restore itself verifies counts, balances, refs with fsck and data manifests).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fast_import(git_dir: Path, commits: int, rng: random.Random) -> None:
    """C commits on main (3 files of 16 KiB random bytes changed per commit), 5 branches."""
    out = io.BytesIO()
    mark = 0
    prev = None
    for c in range(commits):
        blobs = []
        for f in range(3):
            mark += 1
            data = rng.randbytes(16384)
            out.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)) + data + b"\n")
            blobs.append((mark, f"src/file{f}.bin"))
        mark += 1
        msg = f"commit {c}".encode()
        out.write(b"commit refs/heads/main\nmark :%d\ncommitter Bench <b@x> %d +0000\ndata %d\n%s\n"
                  % (mark, 1_700_000_000 + c, len(msg), msg))
        if prev:
            out.write(b"from :%d\n" % prev)
        for m, path in blobs:
            out.write(b"M 100644 :%d %s\n" % (m, path.encode()))
        out.write(b"\n")
        prev = mark
    for b in range(5):
        out.write(b"reset refs/heads/exp-%d\nfrom :%d\n\n" % (b, prev))
    subprocess.run(["git", "--git-dir", str(git_dir), "fast-import", "--quiet"],
                   input=out.getvalue(), check=True)


def build(svc, args, rng) -> dict:
    from sqlalchemy import insert

    from git_gateway.lfs import LfsStore
    from portal.db import (DataFile, DataRepo, DataVersion, Job, LedgerEntry, Membership,
                           Project, Team, User)

    now = datetime.now(timezone.utc)
    t0 = time.perf_counter()

    def bulk(table, rows, b=5000):
        for i in range(0, len(rows), b):
            with svc.db.engine.begin() as c:
                c.execute(insert(table), rows[i:i + b])

    bulk(User, [{"id": i + 1, "name": f"u{i}", "unix_user": f"u{i}", "created_at": now,
                 "is_cluster_admin": False} for i in range(args.teams * 5)])
    bulk(Team, [{"id": i + 1, "name": f"team{i}", "personal": False, "created_at": now}
                for i in range(args.teams)])
    bulk(Membership, [{"user_id": i + 1, "team_id": i // 5 + 1, "role": "user", "created_at": now}
                      for i in range(args.teams * 5)])
    projects = [(p + 1, p % args.teams + 1, f"team{p % args.teams}", f"proj{p}")
                for p in range(args.projects)]
    bulk(Project, [{"id": pid, "team_id": tid, "name": name, "gpu_type": "a4000", "gpu_count": 1,
                    "image": "python", "time_limit_min": 60, "created_at": now}
                   for pid, tid, _t, name in projects])
    jobs = []
    for j in range(args.jobs):
        pid = j % args.projects + 1
        at = now - timedelta(minutes=args.jobs - j)
        jobs.append({"id": j + 1, "project_id": pid, "branch": f"b{j}", "commit_sha": "ab" * 20,
                     "state": "succeeded", "gpu_type": "a4000", "gpu_count": 1, "image": "python",
                     "time_limit_min": 60, "created_at": at, "state_changed_at": at,
                     "ended_at": at, "exit_code": 0})
    bulk(Job, jobs)
    bulk(LedgerEntry, [{"team_id": e % args.teams + 1, "kind": "gpu", "amount_micros": -8333,
                        "idempotency_key": f"gpu:{e % args.jobs + 1}:0:{e}",
                        "job_id": e % args.jobs + 1, "attempt": 0, "from_minute": e,
                        "to_minute": e + 1, "gpu_type": "a4000", "gpu_count": 1,
                        "rate_micros": 500000, "resource": str(e % args.jobs + 1),
                        "created_by": "billing", "created_at": now} for e in range(args.ledger)])
    bulk(DataRepo, [{"id": r + 1, "team_id": r % args.teams + 1, "name": f"ds{r}", "kind": "dataset",
                     "public": False, "description": "", "created_at": now, "next_version": 1}
                    for r in range(max(1, args.versions // 5))])
    bulk(DataVersion, [{"id": v + 1, "repo_id": v % max(1, args.versions // 5) + 1,
                        "number": v // max(1, args.versions // 5) + 1, "size_bytes": 0,
                        "file_count": args.files, "created_at": now, "source": "upload"}
                       for v in range(args.versions)])
    bulk(DataFile, [{"version_id": v + 1, "path": f"shard-{f:05d}.tar",
                     "sha256": hashlib.sha256(b"%d/%d" % (v, f)).hexdigest(), "size": 1 << 26}
                    for v in range(args.versions) for f in range(args.files)])
    t_db = time.perf_counter() - t0
    for _pid, _tid, team, name in projects:
        git_dir = svc.git.create_repo(team, name)
        fast_import(git_dir, args.commits, rng)
    store = LfsStore(svc.config.lfs_root)
    lfs_objects = args.lfs_mb // 10
    for i in range(lfs_objects):
        data = rng.randbytes(10 << 20)
        _pid, _tid, team, name = projects[i % min(10, len(projects))]
        store.put_stream(team, name, hashlib.sha256(data).hexdigest(), io.BytesIO(data), len(data))
    for j in range(0, args.jobs, 50):
        d = Path(svc.config.jobs_dir) / str(j + 1)
        d.mkdir(mode=0o700)
        (d / "output.log").write_bytes(b"epoch 1 loss 0.5\n" * 1200)
    return {"seconds_db": t_db, "seconds_all": time.perf_counter() - t0, "lfs_objects": lfs_objects}


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    ap.add_argument("--teams", type=int, default=20)
    ap.add_argument("--projects", type=int, default=100)
    ap.add_argument("--commits", type=int, default=20)
    ap.add_argument("--lfs-mb", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--ledger", type=int, default=300_000)
    ap.add_argument("--versions", type=int, default=50)
    ap.add_argument("--files", type=int, default=200)
    args = ap.parse_args()

    from portal.backup import backup, restore
    from portal.private_files import set_process_umask
    from tests.support.fakes import make_config, make_services

    set_process_umask()
    rng = random.Random(16)
    tmp = Path(tempfile.mkdtemp(prefix="slipway-bench-backup-"))
    pg = None
    try:
        over = {}
        if args.pg:
            from tests.pg_server import create_database, start_postgres
            pg = start_postgres()
            over = {"database_url": create_database(pg.url, "bench_src")}
        svc = make_services(tmp / "old", hook_secret="", secret_key="", **over)
        made = build(svc, args, rng)
        live = du(svc.config.data_dir)
        print(f"world built in {made['seconds_all']:.1f} s (database rows {made['seconds_db']:.1f} s); "
              f"data dir {live / 2**20:.0f} MiB")
        t = time.perf_counter()
        manifest = backup(svc.config, tmp / "bk")
        t_backup = time.perf_counter() - t
        svc.db.dispose()
        over2 = {"database_url": create_database(pg.url, "bench_dst")} if pg else {}
        t = time.perf_counter()
        summary = restore(make_config(tmp / "new", **over2), tmp / "bk")
        t_restore = time.perf_counter() - t
        c = manifest["counts"]
        db_bytes = sum(f["size"] for p, f in manifest["files"].items() if p.startswith("database/"))
        git_bytes = sum(f["size"] for p, f in manifest["files"].items() if p.startswith("repos/"))
        lfs_bytes = sum(f["size"] for p, f in manifest["files"].items() if p.startswith("lfs/"))
        print(f"| {'PostgreSQL' if pg else 'SQLite'} | {c['jobs']:,} jobs, {c['ledger_entries']:,} "
              f"ledger entries, {len(manifest['repos'])} repos × {args.commits} commits, "
              f"{made['lfs_objects']} LFS objects, {c['data_versions']} data versions × {args.files} "
              f"files | {live / 2**20:.0f} MiB | {manifest['total_bytes'] / 2**20:.0f} MiB "
              f"(db {db_bytes / 2**20:.0f}, git {git_bytes / 2**20:.0f}, lfs {lfs_bytes / 2**20:.0f}) "
              f"| {t_backup:.1f} s | {t_restore:.1f} s |")
        assert summary["counts"] == c
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    raise SystemExit(main())
