"""Benchmark: controller kill -> first accepted push (issue 16 item 3, docs/FAULTS.md §3).

On a cluster with a backup slurmctld (`slurm_conf/cluster up --ha`) and a real Slipway, each
round: a job is running (and saved by the controller); the primary slurmctld is SIGKILLed; git
pushes follow one after another until one is answered "queued" (the clock stops there); the
backup's takeover is timed too (its log, `scontrol ping`); then the primary is started again and
the time until it is back in control is measured. At the end every job must have succeeded:
the running ones through the failover, and every push made during it (none lost).

--probe-window adds one more round that kills the primary right after a push was answered
"queued": slurmctld writes its state at most every 5 s, so the backup may not know that job;
the round reports what Slipway then shows for it.

Usage (as root; starts the HA cluster if it is not up, stops it afterwards unless --keep):
    .venv/bin/python bench/bench_ctld_failover.py [-n 5] [--dir var/bench-ha] [--port-base 19100]
        [--probe-window] [--keep]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import CLUSTER_SCRIPT, LiveCluster  # noqa: E402
from tests.support.ha_cluster import (in_control, saved_since, script, started_at,  # noqa: E402
                                      wait_for, wait_saved)
from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project  # noqa: E402

LONG = """#!/bin/bash
for i in $(seq 1 25); do echo "tick $i" >> progress.txt; sleep 1; done
"""
QUICK = """#!/bin/sh
echo quick > quick.txt
"""


def push(sw, tmp: Path, branch: str, entry: str) -> tuple[str, int | None, str]:
    work = tmp / branch
    sw.git("clone", "-q", sw.remote("alice", "alice", "p"), str(work))
    sw.git("checkout", "-qB", branch, cwd=work)
    write_project(work, entry)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", branch, cwd=work)
    res = sw.git("push", "origin", branch, cwd=work, check=False)
    if res.returncode == 0 and " queued (" in res.stderr:
        return "queued", job_id_from_push(res.stderr), res.stderr
    if res.returncode == 0 and "not known yet" in res.stderr:
        return "unknown", int(res.stderr.split("slipway: job ", 1)[1].split()[0]), res.stderr
    return "refused", None, res.stderr


def watch_takeover(cluster: LiveCluster, t0: float, out: dict) -> None:
    """Record when the backup says it is in control (polled every 0.1 s for up to 60 s)."""
    deadline = t0 + 60
    while time.monotonic() < deadline:
        if in_control(cluster) == "backup":
            out["takeover"] = time.monotonic() - t0
            return
        time.sleep(0.1)


def one_round(sw, cluster: LiveCluster, tmp: Path, n: int) -> dict:
    outcome, long_job, text = push(sw, tmp, f"long-{n}", LONG)
    assert outcome == "queued", text
    sw.wait_job(long_job, {"running"}, timeout=60)
    running_at = started_at(cluster, sw.job(long_job)["slurm_job_id"])
    wait_saved(cluster, running_at, sw.job(long_job)["slurm_job_id"], "the job state to be saved")
    assert in_control(cluster) == "primary"
    seen: dict = {}
    t0 = time.monotonic()
    script("kill", "slurmctld", state_dir=cluster.dir)
    watcher = threading.Thread(target=watch_takeover, args=(cluster, t0, seen), daemon=True)
    watcher.start()
    pushes = []
    while not any(p[1] == "queued" for p in pushes):
        if time.monotonic() - t0 > 120:
            raise SystemExit(f"round {n}: no push accepted 120 s after the kill: {pushes}")
        outcome, job, _text = push(sw, tmp, f"during-{n}-{len(pushes) + 1}", QUICK)
        pushes.append((f"during-{n}-{len(pushes) + 1}", outcome, job, time.monotonic() - t0))
    watcher.join(60)
    t1 = time.monotonic()
    script("start", "slurmctld", state_dir=cluster.dir)  # returns once the primary answers
    wait_for("the primary in control", lambda: in_control(cluster) == "primary", timeout=60)
    back = time.monotonic() - t1
    return {"round": n, "gap": pushes[-1][3], "takeover": seen.get("takeover"), "back": back,
            "pushes": pushes, "long_job": long_job,
            "long_state_after": sw.job(long_job)["state"]}


def probe_window(sw, cluster: LiveCluster, tmp: Path) -> dict:
    """Kill the primary right after a push was answered 'queued'."""
    outcome, job, text = push(sw, tmp, "window", QUICK)
    assert outcome == "queued", text
    accepted = time.time()
    t0 = time.monotonic()
    script("kill", "slurmctld", state_dir=cluster.dir)
    saved = saved_since(cluster, accepted)
    states = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = sw.job(job)
        if not states or states[-1][1] != info["state"]:
            states.append((round(time.monotonic() - t0, 1), info["state"], info.get("reason") or ""))
        if info["state"] in {"succeeded", "failed", "cancelled"} and info.get("results_ref") is not None:
            break
        time.sleep(0.5)
    script("start", "slurmctld", state_dir=cluster.dir)
    return {"job": job, "saved_before_kill": saved, "states": states}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--dir", default="var/bench-ha")
    ap.add_argument("--port-base", default="19100")
    ap.add_argument("--probe-window", action="store_true")
    ap.add_argument("--keep", action="store_true", help="leave the cluster up afterwards")
    args = ap.parse_args()
    state_dir = Path(args.dir).resolve()
    subprocess.run([str(CLUSTER_SCRIPT), "up", "--ha", "--dir", str(state_dir), "--port-base",
                    args.port_base], check=True, timeout=240)
    cluster = LiveCluster(dir=state_dir, env={"SLURM_CONF": str(state_dir / "etc" / "slurm.conf"),
                                              "SLIPWAY_CLUSTER_DIR": str(state_dir)})
    os.environ.update(cluster.env)
    timeout = [line for line in (state_dir / "etc" / "slurm.conf").read_text().splitlines()
               if line.startswith("SlurmctldTimeout=")]
    sw = start_slipway(cluster.env)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ctld-", dir="/tmp"))
    try:
        sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "alice", "100.00", "--note", "bench")
        sw.cli("project", "create", "alice", "p", "--gpus", "a4000:1", "--image", "busybox")
        sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
        rounds = []
        for n in range(1, args.n + 1):
            r = one_round(sw, cluster, tmp, n)
            rounds.append(r)
            print(f"round {n}: kill -> backup in control {r['takeover']:.1f} s, -> first accepted "
                  f"push {r['gap']:.1f} s ({len(r['pushes'])} push(es): "
                  f"{[(p[1], round(p[3], 1)) for p in r['pushes']]}); primary start -> in control "
                  f"{r['back']:.1f} s; running job: {r['long_state_after']}", flush=True)
        probe = probe_window(sw, cluster, tmp) if args.probe_window else None
        # every job ends: the ones that ran through a failover and every push made during one
        jobs = [r["long_job"] for r in rounds] + [p[2] for r in rounds for p in r["pushes"] if p[2]]
        finals = {j: sw.wait_results(j, timeout=180)["state"] for j in jobs}
        gaps = [r["gap"] for r in rounds]
        takeovers = [r["takeover"] for r in rounds if r["takeover"] is not None]
        backs = [r["back"] for r in rounds]
        print(f"\n{timeout[0] if timeout else 'SlurmctldTimeout=?'}; {len(rounds)} kills")
        print(f"kill -> first accepted push: median {statistics.median(gaps):.1f} s, worst {max(gaps):.1f} s")
        if takeovers:
            print(f"kill -> backup in control:   median {statistics.median(takeovers):.1f} s, "
                  f"worst {max(takeovers):.1f} s")
        print(f"primary start -> in control: median {statistics.median(backs):.1f} s, worst {max(backs):.1f} s")
        print(f"pushes during failovers: {sum(len(r['pushes']) for r in rounds)}, outcomes "
              f"{sorted({p[1] for r in rounds for p in r['pushes']})}; final job states: "
              f"{sorted(set(finals.values()))} ({len(finals)} jobs)")
        if probe:
            print(f"probe (kill right after 'queued'): job {probe['job']}, state saved before the kill: "
                  f"{probe['saved_before_kill']}; Slipway states: {probe['states']}")
    finally:
        cleanup(sw, cluster.env)
        subprocess.run(["rm", "-rf", str(tmp)])
        if not args.keep:
            subprocess.run([str(CLUSTER_SCRIPT), "down", "--dir", str(state_dir)], timeout=240)


if __name__ == "__main__":
    main()
