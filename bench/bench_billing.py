"""Benchmark: parse N sacct lines and plan (and append) GPU charges for all of them.

    .venv/bin/python bench/bench_billing.py [--records 100000] [--seed 1]

Writes N synthetic lines in the format of
``sacct -X -D --parsable2 --noheader -o JobID,State,Start,End,ElapsedRaw,AllocTRES,Account``
to a temp file (about 10% requeued jobs with two attempts, 10% still running), then times:

1. parse   — the tiny local parser below (slurm_bridge owns real parsing);
2. plan    — ``plan_gpu_charges`` against an empty in-memory store;
3. tick    — ``Biller.tick`` (plan + ``append_if_absent`` into the in-memory store);
4. retick  — the same tick again (all attempts already billed: the steady-state cost).

and prints records/s for each. Pure Python; no Slurm needed.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from accounting import AttemptRecord, Biller, InMemoryLedgerStore, Rates, plan_gpu_charges  # noqa: E402

RATES = Rates({"a4000": "1.20", "a6000": "2.50"})  # type: ignore[dict-item]
NOW = datetime(2024, 6, 1, 0, 0, 0)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def generate(path: str, n: int, seed: int) -> None:
    """Write ``n`` sacct lines (attempts) to ``path``."""
    rng = random.Random(seed)
    job_id = 1000
    written = 0
    with open(path, "w") as out:
        while written < n:
            job_id += 1
            gpu_type, most = rng.choice([("a4000", 4), ("a6000", 2)])
            count = rng.randint(1, most)
            tres = f"billing={count * 10},cpu={count},gres/gpu:{gpu_type}={count},gres/gpu={count},mem=4G,node=1"
            account = f"team-{rng.randint(1, 50)}"
            start = NOW - timedelta(seconds=rng.randint(60, 30 * 86400))
            attempts = 2 if rng.random() < 0.1 else 1
            for attempt in range(attempts):
                if written >= n:
                    break
                last = attempt == attempts - 1
                if last and rng.random() < 0.1:
                    elapsed = int((NOW - start).total_seconds())
                    out.write(f"{job_id}|RUNNING|{start:{TIME_FORMAT}}|Unknown|{elapsed}|{tres}|{account}\n")
                else:
                    elapsed = rng.randint(0, 6 * 3600)
                    end = start + timedelta(seconds=elapsed)
                    state = "COMPLETED" if last else "REQUEUED"
                    out.write(f"{job_id}|{state}|{start:{TIME_FORMAT}}|{end:{TIME_FORMAT}}|{elapsed}|{tres}|{account}\n")
                    start = end + timedelta(seconds=12)
                written += 1


def _time(text: str) -> datetime | None:
    return None if text in ("Unknown", "None", "") else datetime.fromisoformat(text)


def _gpus(alloc_tres: str) -> dict[str, int]:
    gpus: dict[str, int] = {}
    for item in alloc_tres.split(","):
        name, _, value = item.partition("=")
        if name.startswith("gres/gpu:"):
            gpus[name[len("gres/gpu:"):]] = int(value)
    return gpus


def parse(path: str) -> list[AttemptRecord]:
    """Tiny parser for the bench only: attempt = how many earlier lines had the same JobID."""
    seen: dict[str, int] = {}
    records = []
    with open(path) as lines:
        for line in lines:
            job_id, state, start, end, elapsed, tres, account = line.rstrip("\n").split("|")
            if "." in job_id:  # job steps (not printed with -X)
                continue
            attempt = seen.get(job_id, 0)
            seen[job_id] = attempt + 1
            records.append(AttemptRecord(int(job_id), attempt, state, _time(start), _time(end),
                                         int(elapsed) if elapsed else None, _gpus(tres), account))
    return records


def _rate(label: str, n: int, seconds: float) -> None:
    print(f"{label:<8} {seconds:8.3f} s  {n / seconds:12,.0f} records/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sacct.txt")
        generate(path, args.records, args.seed)
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        records = parse(path)
        t1 = time.perf_counter()

    store = InMemoryLedgerStore()
    charges = plan_gpu_charges(records, store.billed_minutes, RATES, NOW)
    t2 = time.perf_counter()
    biller = Biller(store, RATES)
    result = biller.tick(records, NOW)
    t3 = time.perf_counter()
    again = biller.tick(records, NOW)
    t4 = time.perf_counter()

    n = len(records)
    print(f"records: {n:,} ({size / 1e6:.1f} MB of sacct text); charges planned: {len(charges):,}; "
          f"appended: {len(result.appended):,}; second tick appended: {len(again.appended)}")
    _rate("parse", n, t1 - t0)
    _rate("plan", n, t2 - t1)
    _rate("tick", n, t3 - t2)
    _rate("retick", n, t4 - t3)
    _rate("parse+plan", n, (t1 - t0) + (t2 - t1))
    total = sum((c.amount for c in charges), start=type(charges[0].amount)(0)) if charges else 0
    print(f"total charged: ${total:,.2f} over {len({c.team for c in charges})} teams")


if __name__ == "__main__":
    main()
