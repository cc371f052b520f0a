"""Typed records parsed from Slurm's JSON output (OpenAPI v0.0.38, Slurm 22.05).

Parsers take the decoded JSON document and return frozen dataclasses; they never run
commands. Fixtures recorded from the live cluster are in tests/fixtures/slurm/.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Iterable, Mapping

# Job states after which an attempt will not run again by itself.
TERMINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "OUT_OF_MEMORY", "REQUEUED", "REVOKED", "SPECIAL_EXIT",
})
UNSETTLED_QOS = frozenset({"", "Unknown"})  # JSON: null -> ""; --parsable2: "Unknown"


def _time(value: Any) -> datetime | None:
    """Epoch seconds (0 = unset) -> aware UTC datetime."""
    if isinstance(value, dict):  # newer plugins: {"set": true, "number": N}
        value = value.get("number") if value.get("set", True) else None
    if not value:
        return None
    return datetime.fromtimestamp(int(value), tz=timezone.utc)


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, dict):
        value = value.get("number") if value.get("set", True) else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses: ``gpu:a4000:2(IDX:0,2),shard:8`` -> 2 items."""
    items, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip() and i.strip() != "(null)"]


def parse_gres(text: str | None) -> dict[str, int]:
    """``gpu:a4000:4(S:0),shard:8`` -> {"a4000": 4, "shard": 8} (untyped gpu -> "gpu")."""
    out: dict[str, int] = {}
    for item in _split_top(text or ""):
        item = re.sub(r"\(.*\)$", "", item)
        if item.startswith(("gres:", "gres/")):  # squeue tres_per_node: gres:gpu:a4000:2
            item = item[5:]
        parts = item.split(":")
        if parts[0] == "gpu":
            name = parts[1] if len(parts) == 3 else "gpu"
        elif parts[0] == "shard":
            name = "shard"
        else:
            continue
        count = parts[-1]
        if count.isdigit():
            out[name] = out.get(name, 0) + int(count)
    return out


def parse_tres_str(text: str | None) -> dict[str, int]:
    """``cpu=1,mem=1G,gres/gpu:a4000=2,gres/gpu=2,gres/shard=2`` -> {"a4000": 2, "shard": 2}."""
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        key, _, value = item.partition("=")
        if not value.isdigit():
            continue
        if key.startswith("gres/gpu:"):
            out[key[len("gres/gpu:"):]] = int(value)
        elif key == "gres/shard":
            out["shard"] = int(value)
    return out


def _tres_list(items: Iterable[Mapping[str, Any]] | None) -> dict[str, int]:
    """sacct JSON ``tres.allocated`` list -> {"a4000": 2, "shard": 2}."""
    out: dict[str, int] = {}
    for t in items or []:
        if t.get("type") != "gres":
            continue
        name = t.get("name") or ""
        if name.startswith("gpu:"):
            out[name[4:]] = _int(t.get("count"))
        elif name == "shard":
            out["shard"] = _int(t.get("count"))
    return out


def _frozen(d: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(d))


# --------------------------------------------------------------------------------- squeue
@dataclass(frozen=True)
class QueueRecord:
    """One job as the controller sees it now (``squeue --json``)."""

    job_id: int
    state: str                  # PENDING, RUNNING, COMPLETING, ...
    reason: str                 # e.g. Resources, Priority, JobHeldUser; "None" when running
    node: str                   # node list ("" while pending)
    start_time: datetime | None
    submit_time: datetime | None
    account: str
    user: str
    qos: str
    name: str
    comment: str = ""
    partition: str = ""
    restart_count: int = 0
    gpus: Mapping[str, int] = field(default_factory=dict)  # requested GPU type -> count

    @property
    def held(self) -> bool:
        return self.reason.startswith("JobHeld")


def parse_squeue(data: Mapping[str, Any]) -> list[QueueRecord]:
    out = []
    for j in data.get("jobs") or []:
        gpus = parse_tres_str(j.get("tres_req_str")) or parse_gres(j.get("tres_per_node"))
        out.append(QueueRecord(
            job_id=_int(j.get("job_id")),
            state=_text(j.get("job_state")),
            reason=_text(j.get("state_reason")),
            node=_text(j.get("nodes")),
            start_time=_time(j.get("start_time")) if _text(j.get("nodes")) else None,
            submit_time=_time(j.get("submit_time")),
            account=_text(j.get("account")),
            user=_text(j.get("user_name")),
            qos=_text(j.get("qos")),
            name=_text(j.get("name")),
            comment=_text(j.get("comment")),
            partition=_text(j.get("partition")),
            restart_count=_int(j.get("restart_cnt")),
            gpus=_frozen(gpus),
        ))
    return out


# ---------------------------------------------------------------------------------- sacct
@dataclass(frozen=True)
class SacctRecord:
    """One attempt of a job in accounting (``sacct --json -D``: requeued attempts repeat the id).

    ``attempt`` counts from 0 in submit order among the records of that job in one answer.
    ``settled`` is False while Slurm is still filling in fields of a finished attempt
    (QOS reads ``Unknown`` and AllocTRES is empty for the first seconds): wait for it.
    """

    job_id: int
    attempt: int
    name: str
    user: str
    account: str
    qos: str
    state: str                  # COMPLETED, FAILED, CANCELLED, PREEMPTED, REQUEUED, RUNNING, ...
    exit_code: int | None       # None while running or when killed by a signal
    signal: int | None          # the signal that ended the job, if any
    submit: datetime | None
    start: datetime | None
    end: datetime | None
    elapsed_s: int
    node: str
    gpus: Mapping[str, int]     # GPU type -> count from AllocTRES gres/gpu:TYPE (no "shard")
    shards: int = 0
    comment: str = ""

    @property
    def complete(self) -> bool:
        """The attempt has ended (it may still be unsettled)."""
        return self.state in TERMINAL_STATES

    alloc_tres_recorded: bool = True  # AllocTRES held anything at all (cpu=...)

    @property
    def settled(self) -> bool:
        """Ended and every field Slurm fills in late (QOS, AllocTRES) is present.

        An attempt that never ran (cancelled while pending: no node, nothing allocated, 0 s)
        keeps QOS ``Unknown`` and an empty AllocTRES for good; there is nothing more to wait for.
        """
        if not self.complete:
            return False
        if not self.node and not self.alloc_tres_recorded and not self.elapsed_s:
            return True
        if self.qos in UNSETTLED_QOS:
            return False
        return self.start is None or self.alloc_tres_recorded

    @property
    def restart_count(self) -> int:
        return self.attempt


def _state(j: Mapping[str, Any]) -> str:
    st = j.get("state")
    if isinstance(st, dict):
        st = st.get("current")
    if isinstance(st, list):
        st = st[0] if st else ""
    return _text(st)


def parse_sacct(data: Mapping[str, Any]) -> list[SacctRecord]:
    """Records of ``sacct --json -D``; ``attempt`` numbers each job's records in submit order.

    sacct has no restart count: a requeued attempt is a new record whose submission time
    is the requeue time. Numbering is right when every attempt of the job is in ``data``.
    """
    rows = []
    for j in data.get("jobs") or []:
        t = j.get("time") or {}
        tres = j.get("tres") or {}
        alloc = tres.get("allocated") or []
        g = _tres_list(alloc)
        shards = g.pop("shard", 0)
        ec = j.get("exit_code") or {}
        status = _text(ec.get("status"))
        sig = ec.get("signal") or {}
        signal_id = _int(sig.get("signal_id"), 0) if isinstance(sig, dict) else 0
        state = _state(j)
        exit_code = _int(ec.get("return_code"), 0) if state in TERMINAL_STATES else None
        if status == "SIGNALED":
            exit_code = None
        start = _time(t.get("start"))
        rows.append(dict(
            job_id=_int(j.get("job_id")), name=_text(j.get("name")), user=_text(j.get("user")),
            account=_text(j.get("account")), qos=_text(j.get("qos")), state=state,
            exit_code=exit_code, signal=signal_id or None, submit=_time(t.get("submission")),
            start=start, end=_time(t.get("end")), elapsed_s=_int(t.get("elapsed")),
            node=_text(j.get("nodes")) if _text(j.get("nodes")) != "None assigned" else "",
            gpus=_frozen(g), shards=shards,
            comment=_text((j.get("comment") or {}).get("job") if isinstance(j.get("comment"), dict)
                          else j.get("comment")),
            alloc_tres_recorded=bool(alloc),
        ))
    rows.sort(key=lambda r: (r["job_id"], r["submit"] or _EPOCH, r["start"] or _EPOCH))
    out, seen = [], {}
    for r in rows:
        attempt = seen.get(r["job_id"], 0)
        seen[r["job_id"]] = attempt + 1
        out.append(SacctRecord(attempt=attempt, **r))
    return out


_EPOCH = datetime.fromtimestamp(0, tz=timezone.utc)


# ---------------------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class GpuCount:
    total: int
    allocated: int

    @property
    def free(self) -> int:
        return max(self.total - self.allocated, 0)


@dataclass(frozen=True)
class NodeRecord:
    name: str
    state: str                       # idle, mixed, allocated, down, ...
    flags: tuple[str, ...]           # DRAIN, NOT_RESPONDING, ...
    reason: str
    partitions: tuple[str, ...]
    cpus: int
    alloc_cpus: int
    gpus: Mapping[str, GpuCount]     # GPU type (or "shard") -> total/allocated/free

    @property
    def available(self) -> bool:
        """Up and accepting jobs (not down, drained or failing)."""
        bad = {"DOWN", "DRAIN", "DRAINING", "DRAINED", "FAIL", "FAILING", "NOT_RESPONDING",
               "FUTURE", "UNKNOWN", "INVAL", "POWERED_DOWN", "MAINTENANCE", "RESERVED"}
        return self.state.upper() not in bad and not (bad & {f.upper() for f in self.flags})


def parse_nodes(data: Mapping[str, Any]) -> list[NodeRecord]:
    out = []
    for n in data.get("nodes") or []:
        # tres/tres_used count shards right; gres_used shows shards per device index
        total = parse_tres_str(n.get("tres")) or parse_gres(n.get("gres"))
        used = parse_tres_str(n.get("tres_used")) if n.get("tres") else parse_gres(n.get("gres_used"))
        state = n.get("state")
        flags = tuple(n.get("state_flags") or ())
        if isinstance(state, list):
            state, flags = (state[0] if state else ""), tuple(state[1:]) + flags
        out.append(NodeRecord(
            name=_text(n.get("name")), state=_text(state), flags=flags,
            reason=_text(n.get("reason")), partitions=tuple(n.get("partitions") or ()),
            cpus=_int(n.get("cpus")), alloc_cpus=_int(n.get("alloc_cpus")),
            gpus=MappingProxyType({k: GpuCount(v, used.get(k, 0)) for k, v in total.items()}),
        ))
    return out
