"""Benchmark: job start (`git push` → the entrypoint's first action) with a 5 GiB dataset bound
at /input0 vs none.

Goal (issue 11): with the dataset bound, the job starts within 1.1x of the time without.

Set-up: a real `slipway serve` (tests/support/harness.py, as the other benches) on the local
cluster; a user, team, project (busybox image, one a4000) and a dataset repository whose
version 1 is F files of G GiB of random bytes (real bytes, not sparse), made with
`slipway data push` before anything is timed (its source files are removed right after). The
project's entrypoint's first action stamps the wall clock (busybox `adjtimex`, microseconds:
busybox `date` has no %N) into the job's log, then lists /input0.

Each round pushes the same commit to a new branch twice, once plain and once with
`-o input0=bench/big:1` (the order alternates between rounds), each time waiting until the job
has ended before the next push. Measured: wall clock before `git push` → the entrypoint's stamp
(both read the same host clock). Also reported: the push itself (until `git push` returns).

Usage (a cluster must be up; `make bench` does that):
    SLURM_CONF=... .venv/bin/python bench/bench_data_job_start.py [-n 5] [--files 5] [--gib 1]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.harness import TERMINAL, cleanup, job_id_from_push, start_slipway, write_project  # noqa: E402

ENTRY = """#!/bin/sh
T0="$(adjtimex 2>&1)"
echo "$T0" | grep 'time.tv_' | sed 's/^/BENCH /'
echo "BENCH inputs $(ls /input0 2>/dev/null | wc -l)"
"""
STAMP_RE = re.compile(r"BENCH\s+time\.tv_sec:\s*(\d+)\s*\n.*BENCH\s+time\.tv_usec:\s*(\d+)")
INPUTS_RE = re.compile(r"BENCH inputs (\d+)")


def make_dataset(folder: Path, count: int, gib: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        with open(folder / f"shard-{i:02d}.bin", "wb") as fh:
            for _ in range(gib * 256):
                fh.write(os.urandom(4 * 1024 * 1024))


def wait_stamp(log: Path, timeout: float = 180) -> tuple[float, int]:
    """The entrypoint's clock stamp in the job's log (and how many files it saw at /input0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        m, n = STAMP_RE.search(text), INPUTS_RE.search(text)
        if m and n:
            return int(m.group(1)) + int(m.group(2)) / 1e6, int(n.group(1))
        time.sleep(0.05)
    raise RuntimeError(f"no stamp in {log} after {timeout} s:\n{log.read_text() if log.exists() else ''}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5, help="rounds (one push of each kind per round)")
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--gib", type=int, default=1, help="size of each dataset file, GiB")
    args = ap.parse_args()
    cluster_env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    env = {**os.environ, **cluster_env}
    sw = start_slipway(cluster_env)
    tmp = Path(tempfile.mkdtemp(prefix="bench-jobstart-", dir="/tmp"))
    try:
        sw.cli("user", "add", "bench", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "bench", "1000.00")
        sw.cli("project", "create", "bench", "p", "--gpus", "a4000:1", "--image", "busybox")
        sw.tokens["bench"] = sw.cli("token", "create", "bench").stdout.strip()
        sw.cli("data", "create", "bench/big", "--kind", "dataset")
        t0 = time.perf_counter()
        make_dataset(tmp / "big", args.files, args.gib)
        t1 = time.perf_counter()
        version = json.loads(sw.cli("data", "push", "bench/big", str(tmp / "big"), "--quiet", "--json",
                                    as_user="bench", timeout=3600).stdout)
        t2 = time.perf_counter()
        shutil.rmtree(tmp / "big")
        print(f"dataset bench/big:{version['number']}: {version['file_count']} files, "
              f"{version['size_bytes'] / 2**30:.2f} GiB (written in {t1 - t0:.1f} s, pushed in "
              f"{t2 - t1:.1f} s, not timed)")

        work = tmp / "work"
        sw.git("clone", "-q", sw.remote("bench", "bench", "p"), str(work))
        write_project(work, ENTRY)
        sw.git("add", "-A", cwd=work)
        sw.git("commit", "-qm", "bench", cwd=work)
        binding = ["-o", f"input0=bench/big:{version['number']}"]

        def run(branch: str, options: list[str], expect_inputs: int) -> tuple[float, float, int]:
            """(push start -> entrypoint stamp, push start -> `git push` returned, job id)"""
            start = time.time()
            out = sw.git("push", "-q", *options, "origin", f"HEAD:refs/heads/{branch}", cwd=work)
            pushed = time.time()
            job = job_id_from_push(out.stderr)
            stamp, inputs = wait_stamp(Path(sw.job(job)["log"]))
            if inputs != expect_inputs:
                raise RuntimeError(f"job {job} saw {inputs} file(s) at /input0, not {expect_inputs}")
            done = sw.wait_job(job, TERMINAL, timeout=180)
            if done["state"] != "succeeded":
                raise RuntimeError(f"job {job} {done['state']}: {done}")
            return stamp - start, pushed - start, job

        # one warm-up of each kind (first job on the node: image, caches), not counted
        run("warm-plain", [], 0)
        job = run("warm-bound", binding, args.files)[2]
        notes = [ln for ln in Path(sw.job(job)["log"]).read_text(errors="replace").splitlines()
                 if "slipway:" in ln]
        print("bound job's log, Slipway's lines: " + (" / ".join(notes) or "none (read-only mounts made)"))
        rows = []
        for i in range(args.n):
            order = [("plain", [], 0), ("bound", binding, args.files)]
            if i % 2:
                order.reverse()
            for kind, opts, expect in order:
                start_s, push_s, job = run(f"{kind}-{i}", opts, expect)
                rows.append({"round": i + 1, "kind": kind, "job": job, "start_s": start_s,
                             "push_s": push_s})

        print("| round | kind | job | push returned | entrypoint running |")
        print("| --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['round']} | {r['kind']} | {r['job']} | {r['push_s'] * 1000:.0f} ms "
                  f"| {r['start_s'] * 1000:.0f} ms |")
        for k in ("plain", "bound"):
            xs = sorted(r["start_s"] for r in rows if r["kind"] == k)
            print(f"{k}: min {xs[0] * 1000:.0f} ms, median {statistics.median(xs) * 1000:.0f} ms, "
                  f"mean {statistics.mean(xs) * 1000:.0f} ms, max {xs[-1] * 1000:.0f} ms")
        med = {k: statistics.median(r["start_s"] for r in rows if r["kind"] == k) for k in ("plain", "bound")}
        push = {k: statistics.median(r["push_s"] for r in rows if r["kind"] == k) for k in ("plain", "bound")}
        print(json.dumps({"n": args.n, "dataset_gib": round(version["size_bytes"] / 2**30, 2),
                          "median_start_ms": {k: round(v * 1000) for k, v in med.items()},
                          "median_push_ms": {k: round(v * 1000) for k, v in push.items()},
                          "ratio_bound_over_plain": round(med["bound"] / med["plain"], 3)}, indent=1))
    finally:
        cleanup(sw, cluster_env)
        subprocess.run(["scancel", "-u", "sw-alice"], env=env)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
