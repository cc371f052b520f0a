"""Time limit with and without Slipway's warning (docs/FAULTS.md, "2. Time limit").

Runs on a live local cluster (its own, started and stopped here): for each of ``--sizes`` MiB, a
job with ``-o time=N`` writes an incompressible result of that size (a git-lfs file), then sleeps
far past its limit -- once on a Slipway with the warning off (``time_limit_warning_s=0``: only
Slurm's SIGTERM at the limit, KillWait=8 s, then SIGKILL; what happened before issue 16) and once
with the default warning. Prints one line per job and, with ``--results``, appends a table to
bench/RESULTS.md.

    .venv/bin/python bench/bench_time_limit.py --sizes 1,300 --minutes 2 [--results]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project  # noqa: E402

CLUSTER = ROOT / "slurm_conf" / "cluster"
ENTRYPOINT = """#!/bin/bash
head -c {size}M /dev/urandom > big.bin
echo written > result.txt
trap 'echo "checkpoint at step $i" > checkpoint.txt' USR1
{term_trap}
for i in $(seq 1 3600); do echo "$i" > progress.txt; sleep 1; done
"""


def sacct(env: dict, slurm_id: int) -> dict:
    out = subprocess.run(["sacct", "-j", str(slurm_id), "-X", "-D", "-n", "-P", "-S", "now-1day",
                          "-E", "now", "-o", "State,ElapsedRaw,Timelimit,Start,End"],
                         env={**os.environ, **env}, capture_output=True, text=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    state, elapsed, limit, start, end = rows[-1]
    return {"state": state, "elapsed": int(elapsed), "timelimit": limit,
            "start": datetime.fromisoformat(start).timestamp(),
            "end": datetime.fromisoformat(end).timestamp()}


def when(before_s: float) -> str:
    return f"{before_s:.0f} s before" if before_s >= 0 else f"{-before_s:.0f} s after"


def run_one(env: dict, warning: bool, size: int, minutes: int, work: Path,
            slow_stop: bool) -> dict:
    settings = {"SLIPWAY_GPU_RATES": "a4000:0.50,a6000:1.00"}
    if not warning:
        settings["SLIPWAY_TIME_LIMIT_WARNING_S"] = "0"
    sw = start_slipway(env, **settings)
    try:
        sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "alice", "10.00", "--note", "bench")
        sw.cli("project", "create", "alice", "p", "--gpus", "a4000:1", "--image", "python")
        sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
        repo = work / f"{'warn' if warning else 'none'}-{size}"
        sw.git("clone", "-q", sw.remote("alice", "alice", "p"), str(repo))
        sw.git("checkout", "-B", "late", cwd=repo)
        # slow_stop: the entrypoint takes its whole TERM grace (5 s) before it is killed
        write_project(repo, ENTRYPOINT.format(size=size,
                                              term_trap="trap '' TERM" if slow_stop else ""))
        sw.git("add", "-A", cwd=repo)
        sw.git("commit", "-qm", "late", cwd=repo)
        out = sw.git("push", "-o", f"time={minutes}", "origin", "late", cwd=repo)
        job_id = job_id_from_push(out.stderr)
        job = sw.wait_results(job_id, timeout=minutes * 60 + 240)
        acct = sacct(env, job["slurm_job_id"])
        log = (sw.data_dir / "jobs" / str(job_id) / "output.log").read_text(errors="replace")
        pushed = None
        if job["results_sha"]:
            sw.git("fetch", "-q", "origin", "late", cwd=repo)
            files = sw.git("ls-tree", "-r", "--name-only", "FETCH_HEAD", cwd=repo).stdout.split()
            committed = int(sw.git("log", "-1", "--format=%ct", "FETCH_HEAD", cwd=repo).stdout)
            pushed = {"files": files, "before_limit_s": acct["start"] + minutes * 60 - committed}
        m = re.search(r"results pushed ([\d.]+) s after SIGTERM", log)
        return {"warning": warning, "size": size, "slow_stop": slow_stop, "minutes": minutes, "state": job["state"],
                "reason": job["reason"], "slurm": acct, "pushed": pushed,
                "stop_to_push_s": float(m.group(1)) if m else None,
                "log_tail": log[-600:]}
    finally:
        cleanup(sw, env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,300", help="result sizes in MiB, comma-separated")
    ap.add_argument("--minutes", type=int, default=2, help="the jobs' time limit")
    ap.add_argument("--dir", default=str(ROOT / "var" / "bench-time-limit"))
    ap.add_argument("--port-base", default="18100")
    ap.add_argument("--slow-stop", action="store_true",
                    help="the entrypoint ignores SIGTERM (it is killed after its 5 s grace)")
    ap.add_argument("--results", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()
    subprocess.run([str(CLUSTER), "up", "--dir", args.dir, "--port-base", args.port_base],
                   check=True, timeout=240)
    env = {"SLURM_CONF": str(Path(args.dir) / "etc" / "slurm.conf"),
           "SLIPWAY_CLUSTER_DIR": args.dir}
    os.environ.update(env)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-time-limit-{os.getpid()}"
    work.mkdir(parents=True)
    rows = []
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            for warning in (False, True):
                t0 = time.monotonic()
                r = run_one(env, warning, size, args.minutes, work, args.slow_stop)
                r["wall_s"] = time.monotonic() - t0
                rows.append(r)
                p = r["pushed"]
                print(f"warning={'on ' if warning else 'off'} size={size} MiB: {r['state']} "
                      f"({r['reason']}), sacct {r['slurm']['state']} {r['slurm']['elapsed']} s; "
                      f"files on the branch: {sorted(p['files']) if p else 'NONE'}"
                      + (f", committed {when(p['before_limit_s'])} the limit" if p else "")
                      + (f", stop->push {r['stop_to_push_s']:.1f} s" if r["stop_to_push_s"] else ""),
                      flush=True)
                if not p:
                    print(r["log_tail"], flush=True)
    finally:
        subprocess.run([str(CLUSTER), "down", "--dir", args.dir], timeout=120)
        subprocess.run(["rm", "-rf", str(work)])
    if args.results:
        lines = ["", f"### {args.minutes}-minute jobs that sleep past their limit "
                 f"(`bench/bench_time_limit.py --sizes {args.sizes} --minutes {args.minutes}`)",
                 f"{datetime.now():%Y-%m-%d}, this 2-core machine (shared), KillWait=8, one run "
                 "each.", "",
                 "| warning | result, entrypoint | Slipway state (reason) | sacct state, elapsed | files on "
                 "the branch | committed | SIGTERM → pushed |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            p = r["pushed"]
            files = ", ".join(sorted(p["files"])) if p else "none"
            before = when(p["before_limit_s"]) if p else "—"
            push = f"{r['stop_to_push_s']:.1f} s" if r["stop_to_push_s"] else "—"
            stop = "ignores TERM" if r["slow_stop"] else "exits on TERM"
            lines.append(f"| {'on' if r['warning'] else 'off'} | {r['size']} MiB, {stop} | "
                         f"{r['state']} "
                         f"({r['reason']}) | {r['slurm']['state']}, {r['slurm']['elapsed']} s | "
                         f"{files} | {before} | {push} |")
        with open(ROOT / "bench" / "RESULTS.md", "a") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
