"""Benchmark: 100,000 job records in slurmdbd, read with the bridge's sacct call, then billed.

    . <cluster>/env.sh      # a running local cluster: slurm_conf/cluster up --dir DIR
    .venv/bin/python bench/bench_billing_sacct.py [--records 100000] [--repeat 3]

Target: the billing step (parse sacct text into SacctRecords + plan/append charges) costs no
more than 1.5x the ``sacct`` call that produced the records, measured in the same run.

1. load — N synthetic finished allocations are inserted straight into slurmdbd's MariaDB
   (``<cluster>_job_table``, one ``INSERT ... SELECT`` from ``seq_1_to_N`` copying a real
   finished row of the cluster, with new ``id_job``/``job_db_inx``, times spread over one day
   two days ago, 1-4 ``gres/gpu:a4000`` in ``tres_alloc``, 5% exiting 3). The rows are marked by
   ``job_name`` ``bench-synth-N`` and deleted again at the end (``--keep`` keeps them).
2. sacct — ``CliBackend.accounting(start, end)`` over that day: the time spent in the
   CommandRunner (the sacct subprocess, read and decoded) is measured apart from the rest.
3. parse — ``slurm_bridge.records.parse_sacct`` on the same stdout, alone.
4. plan — ``Biller.tick`` into an empty ``InMemoryLedgerStore`` (plan + append), and
   ``plan_gpu_charges`` alone.

Prints seconds, records/s and the ratio (parse + tick) / sacct for each repetition.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from accounting import Biller, InMemoryLedgerStore, Rates, plan_gpu_charges  # noqa: E402
from slurm_bridge import records  # noqa: E402
from slurm_bridge.cli import CliBackend  # noqa: E402
from slurm_bridge.runner import SubprocessRunner  # noqa: E402

RATES = Rates({"a4000": "1.20", "a6000": "2.50", "shard": "0.30"})  # type: ignore[dict-item]
TAG = "bench-synth-"


class TimedRunner:
    """SubprocessRunner that keeps every call's duration and result."""

    def __init__(self) -> None:
        self.inner = SubprocessRunner()
        self.calls: list = []

    def __call__(self, argv, *, input=None, timeout=None, env=None):
        t0 = time.perf_counter()
        res = self.inner(argv, input=input, timeout=timeout, env=env)
        self.calls.append((time.perf_counter() - t0, argv, res))
        return res


def sql(cluster_dir: Path, query: str) -> str:
    sock = cluster_dir / "mysql" / "mysqld.sock"
    out = subprocess.run(["mariadb", f"--socket={sock}", "-uroot", "-N", "-B", "slurm_acct_db",
                          "-e", query], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"mariadb failed: {out.stderr.strip()}")
    return out.stdout.strip()


def load(cluster_dir: Path, cluster: str, n: int, w0: int, span: int) -> None:
    table = f"{cluster}_job_table"
    tmpl = sql(cluster_dir, f"SELECT job_db_inx FROM {table} WHERE state = 3 AND time_end > 0 "
                            f"AND tres_alloc LIKE '%1002=%' AND job_name NOT LIKE '{TAG}%' "
                            "ORDER BY job_db_inx DESC LIMIT 1")
    if not tmpl:
        sys.exit("no finished a4000 job in this cluster's accounting to copy: run one first")
    inx, job = (int(x) for x in sql(
        cluster_dir, f"SELECT MAX(job_db_inx), MAX(id_job) FROM {table}").split())
    base_inx, base_job = inx + 1000, max(job, 10_000_000)
    cols = [line.split("\t")[0] for line in sql(cluster_dir, f"DESCRIBE {table}").splitlines()]
    over = {
        "job_db_inx": f"{base_inx} + s.seq",
        "id_job": f"{base_job} + s.seq",
        "job_name": f"CONCAT('{TAG}', s.seq)",
        "time_submit": f"{w0} + (s.seq * {span}) DIV {n}",
        "time_eligible": f"{w0} + (s.seq * {span}) DIV {n}",
        "time_start": f"{w0} + (s.seq * {span}) DIV {n} + s.seq MOD 7",
        "time_end": f"{w0} + (s.seq * {span}) DIV {n} + s.seq MOD 7 + 30 + (s.seq * 37) MOD 7200",
        "mod_time": f"{w0} + {span} + 7300",
        "state": "IF(s.seq MOD 20 = 0, 5, 3)",          # 5% FAILED, the rest COMPLETED
        "exit_code": "IF(s.seq MOD 20 = 0, 768, 0)",     # 3 << 8: the script exited 3
        "tres_alloc": "CONCAT('1=1,2=256,4=1,5=', 1 + 10 * (1 + s.seq MOD 4), "
                      "',1001=', 1 + s.seq MOD 4, ',1002=', 1 + s.seq MOD 4)",
        "tres_req": "CONCAT('1=1,2=256,4=1,5=', 1 + 10 * (1 + s.seq MOD 4), "
                    "',1001=', 1 + s.seq MOD 4, ',1002=', 1 + s.seq MOD 4)",
        "env_hash_inx": "0", "script_hash_inx": "0",
    }
    select = ", ".join(over.get(c, f"t.`{c}`") for c in cols)
    names = ", ".join(f"`{c}`" for c in cols)
    sql(cluster_dir, f"INSERT INTO {table} ({names}) SELECT {select} "
                     f"FROM seq_1_to_{n} s JOIN {table} t ON t.job_db_inx = {tmpl}")


def unload(cluster_dir: Path, cluster: str) -> None:
    sql(cluster_dir, f"DELETE FROM {cluster}_job_table WHERE job_name LIKE '{TAG}%'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cluster-dir", default=os.environ.get("SLIPWAY_CLUSTER_DIR"))
    parser.add_argument("--cluster-name", default="slipway")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic rows")
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF"):
        sys.exit("SLURM_CONF is not set: source the cluster's env.sh")
    cluster_dir = Path(args.cluster_dir or Path(os.environ["SLURM_CONF"]).parents[1])

    now = int(time.time())
    w0 = now - 2 * 86400
    span = 86400
    t0 = time.perf_counter()
    unload(cluster_dir, args.cluster_name)
    load(cluster_dir, args.cluster_name, args.records, w0, span)
    print(f"loaded {args.records:,} rows into {args.cluster_name}_job_table in "
          f"{time.perf_counter() - t0:.2f} s")
    start = datetime.fromtimestamp(w0, tz=timezone.utc)
    end = start + timedelta(seconds=span + 7300)
    billing_now = datetime.fromtimestamp(now, tz=timezone.utc)
    rows = []
    try:
        for rep in range(args.repeat):
            runner = TimedRunner()
            backend = CliBackend(runner, timeout_s=600)
            t0 = time.perf_counter()
            recs = backend.accounting(start, end)
            t_acc = time.perf_counter() - t0
            sacct_s = sum(c[0] for c in runner.calls)
            _, argv, res = runner.calls[0]
            delimiter = next(a for a in argv if a.startswith("--delimiter=")).split("=", 1)[1]
            t0 = time.perf_counter()
            parsed = records.parse_sacct(res.stdout, delimiter)
            parse_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            charges = plan_gpu_charges(parsed, InMemoryLedgerStore().billed_minutes, RATES,
                                       billing_now)
            plan_s = time.perf_counter() - t0
            store = InMemoryLedgerStore()
            t0 = time.perf_counter()
            tick = Biller(store, RATES).tick(parsed, billing_now)
            tick_s = time.perf_counter() - t0
            n = len(parsed)
            synth = sum(1 for r in recs if r.name.startswith(TAG))
            failed3 = sum(1 for r in recs if r.name.startswith(TAG) and r.exit_code == 3)
            assert len(tick.appended) == len(charges) and not tick.errors, tick.errors[:3]
            ratio = (parse_s + tick_s) / sacct_s
            rows.append((sacct_s, parse_s, plan_s, tick_s, ratio))
            print(f"[{rep + 1}] records {n:,} (synthetic {synth:,}, exit 3: {failed3:,}; "
                  f"sacct calls {len(runner.calls)}, {len(res.stdout) / 1e6:.1f} MB); "
                  f"charges {len(charges):,}")
            print(f"    sacct  {sacct_s:7.3f} s  {n / sacct_s:10,.0f} records/s   "
                  f"(main call {runner.calls[0][0]:.3f} s, lookback "
                  f"{sum(c[0] for c in runner.calls[1:]):.3f} s; accounting() total {t_acc:.3f} s)")
            print(f"    parse  {parse_s:7.3f} s  {n / parse_s:10,.0f} records/s")
            print(f"    plan   {plan_s:7.3f} s  {n / plan_s:10,.0f} records/s   (plan_gpu_charges)")
            print(f"    tick   {tick_s:7.3f} s  {n / tick_s:10,.0f} records/s   (Biller.tick: plan + append)")
            print(f"    billing step (parse + tick) / sacct = {ratio:.2f}  "
                  f"(parse + plan) / sacct = {(parse_s + plan_s) / sacct_s:.2f}  "
                  f"end to end {n / (sacct_s + parse_s + tick_s):,.0f} records/s")
    finally:
        if not args.keep:
            unload(cluster_dir, args.cluster_name)
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"median over {len(rows)}: sacct {med[0]:.3f} s, parse {med[1]:.3f} s, plan {med[2]:.3f} s, "
          f"tick {med[3]:.3f} s, ratio {med[4]:.2f} (target <= 1.5): "
          f"{'PASS' if med[4] <= 1.5 else 'FAIL'}")


if __name__ == "__main__":
    main()
