"""What the chaos run asserts (issue 16 item 7, docs/FAULTS.md §7), each check returning the list
of problems it found (empty: it holds) so that the report can show every one:

* ``lost_or_duplicated`` — every pushed branch has exactly one Slipway job, and every Slipway job
  exactly one Slurm job (sacct by the job's Slurm name ``slipway-<id>``), the one it records;
* ``final_states`` — each job ended as it was designed to (succeeded / failed with exit 3 /
  cancelled), in Slipway and in sacct's last attempt;
* ``results`` — the job's results ref exists and holds the files the job wrote, with their text
  (a requeued checkpointing job: also ``resumed.txt``, read from the checkpoint);
* ``ledger_equals_sacct`` — per job and attempt, GPU charges contiguous from minute 0 to
  ``ceil(ElapsedRaw / 60)``, none twice, the GPU type and count sacct's AllocTRES says — except
  where sacct provably lost attempts in a slurmdbd outage (``accounting_lost``: fewer records
  than Slurm's own restart count says ran, or a record that got a node but no start): Slurm
  22.05 keeps no truth to compare with there; such jobs are listed as notes in the report;
* ``balances`` — every team's balance equals the sum of its ledger entries."""
from __future__ import annotations

import json
import math
import re
from decimal import Decimal

from tests.support.chaos_plan import TRUE_END, Plan

SACCT_FIELDS = ("JobID", "JobName", "Account", "State", "ExitCode", "ElapsedRaw", "AllocTRES", "NodeList",
                "Start")
# sacct's state of the last attempt. A cancel stops the batch step with TERM (docs: the runner
# commits and pushes, then exits with the signal's status), so Slurm says FAILED or CANCELLED.
SLURM_END = {"succeeded": ("COMPLETED",), "failed": ("FAILED",), "cancelled": ("CANCELLED", "FAILED")}


def sacct_records(world, since: str) -> dict[str, list[dict]]:
    """Job name -> its attempts (``sacct -X -D``, oldest first) of this Slipway's accounts."""
    prefix = world.sw.env["SLIPWAY_SLURM_ACCOUNT_PREFIX"]
    out = world.cluster.run("sacct", "-a", "-X", "-D", "-n", "-P", "-S", since, "-E", "now",
                            "-o", ",".join(SACCT_FIELDS), timeout=60).stdout
    recs: dict[str, list[dict]] = {}
    for line in out.splitlines():
        rec = dict(zip(SACCT_FIELDS, line.split("|")))
        if rec.get("Account", "").startswith(prefix):
            recs.setdefault(rec["JobName"], []).append(rec)
    return recs


def jobs_by_id(world, plan: Plan) -> dict[int, dict]:
    return {j.job_id: world.sw.job(j.job_id) for j in plan.jobs if j.job_id}


def lost_or_duplicated(world, plan: Plan, acct: dict[str, list[dict]], jobs_of_branch,
                       jobs: dict[int, dict]) -> list[str]:
    problems = []
    for j in plan.jobs:
        rows = jobs_of_branch(world, j.team, j.branch)
        if len(rows) != 1:
            problems.append(f"{j.team}/{j.branch}: {len(rows)} Slipway jobs for one push "
                            f"({[r['id'] for r in rows]}; push answers {j.push_answers})")
    for j in plan.jobs:
        if not j.job_id:
            continue
        job = jobs[j.job_id]
        recs = acct.get(f"slipway-{j.job_id}", [])
        ids = {r["JobID"] for r in recs}
        if job["slurm_job_id"] is None or ids != {str(job["slurm_job_id"])}:
            problems.append(f"job {j.job_id} ({j.branch}): Slurm job {job['slurm_job_id']}, sacct has "
                            f"{sorted(ids) or 'nothing'} under its name")
    return problems


def final_states(plan: Plan, jobs: dict[int, dict], acct: dict[str, list[dict]]) -> list[str]:
    problems = []
    for j in plan.jobs:
        if not j.job_id:
            problems.append(f"{j.branch}: never became a job (push answers {j.push_answers})")
            continue
        job = jobs[j.job_id]
        state, code = TRUE_END[j.kind]
        if job["state"] != state or (code is not None and job["exit_code"] != code):
            problems.append(f"job {j.job_id} ({j.branch}): {job['state']} exit {job['exit_code']} "
                            f"({job['reason']}), designed to end {state}"
                            + (f" exit {code}" if code is not None else ""))
        recs = acct.get(f"slipway-{j.job_id}", [])
        last = recs[-1]["State"].split()[0] if recs else None
        if last not in SLURM_END[state]:
            problems.append(f"job {j.job_id} ({j.branch}): sacct's last attempt {last}, expected "
                            f"{' or '.join(SLURM_END[state])}")
    return problems


def results(world, plan: Plan, jobs: dict[int, dict]) -> list[str]:
    """Fetch each job's results ref through the one address and read its files."""
    problems = []
    for j in plan.jobs:
        if not j.job_id:
            continue
        job = jobs[j.job_id]
        ref = job["results_ref"]
        if not ref:
            problems.append(f"job {j.job_id} ({j.branch}): no results ref")
            continue
        work = world.sw.homes / f"work-{j.team}"
        got = world.sw.git("fetch", "-q", "origin", f"+{ref}:refs/chaos/{j.job_id}", cwd=work, check=False)
        if got.returncode != 0:
            problems.append(f"job {j.job_id}: results ref {ref} cannot be fetched: {got.stderr.strip()}")
            continue
        names = set(world.sw.git("ls-tree", "-r", "--name-only", f"refs/chaos/{j.job_id}",
                                 cwd=work).stdout.split())
        attempts = len(job.get("attempts") or []) or 1
        for path, want in j.expected_files(attempts).items():
            if path not in names:
                problems.append(f"job {j.job_id} ({j.branch}): {path} missing on {ref} (has {sorted(names)})")
                continue
            if want is not None:
                have = world.sw.git("show", f"refs/chaos/{j.job_id}:{path}", cwd=work).stdout
                if have != want:
                    problems.append(f"job {j.job_id} ({j.branch}): {path} on {ref} is {have!r}, "
                                    f"the job wrote {want!r}")
    return problems


def ledgers(world, plan: Plan) -> dict[str, dict]:
    return {team: json.loads(world.sw.cli("team", "ledger", team, "--json").stdout)
            for team, _unix in plan.teams}


_TRES = re.compile(r"gres/gpu:(\w+)=(\d+)")


def accounting_lost(recs: list[dict], job: dict | None) -> str | None:
    """Why sacct cannot be the truth for this job (it lost attempts while slurmdbd was down:
    docs/FAULTS.md §5), or None. ``job``: Slipway's view (``attempt``: Slurm's restart count,
    from squeue, which never went through slurmdbd)."""
    ran = (job or {}).get("attempt", 0) + 1
    if len(recs) < ran:
        return f"sacct has {len(recs)} record(s) of the {ran} attempts squeue showed"
    for n, r in enumerate(recs):
        if (r.get("NodeList") not in ("", "None assigned") and r.get("ElapsedRaw") == "0"
                and r.get("Start") in ("", "None", "Unknown")):
            return f"sacct's attempt {n} got node {r['NodeList']} but has no start ({r['State']})"
    return None


def ledger_equals_sacct(plan: Plan, acct: dict[str, list[dict]], books: dict[str, dict],
                        jobs: dict[int, dict] | None = None,
                        notes: list[str] | None = None) -> list[str]:
    problems = []
    for j in plan.jobs:
        if not j.job_id:
            continue
        lost = accounting_lost(acct.get(f"slipway-{j.job_id}", []), (jobs or {}).get(j.job_id))
        if lost is not None:
            if notes is not None:
                notes.append(f"job {j.job_id} ({j.branch}): not compared with sacct: {lost} "
                             "(Slurm lost them during the slurmdbd outage)")
            continue
        entries = [e for e in books[j.team]["entries"] if e["kind"] == "gpu" and e["job"] == j.job_id]
        billed: dict[int, int] = {}
        for e in sorted(entries, key=lambda e: (e["attempt"], e["from_minute"])):
            a, lo, hi = e["attempt"], e["from_minute"], e["to_minute"]
            if lo != billed.get(a, 0) or hi <= lo:
                problems.append(f"job {j.job_id} attempt {a}: minutes {lo}-{hi} after {billed.get(a, 0)} "
                                "(billed twice or a gap)")
            billed[a] = max(billed.get(a, 0), hi)
        recs = acct.get(f"slipway-{j.job_id}", [])
        want = {n: math.ceil(int(r["ElapsedRaw"] or 0) / 60) for n, r in enumerate(recs)}
        want = {n: m for n, m in want.items() if m}
        if billed != want:
            problems.append(f"job {j.job_id} ({j.branch}): billed minutes per attempt {billed}, sacct "
                            f"{want} ({[(r['State'], r['ElapsedRaw']) for r in recs]})")
        for e in entries:
            rec = recs[e["attempt"]] if e["attempt"] < len(recs) else None
            tres = _TRES.search(rec["AllocTRES"]) if rec else None
            if not tres or (tres.group(1), int(tres.group(2))) != (e["gpu_type"], e["gpu_count"]):
                problems.append(f"job {j.job_id} attempt {e['attempt']}: billed {e['gpu_count']}x "
                                f"{e['gpu_type']}, sacct {rec and rec['AllocTRES']}")
                break
    return problems


def balances(world, plan: Plan, books: dict[str, dict]) -> list[str]:
    problems = []
    for team, _unix in plan.teams:
        total = sum((Decimal(str(e["amount"])) for e in books[team]["entries"]), Decimal(0))
        shown = Decimal(json.loads(world.sw.cli("team", "balance", team, "--json").stdout)["balance"])
        if shown != total or Decimal(books[team]["balance"]) != total:
            problems.append(f"team {team}: balance {shown} (ledger page {books[team]['balance']}), "
                            f"sum of its {len(books[team]['entries'])} ledger entries {total}")
    return problems


def billing(world, plan: Plan, since: str) -> list[str]:
    """The ledger check alone (cheap: one sacct, one ledger per team): billing catches up at the
    reconciler's ticks, so this is what the run waits on before checking everything."""
    return ledger_equals_sacct(plan, sacct_records(world, since), ledgers(world, plan),
                               jobs_by_id(world, plan))


def all_checks(world, plan: Plan, since: str, team_jobs, notes: list[str] | None = None
               ) -> tuple[dict[str, list[str]], dict[int, dict]]:
    """``team_jobs(world, team)``: every job of the team (``slipway job list --json``). Returns the
    problems by check, and every job as ``slipway job show --json`` showed it; ``notes`` gets what
    could not be compared (sacct's losses)."""
    acct = sacct_records(world, since)
    jobs = jobs_by_id(world, plan)
    books = ledgers(world, plan)
    rows = {team: team_jobs(world, team) for team, _unix in plan.teams}

    def of_branch(_world, team: str, branch: str) -> list[dict]:
        return [r for r in rows[team] if r["project"] == f"{team}/chaos" and r["branch"] == branch]
    return {
        "no job lost or duplicated": lost_or_duplicated(world, plan, acct, of_branch, jobs),
        "every job reached its true final state": final_states(plan, jobs, acct),
        "every results ref exists with the files the job wrote": results(world, plan, jobs),
        "the ledger equals sacct for every attempt": ledger_equals_sacct(plan, acct, books, jobs,
                                                                         notes),
        "every balance equals the sum of its ledger": balances(world, plan, books),
    }, jobs
