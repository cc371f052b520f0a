"""Chaos run (issue 16 item 7, docs/FAULTS.md §7): N jobs from several teams on a real Slipway on
two servers (PostgreSQL) and a local Slurm cluster with a backup controller, while a node loses
power, the primary slurmctld is killed, the active Slipway server is ``kill -9``ed and slurmdbd
is down for a while, each at a random moment of a seeded plan. Then: every job reached its true
final state, every results ref holds the files the job wrote, the ledger equals sacct for every
attempt, every balance equals the sum of its ledger, no job lost or duplicated.

    .venv/bin/python -m tests.chaos --jobs 30 --seed 7 [--rounds 2] [--append bench/RESULTS.md]

(root; the HA cluster lives in ``$SLIPWAY_TEST_CLUSTER_DIR-ha`` on ``$SLIPWAY_TEST_PORT_BASE``
+ 50; a PostgreSQL of its own). Prints the report (kills, recoveries, seconds to recover, every
job's outcome); exit 1 when a check fails. The CI test is tests/integration/test_chaos_live.py
(8 jobs, one fault of each kind)."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone

from tests.support import chaos_checks
from tests.support.chaos_plan import Plan, make_plan
from tests.support.chaos_run import RunResult, close_world, open_world, run, settle, team_jobs


def ci_plan(seed: int) -> Plan:
    """The CI run: 8 jobs, one fault of each kind, slurmdbd down 20 s."""
    return make_plan(8, seed, rounds=1, push_window=30, short=(8, 20), ckpt_first=40,
                     outage=(20, 20), first_fault=8, fault_gap=(1, 5))


def full_plan(n_jobs: int, seed: int, rounds: int) -> Plan:
    """The full run: pushes spread over 2 minutes, slurmdbd down 20–60 s each time."""
    return make_plan(n_jobs, seed, rounds=rounds, push_window=120, short=(10, 40), ckpt_first=50,
                     outage=(20, 60), first_fault=10, fault_gap=(3, 15))


def execute(plan: Plan, db_url: str | None = None) -> tuple[RunResult, dict[str, list[str]], str]:
    """Build the world, run the plan, check, tear down. Returns (result, checks, report)."""
    started = datetime.now(timezone.utc)
    since = started.strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.monotonic()
    world = open_world(plan, db_url)
    try:
        setup_s = round(time.monotonic() - t0, 1)
        result = run(world, plan)
        settle(world, lambda: chaos_checks.billing(world, plan, since), timeout=90)
        notes: list[str] = []
        checks, jobs = chaos_checks.all_checks(world, plan, since, team_jobs, notes)
        if result.errors:
            checks["every job ended"] = result.errors
        result.wall_s = round(time.monotonic() - t0, 1)
        outcomes = _outcomes(plan, jobs)
    finally:
        close_world(world)
    return result, checks, report(plan, result, checks, outcomes, started, setup_s, notes)


def _outcomes(plan: Plan, jobs: dict[int, dict]) -> list[dict]:
    rows = []
    for j in plan.jobs:
        job = jobs.get(j.job_id, {})
        attempts = job.get("attempts") or []
        rows.append({
            "job": j.job_id, "team": j.team, "kind": j.kind, "branch": j.branch,
            "push": "/".join(a.split(":")[0] for a in j.push_answers),
            "state": job.get("state"), "exit": job.get("exit_code"),
            "attempts": " → ".join(f"{a['node']}:{a['slurm_state']}" for a in attempts)
            or (job.get("node") or ""),
            "cost": job.get("cost")})
    return rows


def report(plan: Plan, result: RunResult, checks: dict[str, list[str]], outcomes: list[dict],
           started: datetime, setup_s: float, notes: list[str] | None = None) -> str:
    ok = not any(checks.values())
    lines = [f"Chaos run, seed {plan.seed}: {len(plan.jobs)} jobs from {len(plan.teams)} teams, "
             f"{len(result.faults)} faults; started {started:%Y-%m-%d %H:%M} UTC; setup {setup_s} s, "
             f"all jobs final at t+{result.jobs_final_s} s, wall {result.wall_s} s: "
             f"{'ALL CHECKS PASS' if ok else 'CHECKS FAILED'}", "",
             "| t (s) | fault | target | recovered (s) | what recovery means | details |",
             "|---|---|---|---|---|---|"]
    meaning = {"node": "kill → node back in service (restored once DOWN)",
               "slurmctld": "kill → backup in control", "slipway": "kill -9 → other server leads "
               "and has ticked", "slurmdbd": "kill → sacct answering (incl. the outage)"}
    for f in result.faults:
        extra = ", ".join(f"{k} {v}" for k, v in f.details.items())
        lines.append(f"| {f.at_s} | {f.kind} | {f.target} | {f.recovered_s} | {meaning[f.kind]} | {extra} |")
    by_kind: dict[str, list[float]] = {}
    for f in result.faults:
        if f.recovered_s is not None:
            by_kind.setdefault(f.kind, []).append(f.recovered_s)
    lines += ["", "Recovery by fault (s): " + "; ".join(
        f"{k} median {statistics.median(v):.1f}, worst {max(v):.1f} (n={len(v)})"
        for k, v in sorted(by_kind.items())), "",
        "| job | team | designed | branch | push | state | exit | attempts (node:sacct state) | cost |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in outcomes:
        lines.append(f"| {r['job']} | {r['team']} | {r['kind']} | {r['branch']} | {r['push']} | "
                     f"{r['state']} | {r['exit']} | {r['attempts']} | {r['cost']} |")
    lines.append("")
    for name, problems in checks.items():
        lines.append(f"- {'PASS' if not problems else 'FAIL'}: {name}")
        lines += [f"  - {p}" for p in problems[:20]]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=30, help="how many jobs (at least 4; default 30)")
    ap.add_argument("--seed", type=int, default=None, help="the plan's seed (default: random)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="faults of each kind (default 2: 8 faults)")
    ap.add_argument("--ci", action="store_true", help="the CI test's plan (8 jobs, one fault each)")
    ap.add_argument("--append", metavar="FILE", help="append the report to FILE (bench/RESULTS.md)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    try:
        plan = ci_plan(seed) if args.ci else full_plan(args.jobs, seed, args.rounds)
    except ValueError as exc:
        ap.error(str(exc))
    result, checks, text = execute(plan)
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write(f"\n### Chaos run: `python -m tests.chaos --jobs {len(plan.jobs)} --seed {seed} "
                    f"--rounds {args.rounds}`\n\n{text}")
    return 0 if not any(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
