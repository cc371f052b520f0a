"""Records of the cluster administrator's views: fair share (``sshare``), account usage
(``scontrol show assoc_mgr``) and partitions (``scontrol show partition -o`` + ``sinfo --json``).

Parsers take Slurm's text and return frozen dataclasses; they never run commands (outputs
recorded from the live cluster: tests/fixtures/slurm/).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping

from .records import NodeRecord

# ``sshare -P -n -a -o <SSHARE_FIELDS>``: account rows have no user.
SSHARE_FIELDS = ("Account", "User", "RawShares", "NormShares", "RawUsage", "EffectvUsage",
                 "FairShare", "LevelFS")


@dataclass(frozen=True)
class ShareRecord:
    """One association's fair-share state. ``user`` is "" for an account's own row.

    ``raw_shares``: None where Slurm prints none (root) or ``parent``. ``fairshare``: the user's
    fair-share factor (0..1; Slurm prints none for account rows: None). ``level_fs``: the
    association's standing among its siblings (>1: used less than its share; None for inf).
    """

    account: str
    user: str
    raw_shares: int | None
    norm_shares: float
    raw_usage: int
    effective_usage: float
    fairshare: float | None
    level_fs: float | None = None


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if value != value or value in (float("inf"), float("-inf")) else value


def parse_sshare(text: str) -> list[ShareRecord]:
    """Rows of ``sshare -P -n -a -o <SSHARE_FIELDS>`` (indentation of the tree is dropped)."""
    out = []
    width = len(SSHARE_FIELDS)
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = (line.split("|") + [""] * width)[:width]
        account, user, raw, norm, usage, eff, fs, level = (c.strip() for c in cells)
        if not account:
            continue
        out.append(ShareRecord(
            account=account, user=user,
            raw_shares=int(raw) if raw.isdigit() else None,
            norm_shares=_float(norm) or 0.0,
            raw_usage=int(usage) if usage.isdigit() else int(_float(usage) or 0),
            effective_usage=_float(eff) or 0.0,
            fairshare=_float(fs), level_fs=_float(level)))
    return out


# --------------------------------------------------------------------------- assoc_mgr
_RECORD = re.compile(r"^ClusterName=\S* Account=(?P<account>\S*) UserName=(?P<user>\S*) "
                     r"Partition=(?P<partition>\S*)")
_BILLING_USED = re.compile(r"(?:^|,)billing=[^(,]*\((\d+)\)")


def parse_assoc_usage(text: str) -> dict[str, int]:
    """Account -> billing-minutes used, from ``scontrol show assoc_mgr flags=assoc``.

    Only account-level records (no user, no partition) count; the used value is what follows
    ``billing=LIMIT`` in parentheses on the ``GrpTRESMins=`` line (``billing=N(1234)``).
    """
    out: dict[str, int] = {}
    account: str | None = None
    for line in text.splitlines():
        m = _RECORD.match(line.strip())
        if m:
            account = (m.group("account") if not m.group("user") and not m.group("partition")
                       else None)
            continue
        line = line.strip()
        if account is not None and line.startswith("GrpTRESMins="):
            used = _BILLING_USED.search(line[len("GrpTRESMins="):])
            out[account] = int(used.group(1)) if used else 0
            account = None
    return out


# --------------------------------------------------------------------------- partitions
@dataclass(frozen=True)
class PartitionRecord:
    """A partition (a resource group). ``max_time_min``: None for no limit.
    ``allow_accounts`` / ``allow_qos``: None when every one is allowed. ``gpus``: GPU type (and
    ``shard``) -> the total on the partition's nodes."""

    name: str
    nodes: tuple[str, ...]
    default: bool
    max_time_min: int | None
    state: str
    allow_accounts: tuple[str, ...] | None
    allow_qos: tuple[str, ...] | None
    oversubscribe: str
    cpus: int
    gpus: Mapping[str, int]


_PAIR = re.compile(r"(\w+)=(\S*)")


def slurm_minutes(text: str) -> int | None:
    """Slurm's time limit text -> whole minutes (None: UNLIMITED/INFINITE/NONE).

    ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``; seconds round up.
    """
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "NONE", ""):
        return None
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not (days == "" or days.isdigit()) or not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise ValueError(f"cannot read Slurm time {text!r}")
    nums = [int(p) for p in parts]
    if days:
        h, m, s = (nums + [0, 0])[:3]
    elif len(nums) == 3:
        h, m, s = nums
    elif len(nums) == 2:
        h, m, s = 0, nums[0], nums[1]
    else:
        h, m, s = 0, nums[0], 0
    return int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)


def _allowed(text: str) -> tuple[str, ...] | None:
    return None if text in ("", "ALL") else tuple(sorted(x for x in text.split(",") if x))


def parse_partitions(text: str, nodes: Iterable[NodeRecord]) -> list[PartitionRecord]:
    """``scontrol show partition -o`` (one partition a line) with ``nodes`` (``sinfo --json``)
    to give each partition its node names and GPU totals."""
    node_list = list(nodes)
    out = []
    for line in text.splitlines():
        fields = dict(_PAIR.findall(line))
        name = fields.get("PartitionName")
        if not name:
            continue
        members = sorted(n.name for n in node_list if name in n.partitions)
        gpus: dict[str, int] = {}
        for n in node_list:
            if name in n.partitions:
                for gpu_type, count in n.gpus.items():
                    gpus[gpu_type] = gpus.get(gpu_type, 0) + count.total
        cpus = fields.get("TotalCPUs", "")
        out.append(PartitionRecord(
            name=name, nodes=tuple(members), default=fields.get("Default") == "YES",
            max_time_min=slurm_minutes(fields.get("MaxTime", "UNLIMITED")),
            state=fields.get("State", ""), allow_accounts=_allowed(fields.get("AllowAccounts", "ALL")),
            allow_qos=_allowed(fields.get("AllowQos", "ALL")),
            oversubscribe=fields.get("OverSubscribe", ""),
            cpus=int(cpus) if cpus.isdigit() else sum(n.cpus for n in node_list
                                                      if name in n.partitions),
            gpus=MappingProxyType(gpus)))
    return out
