"""The chaos run's seeded plan (docs/FAULTS.md §7): which jobs are pushed when, by which team,
what each is designed to end as, and in which order and at which moments the faults come.

Job kinds (each writes ``out.txt`` with a token of its own, then):
* ``ok``      — sleeps, exits 0: ``succeeded``.
* ``ckpt``    — writes ``checkpoint.txt`` at once, sleeps long, exits 0; an attempt that finds
  the checkpoint (a requeue after a node loss) writes ``resumed.txt`` and finishes quickly:
  ``succeeded``, and ``resumed.txt`` is on the results ref whenever it ran more than once.
* ``fail``    — sleeps, exits 3 on purpose: ``failed`` with exit code 3.
* ``cancel``  — ticks into ``progress.txt`` until its user cancels it: ``cancelled``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

TEAMS = (("alice", "sw-alice"), ("bob", "sw-bob"), ("carol", "sw-carol"))
FAULT_KINDS = ("node", "slurmctld", "slipway", "slurmdbd")
TRUE_END = {"ok": ("succeeded", 0), "ckpt": ("succeeded", 0), "fail": ("failed", 3),
            "cancel": ("cancelled", None)}

ENTRYPOINTS = {
    "ok": """#!/bin/bash
echo "{token}" > out.txt
sleep {seconds}
echo done >> out.txt
""",
    "ckpt": """#!/bin/bash
if [ -f checkpoint.txt ]; then
  echo "resumed from $(cat checkpoint.txt)" > resumed.txt
  echo "resumed from the checkpoint"
  sleep 3
else
  echo "step 1 of {token}" > checkpoint.txt
  echo "checkpoint written"
  sleep {seconds}
fi
echo "{token}" > out.txt
echo done >> out.txt
""",
    "fail": """#!/bin/bash
echo "{token}" > out.txt
sleep {seconds}
echo "failing on purpose" >&2
exit 3
""",
    "cancel": """#!/bin/bash
echo "{token}" > out.txt
for i in $(seq 1 900); do echo "tick $i" >> progress.txt; sleep 1; done
""",
}


@dataclass
class PlannedJob:
    index: int
    team: str
    kind: str
    seconds: int          # how long its (first) attempt sleeps
    push_at: float        # seconds after the run began
    token: str
    job_id: int | None = None
    push_answers: list[str] = field(default_factory=list)   # queued | unknown | refused | error
    cancel_at: float | None = None   # cancel: seconds after it runs

    @property
    def branch(self) -> str:
        return f"chaos-{self.index:02d}-{self.kind}"

    def entrypoint(self) -> str:
        return ENTRYPOINTS[self.kind].format(token=self.token, seconds=self.seconds)

    def expected_files(self, attempts: int) -> dict[str, str | None]:
        """path -> its exact text (None: present, any text) on the job's results ref."""
        files: dict[str, str | None] = {"slipway-entrypoint.sh": None}
        if self.kind == "cancel":
            files.update({"out.txt": f"{self.token}\n", "progress.txt": None})
        elif self.kind == "fail":
            files["out.txt"] = f"{self.token}\n"
        else:
            files["out.txt"] = f"{self.token}\ndone\n"
        if self.kind == "ckpt":
            files["checkpoint.txt"] = f"step 1 of {self.token}\n"
            if attempts > 1:
                files["resumed.txt"] = f"resumed from step 1 of {self.token}\n"
        return files


@dataclass
class PlannedFault:
    kind: str
    at: float             # earliest start, seconds after the run began
    hold_s: float         # slurmctld / slipway: down (or stood in for) this long before restart
    outage_s: float       # slurmdbd: down this long


@dataclass
class Plan:
    seed: int
    jobs: list[PlannedJob]
    faults: list[PlannedFault]
    teams: tuple[tuple[str, str], ...]


def make_plan(n_jobs: int, seed: int, rounds: int = 1, push_window: float = 40.0,
              short: tuple[int, int] = (8, 25), ckpt_first: int = 45,
              outage: tuple[float, float] = (20.0, 20.0), first_fault: float = 8.0,
              fault_gap: tuple[float, float] = (2.0, 8.0)) -> Plan:
    """A plan of ``n_jobs`` jobs (at least 4: one of each kind) and ``rounds`` faults of each kind,
    all random but fixed by ``seed``."""
    if n_jobs < 4:
        raise ValueError(f"a chaos run needs at least 4 jobs (one of each kind), not {n_jobs}")
    if rounds < 1:
        raise ValueError(f"rounds must be 1 or more, not {rounds}")
    rng = random.Random(seed)
    n_teams = 2 if n_jobs < 12 else 3
    kinds = ["cancel", "fail", "ckpt", "ok"]
    for _ in range(n_jobs - 4):
        kinds.append(rng.choices(["ok", "ckpt", "fail"], weights=[5, 3, 2])[0])
    rng.shuffle(kinds)
    # the cancelled job and at least one checkpointing job are pushed early, so they run while the
    # faults come
    for early in ("cancel", "ckpt"):
        i = kinds.index(early)
        kinds.insert(0, kinds.pop(i))
    times = sorted(rng.uniform(0, push_window) for _ in range(n_jobs))
    times[0] = times[1] = 0.0
    jobs = []
    for i, (kind, at) in enumerate(zip(kinds, times)):
        seconds = ckpt_first if kind == "ckpt" else rng.randint(*short)
        jobs.append(PlannedJob(index=i, team=TEAMS[i % n_teams][0], kind=kind, seconds=seconds,
                               push_at=round(at, 1), token=f"chaos-{seed}-{i}-{rng.getrandbits(32):08x}",
                               cancel_at=round(rng.uniform(5, 15), 1) if kind == "cancel" else None))
    faults = []
    at = first_fault
    for _ in range(rounds):
        order = list(FAULT_KINDS)
        rng.shuffle(order)
        for kind in order:
            at += rng.uniform(*fault_gap)
            faults.append(PlannedFault(kind=kind, at=round(at, 1), hold_s=round(rng.uniform(2, 6), 1),
                                       outage_s=round(rng.uniform(*outage), 1)))
    return Plan(seed=seed, jobs=jobs, faults=faults, teams=TEAMS[:n_teams])
