"""Benchmark (issue 17 item 3, docs/SPEED.md §3): how soon what Slurm does shows in Slipway.

For N jobs of each kind, one poll loop (every ``--poll`` s) reads Slurm (ONE ``squeue`` for all
the bench's jobs) and Slipway's API (``GET /api/jobs/<id>``, what the job page renders) and
timestamps the first sight of each change:

* ``start``:  squeue says RUNNING → the API says ``running``;
* ``end``:    the job leaves RUNNING in squeue (its entrypoint exited, results pushed, the
  batch script done) → the API shows its final state (``succeeded``);
* ``cancel``: ``scancel <slurm id>`` run by hand on the cluster (not through Slipway) → the API
  says so (``cancel_shown``: ``finishing``, "stopped by Slurm (SIGTERM): its files are being
  pushed", from the runner's event) and → ``cancelled`` (``cancel``: after the files are pushed
  and Slurm has the job ended);
* ``charge``: the job's end in Slurm → the last change of the job's cost (its final charge on the
  ledger; watched for ``--settle`` s after the end).

Goal: p95 ≤ 2 s for start, end and cancel; final charge ≤ 60 s. Prints a JSON summary; the
``--interval`` is Slipway's reconcile interval (its own default when left out).

Usage (a cluster up; only the cluster SLURM_CONF names is touched):
    SLURM_CONF=var/test-cluster-x/etc/slurm.conf .venv/bin/python bench/bench_freshness.py \
        [-n 20] [--batch 6] [--interval S]
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
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project  # noqa: E402

ENDING = "#!/bin/bash\necho started > out.txt\nsleep 6\necho done >> out.txt\n"
LONG = "#!/bin/bash\nfor i in $(seq 1 600); do echo $i > tick.txt; sleep 0.5; done\n"
FINAL = {"succeeded", "failed", "cancelled"}   # portal/jobs/states.TERMINAL


@dataclass
class Watch:
    job: int
    kind: str                       # "end" or "cancel"
    slurm_id: str = ""
    seen: dict[str, float] = field(default_factory=dict)   # event -> monotonic first sight
    cost: str | None = None
    last: dict = field(default_factory=dict)   # the API's last answer
    cost_changed: float | None = None


def _api_job(url: str, token: str, job_id: int) -> dict:
    req = urllib.request.Request(f"{url}/api/jobs/{job_id}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["job"]


def _squeue(env: dict, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i %T"],
                         env=env, capture_output=True, text=True).stdout
    return dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)


def _mark(w: Watch, event: str, now: float) -> None:
    w.seen.setdefault(event, now)


def _poll(sw, token: str, env: dict, watches: list[Watch], settle: float, poll: float,
          cancel_after: float) -> None:
    """Until every watch has its events and its cost has been still for ``settle`` s."""
    deadline = time.monotonic() + 240 + settle
    while time.monotonic() < deadline:
        now = time.monotonic()
        slurm = _squeue(env, [w.slurm_id for w in watches if w.slurm_id])
        for w in watches:
            st = slurm.get(w.slurm_id, "")
            if st:
                _mark(w, "squeue_" + st, now)   # each state Slurm showed, first seen
            if "page_final" not in w.seen and w.last.get("state"):
                _mark(w, "page_" + w.last["state"], now)
            if st == "RUNNING":
                _mark(w, "slurm_running", now)
            elif "slurm_running" in w.seen and "slurm_cancel" not in w.seen:
                _mark(w, "slurm_end", now)   # left RUNNING (COMPLETING, COMPLETED, or gone)
            if (w.kind == "cancel" and "slurm_running" in w.seen and "slurm_cancel" not in w.seen
                    and now - w.seen["slurm_running"] >= cancel_after):
                subprocess.run(["scancel", w.slurm_id], env=env, check=True)
                _mark(w, "slurm_cancel", time.monotonic())
        for w in watches:
            job = w.last = _api_job(sw.url, token, w.job)
            t = time.monotonic()
            if not w.slurm_id and job.get("slurm_job_id"):
                w.slurm_id = str(job["slurm_job_id"])
            if job["state"] == "running":
                _mark(w, "page_running", t)
            if "slurm_cancel" in w.seen and (job["state"] == "cancelled" or (
                    job["state"] == "finishing"
                    and (job.get("reason") or "").startswith("stopped by Slurm"))):
                _mark(w, "page_cancel_shown", t)   # the page says Slurm stopped it
            if job["state"] in FINAL:
                _mark(w, "page_final", t)
                w.seen.setdefault("final_state_" + job["state"], t)
            if job["cost"] != w.cost:
                w.cost, w.cost_changed = job["cost"], t
        if all("page_final" in w.seen and w.cost_changed is not None
               and time.monotonic() - max(w.cost_changed, w.seen["page_final"]) >= settle
               for w in watches):
            return
        time.sleep(max(0.0, poll - (time.monotonic() - now)))
    raise RuntimeError("jobs did not settle: " + "; ".join(f"{w.job}: {w.seen} {w.last}" for w in watches))


def _stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median_s": round(statistics.median(xs), 2),
            "p95_s": round(xs[max(0, -(-len(xs) * 95 // 100) - 1)], 2), "max_s": round(xs[-1], 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="jobs of each kind (ending, cancelled)")
    ap.add_argument("--batch", type=int, default=6, help="jobs watched at once")
    ap.add_argument("--interval", default="5",
                    help="SLIPWAY_RECONCILE_INTERVAL (default 5 s, Slipway's own)")
    ap.add_argument("--poll", type=float, default=0.1)
    ap.add_argument("--settle", type=float, default=75.0,
                    help="seconds a job's cost must stay still to count as final")
    args = ap.parse_args()
    cluster_env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    env = {**os.environ, **cluster_env}
    sw = start_slipway(cluster_env, SLIPWAY_RECONCILE_INTERVAL=args.interval)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fresh-", dir="/tmp"))
    done: list[Watch] = []
    try:
        sw.cli("user", "add", "bench", "--unix-user", "sw-bob")
        sw.cli("team", "add-funds", "bench", "1000.00")
        sw.cli("project", "create", "bench", "p", "--gpus", "a4000:1", "--image", "busybox")
        token = sw.tokens["bench"] = sw.cli("token", "create", "bench").stdout.strip()
        work = {}
        for kind, entry in (("end", ENDING), ("cancel", LONG)):
            w = work[kind] = tmp / kind
            sw.git("clone", "-q", sw.remote("bench", "bench", "p"), str(w))
            write_project(w, entry)
            sw.git("add", "-A", cwd=w)
            sw.git("commit", "-qm", kind, cwd=w)
        todo = [("end", i) for i in range(args.n)] + [("cancel", i) for i in range(args.n)]
        todo.sort(key=lambda k: k[1])   # interleave the kinds
        while todo:
            batch, todo = todo[:args.batch], todo[args.batch:]
            watches = []
            for kind, i in batch:
                out = sw.git("push", "-q", "origin", f"HEAD:refs/heads/{kind}{i}", cwd=work[kind])
                watches.append(Watch(job_id_from_push(out.stderr), kind))
            _poll(sw, token, env, watches, args.settle, args.poll, cancel_after=2.0)
            done += watches
            for w in watches:
                print(json.dumps({"job": w.job, "kind": w.kind, **{
                    k: round(v - w.seen["slurm_running"], 2) for k, v in w.seen.items()}}),
                    flush=True)
        lag = {"start": [], "end": [], "cancel_shown": [], "cancel": [], "charge": []}
        wrong = []
        for w in done:
            s = w.seen
            lag["start"].append(s["page_running"] - s["slurm_running"]
                                if "page_running" in s else float("inf"))
            if w.kind == "end":
                lag["end"].append(s["page_final"] - s["slurm_end"])
                ok = "final_state_succeeded" in s
            else:
                lag["cancel"].append(s["page_final"] - s["slurm_cancel"])
                lag["cancel_shown"].append(s["page_cancel_shown"] - s["slurm_cancel"])
                ok = "final_state_cancelled" in s
            if not ok:
                wrong.append((w.job, w.kind, sorted(k for k in s if k.startswith("final_state_"))))
            end = s.get("slurm_end", s.get("slurm_cancel"))
            lag["charge"].append(max(0.0, w.cost_changed - end))
        print(json.dumps({"interval": args.interval,
                          **{k: _stats(v) for k, v in lag.items()}, "wrong_final_state": wrong},
                         indent=1))
    finally:
        cleanup(sw, cluster_env)


if __name__ == "__main__":
    main()
