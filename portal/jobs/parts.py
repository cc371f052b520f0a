"""A job's parts (docs/SHARING.md): the parent's state follows from its tasks, in one place.

``aggregate(states, cancel_requested)`` → (the parent's state, its reason). Pure: tested
without a database. ``pending_tasks("2-5%2")`` reads the task string of Slurm's record for an
array's still-pending tasks; ``expand_nodes("a4k-[1-2],a6k-1")`` a Slurm node list."""
from __future__ import annotations

import re

from . import states

PART_PENDING, PART_RUNNING = "pending", "running"
PART_TERMINAL = frozenset({states.SUCCEEDED, states.FAILED, states.CANCELLED})


def part_state(job_state: str) -> str:
    """A task's state from a job state word (the Slurm mapping's): finishing is still running."""
    if job_state in PART_TERMINAL:
        return job_state
    return PART_RUNNING if job_state in (states.RUNNING, states.FINISHING) else PART_PENDING


def aggregate(task_states: list[str], *, cancel_requested: bool, started: bool
              ) -> tuple[str, str]:
    """The sweep's state and reason from its tasks' states.

    All ended: ``succeeded`` when every task did; ``cancelled`` when a cancel was asked or a
    task was cancelled and none failed; else ``failed`` ("2 of 6 tasks failed (tasks 1, 4)").
    Not all ended: ``running`` once any task has started (the sweep runs until its last task
    ends, even between two tasks of a throttled array), else ``pending``."""
    n = len(task_states)
    counts: dict[str, int] = {}
    for st in task_states:
        counts[st] = counts.get(st, 0) + 1
    if n and all(st in PART_TERMINAL for st in task_states):
        failed = [i for i, st in enumerate(task_states) if st == states.FAILED]
        if counts.get(states.SUCCEEDED, 0) == n:
            return states.SUCCEEDED, f"all {n} tasks succeeded"
        if failed and not cancel_requested:
            shown = ", ".join(map(str, failed[:10])) + (", …" if len(failed) > 10 else "")
            return states.FAILED, (f"{len(failed)} of {n} tasks failed "
                                   f"(task{'s' if len(failed) > 1 else ''} {shown})")
        return states.CANCELLED, summary(counts, n, prefix="sweep cancelled")
    target = states.RUNNING if started or counts.get(PART_RUNNING) else states.PENDING
    return target, summary(counts, n)


def summary(counts: dict[str, int], n: int, prefix: str = "sweep") -> str:
    order = (PART_RUNNING, PART_PENDING, states.SUCCEEDED, states.FAILED, states.CANCELLED)
    words = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    return f"{prefix}: " + ", ".join(words) + f" (of {n} tasks)"


_TASK_RANGE = re.compile(r"^(\d+)(?:-(\d+))?(?::(\d+))?$")


def pending_tasks(task_string: str, limit: int = 100_000) -> set[int]:
    """``2-5%2`` → {2, 3, 4, 5}; ``0,3,7-9:2`` → {0, 3, 7, 9}. Unreadable parts are skipped."""
    text = (task_string or "").strip().strip("[]").split("%", 1)[0]
    out: set[int] = set()
    for part in text.split(","):
        m = _TASK_RANGE.match(part.strip())
        if not m:
            continue
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        step = int(m.group(3) or 1) or 1
        out.update(range(lo, min(hi, lo + limit * step) + 1, step))
    return out


_HOST_GROUP = re.compile(r"([^,\[]+)(?:\[([^\]]+)\])?(?:,|$)")


def expand_nodes(nodelist: str) -> list[str]:
    """A Slurm node list → node names, in order: ``a4k-[1-2],a6k-1`` → a4k-1, a4k-2, a6k-1."""
    out: list[str] = []
    for m in _HOST_GROUP.finditer((nodelist or "").strip()):
        prefix, ranges = m.group(1), m.group(2)
        if not prefix and not ranges:
            continue
        if ranges is None:
            out.append(prefix)
            continue
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            if lo.isdigit() and (not hi or hi.isdigit()):
                width = len(lo)
                for i in range(int(lo), int(hi or lo) + 1):
                    out.append(f"{prefix}{i:0{width}d}")
    return out
