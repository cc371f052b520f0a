"""Benchmark (issue 16 item 1, docs/FAULTS.md §1): node power loss → the job's new attempt
running, over N kills (default 10). Goal: ≤ 30 s.

One Slipway job (a4000 x1, an entrypoint that resumes from its checkpoint and runs on) is
pushed; then N times: the node it runs on is powered off (tests/support/node_power.kill_node:
SIGKILL of its slurmd, slurmstepds and job processes), the clock runs until

* ``down``: Slurm declares the node DOWN (``sinfo``);
* ``squeue``: slurmctld has the job RUNNING again with one more restart (``scontrol show job``);
* ``slipway``: Slipway's store (``GET /api/jobs/<id>``, what the job page renders) shows it
  running with that attempt number;

and the node is powered on again (same argv) and back in service before the next kill. Polls
every 0.1 s. Prints one line per kill, then median and worst; ``--write`` appends a section to
bench/RESULTS.md.

Usage (a cluster up; only the cluster the SLURM_CONF names is touched):
    SLURM_CONF=var/test-cluster-x/etc/slurm.conf .venv/bin/python bench/bench_node_kill.py [-n 10]
        [--interval 5] [--write]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import node_power  # noqa: E402
from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project  # noqa: E402

A4000_NODES = ("a4k-1", "a4k-2")
ENTRY = """#!/bin/bash
n=$(cat checkpoint.txt 2>/dev/null || echo 0)
echo "attempt starts from checkpoint $n"
while true; do n=$((n + 1)); echo "$n" > checkpoint.txt; sleep 1; done
"""


def _slurm(env, *argv) -> str:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30).stdout


def _ctld_job(env, slurm_id: int) -> tuple[str, str, int]:
    out = _slurm(env, "scontrol", "show", "job", str(slurm_id))
    f = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return f.get("JobState", ""), f.get("NodeList", ""), int(f.get("Restarts", "0") or 0)


def _node_state(env, node: str) -> str:
    return _slurm(env, "sinfo", "-h", "-n", node, "-o", "%T").strip()


def _api_job(sw, job_id: int, token: str) -> dict:
    req = urllib.request.Request(f"{sw.url}/api/jobs/{job_id}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["job"]


def _wait(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--interval", default="5",
                    help="SLIPWAY_RECONCILE_INTERVAL of the server (default 5 s, Slipway's own)")
    ap.add_argument("--write", action="store_true", help="append the results to bench/RESULTS.md")
    args = ap.parse_args()
    conf = Path(os.environ["SLURM_CONF"]).resolve()
    cluster = conf.parent.parent
    env = {**os.environ, "SLURM_CONF": str(conf)}
    sw = start_slipway({"SLURM_CONF": str(conf)}, SLIPWAY_RECONCILE_INTERVAL=args.interval,
                       SLIPWAY_GPU_RATES="a4000:0.50,a6000:1.00")
    rows = []
    off = None
    try:
        sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "alice", "100.00", "--note", "bench")
        sw.cli("project", "create", "alice", "p", "--gpus", "a4000:1", "--image", "python",
               "--time", "60")
        token = sw.cli("token", "create", "alice").stdout.strip()
        sw.tokens["alice"] = token
        work = Path(tempfile.mkdtemp(prefix="bench-node-kill-", dir="/tmp"))
        sw.git("clone", "-q", sw.remote("alice", "alice", "p"), str(work))
        sw.git("checkout", "-B", "long", cwd=work)
        write_project(work, ENTRY)
        sw.git("add", "-A", cwd=work)
        sw.git("commit", "-qm", "bench", cwd=work)
        job_id = job_id_from_push(sw.git("push", "origin", "long", cwd=work).stderr)
        job = _wait("the job running", lambda: (j := _api_job(sw, job_id, token))["state"]
                    == "running" and j, 120)
        slurm_id = job["slurm_job_id"]
        for i in range(args.n):
            state, node, restarts = _wait("the job running in Slurm", lambda: (
                q := _ctld_job(env, slurm_id))[0] == "RUNNING" and q[2] == i and q, 120)
            assert node in A4000_NODES, node
            time.sleep(3)   # the attempt does some work (its checkpoint advances)
            off = node_power.kill_node(cluster, node)
            t0 = time.monotonic()
            marks: dict[str, float] = {}
            new_node = ""
            while len(marks) < 4:
                now = time.monotonic() - t0
                if now > 180:
                    raise SystemExit(f"kill {i + 1}: not running again after 180 s: {marks}")
                if "down" not in marks and "down" in _node_state(env, node):
                    marks["down"] = now
                if "squeue" not in marks:
                    q = _ctld_job(env, slurm_id)
                    if q[0] == "RUNNING" and q[2] == i + 1:
                        marks["squeue"], new_node = time.monotonic() - t0, q[1]
                if "slipway" not in marks or "table" not in marks:
                    j = _api_job(sw, job_id, token)
                    if "slipway" not in marks and j["state"] == "running" \
                            and j["attempt"] == i + 1:
                        marks["slipway"] = time.monotonic() - t0
                    if "table" not in marks and any(a["attempt"] == i + 1 and a["ended"] ==
                                                    "running" for a in j.get("attempts") or ()):
                        marks["table"] = time.monotonic() - t0
                time.sleep(0.1)
            node_power.restore_node(cluster, off)
            off = None
            rows.append((i + 1, node, new_node, marks["down"], marks["squeue"], marks["slipway"],
                         marks["table"]))
            print(f"kill {i + 1:2d}: {node} -> {new_node}: down {marks['down']:5.1f} s, "
                  f"running (squeue) {marks['squeue']:5.1f} s, running (Slipway) "
                  f"{marks['slipway']:5.1f} s, in the attempts table {marks['table']:5.1f} s",
                  flush=True)
        attempts = _api_job(sw, job_id, token)["attempts"]
        sw.cli("job", "cancel", str(job_id))
    finally:
        if off is not None:
            node_power.restore_node(cluster, off)
        cleanup(sw, {"SLURM_CONF": str(conf)})
    summary = {k: (statistics.median(v), max(v)) for k, v in
               (("down", [r[3] for r in rows]), ("squeue", [r[4] for r in rows]),
                ("slipway", [r[5] for r in rows]), ("table", [r[6] for r in rows]))}
    for k, (med, worst) in summary.items():
        print(f"{k:8s} median {med:5.1f} s, worst {worst:5.1f} s")
    for a in attempts:
        print(f"  attempt {a['attempt']}: {a['node']} {a['started_at']} .. {a['ended_at']}: "
              f"{a['ended']} ({a['minutes']} min billed)")
    print(f"attempts on the job page: {len(attempts)} "
          f"({sum(1 for a in attempts if a['slurm_state'] == 'NODE_FAIL')} ended NODE_FAIL)")
    if args.write:
        _write(rows, summary, args, attempts)


def _conf_summary() -> str:
    """The values that set the detection time, read from the cluster's own slurm.conf."""
    text = Path(os.environ["SLURM_CONF"]).read_text()
    found = []
    for key in ("SlurmdTimeout", "MessageTimeout", "cred_expire"):
        m = re.search(rf"(?m)(?:^|[,=]){key}=(\d+)", text)
        found.append(f"{key}={m.group(1) if m else 'default'}")
    return ", ".join(found)


def _write(rows, summary, args, attempts) -> None:
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lines = [
        "", "## Node loss (issue 16 item 1; docs/FAULTS.md §1)", "",
        "### Node power loss → the job's new attempt running (`bench/bench_node_kill.py`)",
        f"{day}, this 2-core machine (shared with other engineers' clusters), the local cluster "
        f"({_conf_summary()}, JobRequeue=1, ReturnToService=2), Slipway's "
        f"reconcile interval {args.interval} s. {len(rows)} kills of the node running one a4000 "
        f"job (SIGKILL of its slurmd, slurmstepds and job processes); the node is powered on "
        f"again before the next kill. Seconds from the kill:", "",
        "| kill | node → new node | node DOWN | RUNNING in squeue | running on Slipway's page "
        "| in its attempts table |",
        "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {a} → {b} | {d:.1f} | {q:.1f} | {s:.1f} | {t:.1f} |"
              for n, a, b, d, q, s, t in rows]
    keys = ("down", "squeue", "slipway", "table")
    lines += ["", "| | node DOWN | RUNNING in squeue | running on Slipway's page "
              "| in its attempts table |", "| --- | --- | --- | --- | --- |",
              "| median | " + " | ".join(f"{summary[k][0]:.1f}" for k in keys) + " |",
              "| worst | " + " | ".join(f"{summary[k][1]:.1f}" for k in keys) + " |", "",
              "Running on the page: the runner's `started` event (or the reconciler's tick) moves "
              "the job to running; the attempts table gets the new attempt's row at the "
              "reconciler's next tick (its squeue poll).",
              f"The job page listed {len(attempts)} attempts, "
              f"{sum(1 for a in attempts if a['slurm_state'] == 'NODE_FAIL')} of them ended "
              f"NODE_FAIL, each billed its sacct minutes."]
    with open(Path(__file__).resolve().parent / "RESULTS.md", "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
