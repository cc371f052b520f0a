"""The reconciler's ticks for Prometheus (docs/MONITORING.md): each tick's duration in a
histogram and its Slurm command errors counted by command, kept in the database
(``reconciler_state``), because the tick may run in another process than the one serving
``/metrics`` (``slipway reconcile`` beside ``slipway serve``). Counters only go up (Prometheus'
``rate()`` and ``increase()`` read them); they survive restarts.

``observe_tick(svc, now, report)`` is called once per tick, by ``job_usage.sample`` (the tick's
usage step), after the tick's own work: ``report.duration_s`` and ``report.errors`` are known."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from ..db import ReconcilerState

STATE_KEY = "prometheus:ticks"
# seconds; a tick is usually well under a second, a slow Slurm makes it seconds
TICK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# How a tick's error line names the Slurm command that failed (portal/jobs/reconciler/*: the
# words each step writes), first match wins. Errors of other kinds (storage, git, data gates)
# are no Slurm command errors: they count in the tick's errors only.
SLURM_ERRORS: tuple[tuple[str, str], ...] = (
    ("poll failed:", "squeue"),
    ("nodes:", "sinfo"),
    ("accounting failed", "sacct"),
    ("accounting of sweep tasks failed", "sacct"),
    ("looking up jobs whose submission had no answer", "sacct"),
    ("Slurm account sync failed", "sacctmgr"),
    ("job usage: sstat failed", "sstat"),
    ("hold of job", "scontrol"),
    ("release of job", "scontrol"),
    ("cut-off of job", "scancel"),
    ("hard cancel of job", "scancel"),
    ("cancel of adopted job", "scancel"),
)
COMMANDS = tuple(sorted({cmd for _, cmd in SLURM_ERRORS}))


def slurm_command_of(error: str) -> str | None:
    """The Slurm command a tick's error line is about, or None (not a Slurm command error)."""
    for prefix, command in SLURM_ERRORS:
        if error.startswith(prefix):
            return command
    return None


@dataclass
class TickStats:
    count: int = 0
    total_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(TICK_BUCKETS))  # not cumulative
    errors: int = 0                                        # every error line of every tick
    slurm_errors: dict[str, int] = field(default_factory=dict)   # command -> errors
    last_at: float | None = None                           # epoch seconds of the latest tick
    last_duration_s: float | None = None

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' buckets: (upper bound, ticks at most that long), ending with +Inf."""
        out, running = [], 0
        for bound, n in zip(TICK_BUCKETS, self.buckets):
            running += n
            out.append((_le(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out

    def to_json(self) -> str:
        return json.dumps({"count": self.count, "total_s": self.total_s, "buckets": self.buckets,
                           "errors": self.errors, "slurm_errors": self.slurm_errors,
                           "last_at": self.last_at, "last_duration_s": self.last_duration_s},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> TickStats:
        try:
            data = json.loads(text or "{}")
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        buckets = data.get("buckets")
        if not (isinstance(buckets, list) and len(buckets) == len(TICK_BUCKETS)):
            buckets = [0] * len(TICK_BUCKETS)  # bounds changed: start the histogram anew
            data = {}
        return cls(count=int(data.get("count", 0)), total_s=float(data.get("total_s", 0.0)),
                   buckets=[int(b) for b in buckets], errors=int(data.get("errors", 0)),
                   slurm_errors={str(k): int(v) for k, v in (data.get("slurm_errors") or {}).items()},
                   last_at=data.get("last_at"), last_duration_s=data.get("last_duration_s"))


def _le(bound: float) -> str:
    return repr(float(bound))


def read(s: Session) -> TickStats:
    row = s.get(ReconcilerState, STATE_KEY)
    return TickStats.from_json(row.value if row is not None else None)


def observe_tick(svc, now: datetime, report) -> None:
    """Count one tick: its duration (``report.duration_s``) and its errors (``report.errors``,
    Slurm command errors by command). One small write."""
    duration = max(float(report.duration_s or 0.0), 0.0)
    with svc.db.transaction() as s:
        row = s.get(ReconcilerState, STATE_KEY)
        stats = TickStats.from_json(row.value if row is not None else None)
        stats.count += 1
        stats.total_s += duration
        for i, bound in enumerate(TICK_BUCKETS):
            if duration <= bound:
                stats.buckets[i] += 1
                break
        stats.errors += len(report.errors)
        for error in report.errors:
            command = slurm_command_of(str(error))
            if command is not None:
                stats.slurm_errors[command] = stats.slurm_errors.get(command, 0) + 1
        stats.last_at = now.timestamp()
        stats.last_duration_s = duration
        if row is None:
            s.add(ReconcilerState(key=STATE_KEY, value=stats.to_json(), updated_at=now))
        else:
            row.value = stats.to_json()
            row.updated_at = now
