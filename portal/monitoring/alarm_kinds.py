"""What is wrong now: each alarm kind's check, from what the tick already knows (sinfo's nodes,
the tick's report) or from the database (failed jobs, balances, storage). A check answers a
``Findings``: the kinds it could judge this time and the conditions that hold; an open alarm
of a judged kind whose condition no longer holds is resolved (``alarm_store.apply``), one of a
kind not judged (sinfo failed: nodes are unknown) stays as it is."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Iterable, Mapping

from sqlalchemy import func, select

from .. import integrations as ig
from ..data.quota import human, used_bytes
from ..db import Job, Project, Team, TeamBalance, from_micros, to_micros

NODE_DOWN = "node-down"
NODE_DRAINED = "node-drained"
NODE_NOT_RESPONDING = "node-not-responding"
NODE_GPUS = "node-gpus"
SLURMCTLD = "slurmctld"
SLURMDBD = "slurmdbd"
RECONCILER_LAG = "reconciler-lag"
FAILED_JOBS = "failed-jobs"
BALANCE = "balance"
STORAGE = "storage"

LABELS = {
    NODE_DOWN: "node down",
    NODE_DRAINED: "node drained",
    NODE_NOT_RESPONDING: "node not responding",
    NODE_GPUS: "node has fewer GPUs",
    SLURMCTLD: "slurmctld unreachable",
    SLURMDBD: "slurmdbd unreachable",
    RECONCILER_LAG: "reconciler behind",
    FAILED_JOBS: "burst of failed jobs",
    BALANCE: "team balance low",
    STORAGE: "storage near quota",
}
KINDS = tuple(LABELS)
NODE_KINDS = frozenset({NODE_DOWN, NODE_DRAINED, NODE_NOT_RESPONDING, NODE_GPUS})
TEAM_KINDS = frozenset({BALANCE, STORAGE})   # mailed to the team's owners and administrators too

# Slurm drains a node whose slurmd registers fewer GPUs than slurm.conf says, with a reason like
# "gres/gpu count reported lower than configured (2 < 4)" (or "gres/gpu:a4000 count too low").
GPU_COUNT_REASON = re.compile(r"gres/(gpu|shard)\S*\s+count\s+(reported\s+lower|too\s+low)", re.I)
POLL_FAILED = "poll failed: "
ACCOUNTING_FAILED = ("accounting failed: ", "accounting of sweep tasks failed: ")
FAILED = "failed"          # the jobs table's state (jobs.states.FAILED)
# Seconds a condition must last before its alarm opens. Slurm marks a node NOT_RESPONDING for a
# moment after every `scontrol update state=resume` and while a starting slurmd registers
# (then pings it): those blips are not alarms; a dead slurmd stays not responding.
GRACE_S = {NODE_NOT_RESPONDING: 10.0}
DETAIL_MAX = 2000


def clip(text: str, limit: int = DETAIL_MAX) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Condition:
    kind: str
    subject: str
    detail: str
    team_id: int | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"


@dataclass
class Findings:
    judged: set[str] = field(default_factory=set)             # kinds this check could judge
    conditions: dict[str, Condition] = field(default_factory=dict)   # key -> what holds
    # key -> how it is now, for the resolution of an alarm that cleared ("node a4k-2 is idle")
    now_ok: dict[str, str] = field(default_factory=dict)
    # keys of a judged kind that cannot be judged this time (an open alarm of one stays open)
    unknown: set[str] = field(default_factory=set)

    def add(self, cond: Condition) -> None:
        self.conditions.setdefault(cond.key, cond)

    def merge(self, other: "Findings") -> "Findings":
        self.judged |= other.judged
        for c in other.conditions.values():
            self.add(c)
        self.now_ok.update(other.now_ok)
        self.unknown |= other.unknown
        return self


def key_of(kind: str, subject: str) -> str:
    return f"{kind}:{subject}"


# --------------------------------------------------------------------------------- nodes

def _words(node) -> set[str]:
    words = {w for w in re.split(r"[+\s]+", (node.state or "").upper()) if w}
    return words | {f.upper() for f in node.flags}


NOT_REPORTING = frozenset({"DOWN", "NOT_RESPONDING", "NO_RESPOND", "UNKNOWN", "FUTURE",
                           "POWERED_DOWN", "POWERING_UP", "POWER_DOWN", "POWERING_DOWN"})


def _reporting(words: set[str]) -> bool:
    return not words & NOT_REPORTING


def state_text(node) -> str:
    """``idle``, ``mixed+drain``, ``down+not_responding``: the node's state as sinfo words it."""
    return "+".join([(node.state or "unknown").lower(), *(f.lower() for f in node.flags)])


def node_findings(nodes: Iterable, peaks: Mapping[tuple[str, str], int]) -> Findings:
    """Down, drained or draining, not responding, fewer GPUs (Slurm's drain reason, or fewer
    than the most it was seen with: ``peaks``, (node, type) -> count)."""
    out = Findings(judged=set(NODE_KINDS))
    for n in nodes:
        words, reason = _words(n), " ".join((n.reason or "").split())
        because = f": {reason}" if reason else ""
        gpu_reason = bool(GPU_COUNT_REASON.search(reason))
        if "DOWN" in words:
            out.add(Condition(NODE_DOWN, n.name, clip(f"node {n.name} is down ({state_text(n)})"
                                                      f"{because}")))
        drain = words & {"DRAIN", "DRAINED", "DRAINING"}
        if drain and not gpu_reason:   # a drain for missing GPUs is the GPU alarm, not two
            busy = words & {"ALLOCATED", "MIXED", "COMPLETING", "DRAINING"}
            how = "draining (its running jobs finish, no new ones start)" if busy else "drained"
            out.add(Condition(NODE_DRAINED, n.name, clip(f"node {n.name} is {how}{because}")))
        if "NOT_RESPONDING" in words:
            out.add(Condition(NODE_NOT_RESPONDING, n.name, clip(
                f"node {n.name} does not answer slurmctld ({state_text(n)}){because}")))
        # a node that does not answer has not told slurmctld its GPUs: no count to compare
        fewer = [f"{t}: {c.total} of {peaks[(n.name, t)]}" for t, c in sorted(n.gpus.items())
                 if c.total < peaks.get((n.name, t), 0)] if _reporting(words) else []
        if not _reporting(words) and not gpu_reason:
            out.unknown.add(key_of(NODE_GPUS, n.name))
        if gpu_reason or fewer:
            what = (f"reports fewer GPUs than it had ({', '.join(fewer)})" if fewer
                    else "reports fewer GPUs than configured")
            out.add(Condition(NODE_GPUS, n.name, clip(f"node {n.name} {what}{because}")))
        for kind in NODE_KINDS:
            out.now_ok[key_of(kind, n.name)] = f"node {n.name} is {state_text(n)}"
    return out


def new_peaks(nodes: Iterable, peaks: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """(node, type) -> count, where sinfo shows more than the most recorded so far."""
    return {(n.name, t): c.total for n in nodes if _reporting(_words(n))
            for t, c in n.gpus.items() if c.total > peaks.get((n.name, t), 0)}


# ------------------------------------------------------------------------ Slurm, reconciler

def slurm_findings(report, cluster: str, lag_s: float) -> Findings:
    """slurmctld (this tick's poll failed), slurmdbd (sacct failed; judged only when the queue
    answered), the reconciler (this tick itself took longer than ``lag_s``)."""
    out = Findings(judged={SLURMCTLD, RECONCILER_LAG})
    errors = list(report.errors)
    if not report.polled:
        why = next((e[len(POLL_FAILED):] for e in errors if e.startswith(POLL_FAILED)),
                   "squeue did not answer")
        out.add(Condition(SLURMCTLD, cluster, clip(f"Slurm's controller does not answer: {why}")))
    else:
        out.judged.add(SLURMDBD)
        out.now_ok[key_of(SLURMCTLD, cluster)] = "slurmctld answered squeue"
        failed = [e.split(": ", 1)[1] for e in errors if e.startswith(ACCOUNTING_FAILED)]
        if failed:
            out.add(Condition(SLURMDBD, cluster, clip(
                f"Slurm's accounting (sacct, slurmdbd) does not answer: {failed[0]}")))
        out.now_ok[key_of(SLURMDBD, cluster)] = "Slurm's accounting answered"
    took = float(report.duration_s or 0.0)
    if took > lag_s:
        out.add(Condition(RECONCILER_LAG, cluster, clip(
            f"a reconciler tick took {took:.0f} s (the limit is {lag_s:g} s)")))
    out.now_ok[key_of(RECONCILER_LAG, cluster)] = f"the reconciler keeps up (last tick {took:.1f} s)"
    return out


def stalled_findings(last_end: datetime | None, now: datetime, cluster: str,
                     lag_s: float) -> Findings:
    """From outside the reconciler (a page, the CLI): no tick finished for ``lag_s``. Only
    opens: the next tick that finishes in time resolves it."""
    out = Findings()
    if last_end is None:
        return out
    age = (now - last_end).total_seconds()
    if age > lag_s:
        out.add(Condition(RECONCILER_LAG, cluster, clip(
            f"no reconciler tick has finished for {age:.0f} s (the limit is {lag_s:g} s); the "
            f"last one ended {last_end:%Y-%m-%d %H:%M:%S} UTC: is `slipway serve` (or "
            "`slipway reconcile`) running?")))
    return out


# ------------------------------------------------------------------------ the database

def failed_jobs_findings(s, now: datetime, cluster: str, threshold: int,
                         window_s: float) -> Findings:
    out = Findings(judged={FAILED_JOBS})
    if threshold <= 0:
        return out
    since = now - timedelta(seconds=window_s)
    rows = s.execute(select(Team.name, func.count(Job.id))
                     .join(Project, Job.project_id == Project.id).join(Team, Project.team_id == Team.id)
                     .where(Job.state == FAILED, Job.ended_at >= since)
                     .group_by(Team.name).order_by(func.count(Job.id).desc(), Team.name)).all()
    total = sum(n for _t, n in rows)
    minutes = f"{window_s / 60:g} minutes"
    if total >= threshold:
        teams = ", ".join(f"{t}: {n}" for t, n in rows[:10])
        out.add(Condition(FAILED_JOBS, cluster, clip(
            f"{total} jobs failed in the last {minutes} (the limit is {threshold}); by team: {teams}")))
    out.now_ok[key_of(FAILED_JOBS, cluster)] = f"{total} jobs failed in the last {minutes}"
    return out


def balance_findings(s, threshold: Decimal) -> Findings:
    """Teams whose balance is under ``threshold`` — those that ever had money (a ledger entry:
    a team never funded has no balance row and no alarm)."""
    out = Findings(judged={BALANCE})
    limit = to_micros(threshold)
    for team_id, name, micros in s.execute(
            select(Team.id, Team.name, TeamBalance.balance_micros)
            .join(TeamBalance, TeamBalance.team_id == Team.id)):
        money = ig.format_usd(from_micros(micros))
        if micros < limit:
            out.add(Condition(BALANCE, name, f"team {name}'s balance is {money}, under "
                              f"{ig.format_usd(threshold)}: jobs stop at $0.00", team_id))
        out.now_ok[key_of(BALANCE, name)] = f"team {name}'s balance is {money}"
    return out


def storage_findings(s, fraction: float) -> Findings:
    """Teams with a storage quota using ``fraction`` of it or more (data versions and kept job
    outputs: what ``data.quota`` counts)."""
    out = Findings(judged={STORAGE})
    for team_id, name, quota in s.execute(select(Team.id, Team.name, Team.storage_quota_bytes)
                                          .where(Team.storage_quota_bytes.is_not(None))):
        used = used_bytes(s, team_id)
        share = f"{used / quota:.0%}" if quota else "all"
        if used > 0 and used >= fraction * quota:
            out.add(Condition(STORAGE, name, f"team {name} uses {human(used)} of its "
                              f"{human(quota)} storage quota ({share}; the alarm is at "
                              f"{fraction:.0%})", team_id))
        out.now_ok[key_of(STORAGE, name)] = f"team {name} uses {human(used)} of {human(quota)}"
    return out
