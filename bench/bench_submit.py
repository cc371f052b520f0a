"""Submit N held trivial jobs through slurm_bridge and N with bare ``sbatch``; compare.

    . /tmp/bridge-cluster/env.sh && .venv/bin/python bench/bench_submit.py [-n 200]

Both sides submit the same options and script (held, so nothing runs) and are interleaved
(one bare, one bridge, ...) so cluster load drifts equally on both. All jobs are cancelled
afterwards. Promise: the bridge adds no more than 20% over bare sbatch.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slurm_bridge.cli import CliBackend  # noqa: E402
from slurm_bridge.request import GpuRequest, JobRequest  # noqa: E402
from slurm_bridge.script import render_script  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--user", default="sw-alice")
    ap.add_argument("--account", default="slipway-test")
    args = ap.parse_args()
    if "SLURM_CONF" not in os.environ:
        print("set SLURM_CONF (source the cluster's env.sh)", file=sys.stderr)
        return 2

    workdir = tempfile.mkdtemp(prefix="bench-submit-", dir="/tmp")
    os.chmod(workdir, 0o777)
    bridge = CliBackend(gpu_limits={"a4000": 4, "a6000": 2, "shard": 8})
    req = JobRequest(name="bench/submit", user=args.user, account=args.account,
                     command=["true"], workdir=workdir, output=f"{workdir}/%j.out",
                     gpus=GpuRequest("a4000", 1), hold=True, time_limit_min=1,
                     env={"SLIPWAY_BENCH": "1"})
    # bare sbatch: exactly the argv, environment and script the bridge would use
    bare_argv, bare_env = bridge.submit_argv(req)
    script = render_script(req)

    ids: list[int] = []
    t_bare = t_bridge = 0.0
    try:
        for _ in range(args.n):
            t0 = time.perf_counter()
            proc = subprocess.run(bare_argv, input=script, capture_output=True, text=True,
                                  env=bare_env, check=True)
            t1 = time.perf_counter()
            ids.append(int(proc.stdout.strip().split(";")[0]))
            ids.append(bridge.submit(req))
            t2 = time.perf_counter()
            t_bare += t1 - t0
            t_bridge += t2 - t1
    finally:
        for i in range(0, len(ids), 200):
            subprocess.run(["scancel", *map(str, ids[i:i + 200])], check=False)
        subprocess.run(["rm", "-rf", workdir], check=False)

    ratio = t_bridge / t_bare
    print(f"jobs: {args.n} bare sbatch + {args.n} via slurm_bridge (held, interleaved)")
    print(f"bare sbatch : {t_bare:7.2f} s total, {1000 * t_bare / args.n:6.1f} ms/job")
    print(f"slurm_bridge: {t_bridge:7.2f} s total, {1000 * t_bridge / args.n:6.1f} ms/job")
    print(f"ratio bridge/bare: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)  promise: <= 1.20")
    return 0 if ratio <= 1.20 else 1


if __name__ == "__main__":
    sys.exit(main())
