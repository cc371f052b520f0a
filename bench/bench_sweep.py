"""Benchmark: a 100-task sweep pushed to Slipway → all 100 tasks in squeue, vs. 100 bare
``sbatch`` calls of the same script and one bare ``sbatch --array=0-99``, same run, interleaved.

Slipway: ``git push -o sweep=i=0,1,…,99`` over HTTP (auth, pre-receive checks, the reservation
with its 100 task rows, the post-receive writing 100 runner specs and ONE ``sbatch --array``)
until ``squeue -r`` lists 100 tasks of the array. The tasks ask for both a6000 GPUs, so at most
one runs at a time and the others stay PENDING (the cluster is otherwise idle).
Bare loop: 100 ``sbatch`` calls of a one-line script with the same GPUs, until squeue lists all.
Bare array: ``sbatch --array=0-99`` of that script, until squeue lists 100 tasks.

Usage (a cluster must be up; ``make bench`` does that):
    SLURM_CONF=... .venv/bin/python bench/bench_sweep.py [-n 3]
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

TASKS = 100
ENTRY = "#!/bin/bash\nsleep 300\n"   # the running task stays in squeue


def count_tasks(env: dict, job_ids: list[str] | None = None, name: str | None = None) -> int:
    which = ["-j", ",".join(job_ids)] if job_ids else ["--name", str(name)]
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", *which], env=env,
                         capture_output=True, text=True).stdout
    return len(out.split())


def wait_tasks(env: dict, job_ids: list[str] | None, n: int, name: str | None = None) -> None:
    deadline = time.monotonic() + 120
    while count_tasks(env, job_ids, name) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{job_ids}: never {n} tasks in squeue")
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3)
    args = ap.parse_args()
    cluster_env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    env = {**os.environ, **cluster_env}
    sw = start_slipway(cluster_env, SLIPWAY_RECONCILE_INTERVAL="5",
                       SLIPWAY_MAX_SWEEP_TASKS=str(TASKS))
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-", dir="/tmp"))
    try:
        sw.cli("user", "add", "bench", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "bench", "1000.00")
        sw.cli("project", "create", "bench", "p", "--gpus", "a6000:2", "--image", "busybox")
        sw.tokens["bench"] = sw.cli("token", "create", "bench").stdout.strip()
        work = tmp / "work"
        sw.git("clone", "-q", sw.remote("bench", "bench", "p"), str(work))
        write_project(work, ENTRY)
        sw.git("add", "-A", cwd=work)
        sw.git("commit", "-qm", "bench", cwd=work)
        script = tmp / "job.sh"
        script.write_text(ENTRY)
        account = sw.env["SLIPWAY_SLURM_ACCOUNT_PREFIX"] + "bench"
        sbatch = ["sbatch", "--parsable", "--uid=sw-alice", "-A", account, "--gres=gpu:a6000:2",
                  "-o", "/dev/null", "--chdir=/tmp"]
        sweep = "sweep=i=" + ",".join(str(i) for i in range(TASKS))

        slipway_s, push_s, loop_s, array_s = [], [], [], []
        for r in range(args.n):
            t0 = time.perf_counter()
            out = sw.git("push", "-q", "-o", sweep, "origin", f"HEAD:refs/heads/s{r}", cwd=work)
            pushed = time.perf_counter() - t0
            job = job_id_from_push(out.stderr)
            wait_tasks(env, None, TASKS, name=f"slipway-{job}")   # squeue by the job's name
            slipway_s.append(time.perf_counter() - t0)
            push_s.append(pushed)
            subprocess.run(["scancel", "--name", f"slipway-{job}"], env=env)

            t0 = time.perf_counter()
            ids = [subprocess.run(sbatch + [str(script)], env=env, capture_output=True, text=True,
                                  check=True).stdout.strip().split(";")[0] for _ in range(TASKS)]
            wait_tasks(env, ids, TASKS)
            loop_s.append(time.perf_counter() - t0)
            subprocess.run(["scancel", *ids], env=env)

            t0 = time.perf_counter()
            aid = subprocess.run(sbatch + [f"--array=0-{TASKS - 1}", str(script)], env=env,
                                 capture_output=True, text=True, check=True).stdout.strip()
            wait_tasks(env, [aid.split(";")[0]], TASKS)
            array_s.append(time.perf_counter() - t0)
            subprocess.run(["scancel", aid.split(";")[0]], env=env)
            time.sleep(2)   # let the cancelled ones leave the queue

        def ms(xs):
            return {"median_ms": round(statistics.median(xs) * 1000, 1),
                    "min_ms": round(min(xs) * 1000, 1), "max_ms": round(max(xs) * 1000, 1)}

        result = {"n": args.n, "tasks": TASKS, "slipway_push_to_all_in_squeue": ms(slipway_s),
                  "slipway_push_returns": ms(push_s), "bare_100_sbatch": ms(loop_s),
                  "bare_sbatch_array": ms(array_s),
                  "ratio_vs_100_sbatch": round(statistics.median(slipway_s)
                                               / statistics.median(loop_s), 3),
                  "ratio_vs_sbatch_array": round(statistics.median(slipway_s)
                                                 / statistics.median(array_s), 2)}
        print(json.dumps(result, indent=1))
    finally:
        cleanup(sw, cluster_env)
        subprocess.run(["scancel", "-u", "sw-alice"], env=env)


if __name__ == "__main__":
    main()
