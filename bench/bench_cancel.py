"""Benchmark: `slipway job cancel N` → job ended (cancelled) and its files pushed, over 20 jobs.

Each job runs an entrypoint that keeps writing a file; once it runs, it is cancelled with the CLI
and the clock stops when Slipway reports the job cancelled with its results pushed. Goal: p95 ≤ 10 s.

Usage (a cluster must be up; `make bench` does that):
    SLURM_CONF=... .venv/bin/python bench/bench_cancel.py [-n 20] [--batch 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project  # noqa: E402

ENTRY = """#!/bin/bash
for i in $(seq 1 1000); do echo "tick $i" >> progress.txt; sleep 0.2; done
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--interval", default="5",
                    help="SLIPWAY_RECONCILE_INTERVAL for the server (default 5 s, Slipway's own)")
    args = ap.parse_args()
    cluster_env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    sw = start_slipway(cluster_env, SLIPWAY_RECONCILE_INTERVAL=args.interval)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cancel-", dir="/tmp"))
    times: list[float] = []
    try:
        sw.cli("user", "add", "bench", "--unix-user", "sw-bob")
        sw.cli("team", "add-funds", "bench", "1000.00")
        sw.cli("project", "create", "bench", "p", "--gpus", "a4000:1", "--image", "busybox")
        sw.tokens["bench"] = sw.cli("token", "create", "bench").stdout.strip()
        work = tmp / "work"
        sw.git("clone", "-q", sw.remote("bench", "bench", "p"), str(work))
        write_project(work, ENTRY.replace("#!/bin/bash", "#!/bin/sh"))
        (work / "slipway-entrypoint.sh").write_text(ENTRY)
        sw.git("add", "-A", cwd=work)
        sw.git("commit", "-qm", "bench", cwd=work)
        done = 0
        while done < args.n:
            batch = []
            for i in range(min(args.batch, args.n - done)):
                out = sw.git("push", "-q", "origin", f"HEAD:refs/heads/c{done + i}", cwd=work)
                batch.append(job_id_from_push(out.stderr))
            for job in batch:
                sw.wait_job(job, {"running"})
            time.sleep(2)  # let each entrypoint write something
            for job in batch:
                t0 = time.monotonic()
                sw.cli("job", "cancel", str(job))
                info = sw.wait_results(job, timeout=60)
                assert info["state"] == "cancelled" and info["results_ref"], info
                times.append(time.monotonic() - t0)
            done += len(batch)
        xs = sorted(times)
        print(json.dumps({"n": len(xs), "median_s": round(statistics.median(xs), 2),
                          "p95_s": round(xs[max(0, int(len(xs) * 0.95) - 1)], 2),
                          "max_s": round(xs[-1], 2)}, indent=1))
    finally:
        cleanup(sw, cluster_env)


if __name__ == "__main__":
    main()
