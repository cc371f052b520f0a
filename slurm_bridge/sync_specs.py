"""What Slipway wants in Slurm's accounting database, and what is there now (sacctmgr text).

Desired: ``QosSpec``, ``AccountSpec``, ``UserSpec`` (each association's QOS and ``Limits``),
``DesiredState``. Current: ``CurrentState`` read back by ``parse_current`` from ``sacctmgr
--parsable2 --noheader show assoc|user|qos`` (the formats below). ``slurm_bridge.sync_plan``
turns the difference into sacctmgr changes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

from .errors import InvalidRequest

PROTECTED_ACCOUNTS = frozenset({"root"})
PROTECTED_USERS = frozenset({"root"})
_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,63}$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_TRES = re.compile(r"^[a-z]+(?:/[a-z0-9_:.-]+)?$")
# The TRES an association limit (GrpTRES) may name: cores, memory (MB), nodes, billing, GPUs
# (all, or of one type) and shards.
_LIMIT_TRES = re.compile(r"^(?:cpu|mem|node|billing|gres/gpu(?::[a-z0-9][a-z0-9_.-]{0,31})?|gres/shard)$")
_DESCR = re.compile(r"^[A-Za-z0-9 _.,:/@+-]{0,200}$")


def _check(what: str, value: str, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidRequest(f"{what} {value!r} is not a valid Slurm name")


def _whole(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 0


@dataclass(frozen=True)
class Limits:
    """An association's limits: ``grp_tres`` (GrpTRES: TRES -> most in use at once by all its
    running jobs, e.g. ``{"gres/gpu:a4000": 4, "cpu": 32}``; ``mem`` in MB) and ``grp_jobs``
    (GrpJobs: most running jobs at once; None = no limit). Empty = no limits."""

    grp_tres: Mapping[str, int] = field(default_factory=dict)
    grp_jobs: int | None = None

    def __post_init__(self) -> None:
        tres = dict(self.grp_tres or {})
        for k, v in tres.items():
            if not isinstance(k, str) or not _LIMIT_TRES.match(k):
                raise InvalidRequest(
                    f"GrpTRES {k!r} is not a limit Slurm knows: use cpu, mem, node, billing, "
                    "gres/gpu, gres/gpu:TYPE or gres/shard")
            if not _whole(v):
                raise InvalidRequest(f"GrpTRES {k}={v!r} must be a whole number >= 0")
        if self.grp_jobs is not None and not _whole(self.grp_jobs):
            raise InvalidRequest(f"GrpJobs {self.grp_jobs!r} must be a whole number >= 0")
        object.__setattr__(self, "grp_tres", MappingProxyType(dict(sorted(tres.items()))))

    def __hash__(self) -> int:
        return hash((tuple(self.grp_tres.items()), self.grp_jobs))

    def __bool__(self) -> bool:
        return bool(self.grp_tres) or self.grp_jobs is not None

    def __str__(self) -> str:
        parts = [f"GrpTRES {','.join(f'{k}={v}' for k, v in self.grp_tres.items())}"] if self.grp_tres else []
        if self.grp_jobs is not None:
            parts.append(f"GrpJobs {self.grp_jobs}")
        return ", ".join(parts) or "no limits"


NO_LIMITS = Limits()


# ------------------------------------------------------------------------------ desired
@dataclass(frozen=True)
class QosSpec:
    name: str
    priority: int = 0
    preempt: tuple[str, ...] = ()
    preempt_mode: str = "cluster"          # cluster, cancel, requeue, suspend

    def __post_init__(self) -> None:
        _check("QOS", self.name, _NAME)
        object.__setattr__(self, "preempt", tuple(sorted(self.preempt)))
        for q in self.preempt:
            _check("QOS", q, _NAME)
        object.__setattr__(self, "preempt_mode", self.preempt_mode.lower())
        if self.preempt_mode not in ("cluster", "cancel", "requeue", "suspend", "off"):
            raise InvalidRequest(f"unknown preempt mode {self.preempt_mode!r}")


@dataclass(frozen=True)
class AccountSpec:
    name: str
    fairshare: int = 1
    grp_tres_mins: Mapping[str, int] | None = None     # e.g. {"billing": 600000}
    parent: str = "root"
    description: str = "slipway"
    limits: Limits = NO_LIMITS                          # the account's GrpTRES / GrpJobs

    def __post_init__(self) -> None:
        _check("account", self.name, _NAME)
        if not isinstance(self.limits, Limits):
            raise InvalidRequest(f"limits of {self.name} must be a Limits, got {self.limits!r}")
        _check("parent account", self.parent, _NAME)
        if self.name in PROTECTED_ACCOUNTS:
            raise InvalidRequest(f"account {self.name!r} cannot be managed by Slipway")
        if not _DESCR.match(self.description):
            raise InvalidRequest(f"account description {self.description!r} is not allowed")
        if isinstance(self.fairshare, bool) or not isinstance(self.fairshare, int) or self.fairshare < 1:
            raise InvalidRequest(f"fairshare of {self.name} must be a whole number >= 1")
        tres = dict(self.grp_tres_mins or {})
        for k, v in tres.items():
            if not _TRES.match(k) or isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidRequest(f"GrpTRESMins {k}={v!r} of {self.name} is not valid")
        object.__setattr__(self, "grp_tres_mins", tuple(sorted(tres.items())))


@dataclass(frozen=True)
class UserSpec:
    """``accounts``: account -> QOS list of that association; the first QOS is its default.
    ``limits``: account -> the limits of this user's association in that account (held as
    sorted ``(account, Limits)`` pairs, empty limits left out; ``limits_in(account)`` reads)."""

    name: str
    default_account: str
    accounts: Mapping[str, Sequence[str]]
    limits: Mapping[str, Limits] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check("user", self.name, _USER)
        if self.name in PROTECTED_USERS:
            raise InvalidRequest(f"user {self.name!r} cannot be managed by Slipway")
        accts = {a: tuple(q) for a, q in dict(self.accounts).items()}
        for a, qs in accts.items():
            _check("account", a, _NAME)
            if not qs:
                raise InvalidRequest(f"user {self.name} in {a}: give at least one QOS")
            for q in qs:
                _check("QOS", q, _NAME)
        if self.default_account not in accts:
            raise InvalidRequest(
                f"user {self.name}: default account {self.default_account!r} is not one of their accounts")
        object.__setattr__(self, "accounts", tuple(sorted(accts.items())))
        limits = dict(self.limits or {})
        for a, lim in limits.items():
            if a not in accts:
                raise InvalidRequest(f"user {self.name}: limits for {a!r}, not one of their accounts")
            if not isinstance(lim, Limits):
                raise InvalidRequest(f"user {self.name} in {a}: limits must be a Limits, got {lim!r}")
        object.__setattr__(self, "limits", tuple(sorted((a, l) for a, l in limits.items() if l)))

    def limits_in(self, account: str) -> Limits:
        return dict(self.limits).get(account, NO_LIMITS)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DesiredState:
    accounts: tuple[AccountSpec, ...] = ()
    users: tuple[UserSpec, ...] = ()
    qos: tuple[QosSpec, ...] = ()
    account_prefix: str | None = None            # e.g. "team-": such accounts are Slipway's
    managed_accounts: frozenset[str] = frozenset()
    qos_prefix: str | None = None                # QOS Slipway may delete

    def __post_init__(self) -> None:
        for attr in ("accounts", "users", "qos"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        object.__setattr__(self, "managed_accounts", frozenset(self.managed_accounts))
        names = {a.name for a in self.accounts}
        for u in self.users:
            for a, _ in u.accounts:
                if a not in names and a not in self.managed_accounts and not self._prefixed(a):
                    raise InvalidRequest(f"user {u.name} is in account {a!r}, which is not managed")

    def _prefixed(self, account: str) -> bool:
        return bool(self.account_prefix) and account.startswith(self.account_prefix)  # type: ignore[arg-type]

    def manages_account(self, account: str) -> bool:
        if account in PROTECTED_ACCOUNTS:
            return False
        return (account in {a.name for a in self.accounts} or account in self.managed_accounts
                or self._prefixed(account))


# ------------------------------------------------------------------------------ current
@dataclass(frozen=True)
class CurrentAccount:
    name: str
    parent: str
    fairshare: str
    grp_tres_mins: tuple[tuple[str, int], ...]
    limits: Limits = NO_LIMITS


@dataclass(frozen=True)
class CurrentAssoc:
    user: str
    account: str
    qos: tuple[str, ...]
    default_qos: str
    limits: Limits = NO_LIMITS


@dataclass(frozen=True)
class CurrentState:
    accounts: Mapping[str, CurrentAccount] = field(default_factory=dict)
    assocs: Mapping[tuple[str, str], CurrentAssoc] = field(default_factory=dict)
    default_accounts: Mapping[str, str] = field(default_factory=dict)   # user -> default account
    qos: Mapping[str, QosSpec] = field(default_factory=dict)


# GrpTRES and GrpJobs come last: a record of the older 8-column format reads as "no limits".
ASSOC_FORMAT = ("format=Account,User,Partition,ParentName,Share,GrpTRESMins,QOS,DefaultQOS,"
                "GrpTRES,GrpJobs")
USER_FORMAT = "format=User,DefaultAccount"
QOS_FORMAT = "format=Name,Priority,Preempt,PreemptMode"


def _rows(text: str, width: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = line.split("|")
        rows.append((cells + [""] * width)[:width])
    return rows


def _tres_mins(text: str) -> tuple[tuple[str, int], ...]:
    out = {}
    for item in text.split(","):
        k, _, v = item.partition("=")
        if k and v.lstrip("-").isdigit():
            out[k] = int(v)
    return tuple(sorted(out.items()))


_MEM_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def _grp_tres(text: str) -> dict[str, int]:
    """``cpu=8,gres/gpu:a4000=2,mem=2000M`` -> {"cpu": 8, "gres/gpu:a4000": 2, "mem": 2000}
    (memory in MB, as sacctmgr takes it)."""
    out = {}
    for item in text.split(","):
        k, _, v = item.partition("=")
        if k == "mem" and v[-1:] in _MEM_UNITS and v[:-1].isdigit():
            out[k] = int(int(v[:-1]) * _MEM_UNITS[v[-1]])
        elif k and v.isdigit():
            out[k] = int(v)
    return out


def _limits(grp_tres: str, grp_jobs: str) -> Limits:
    tres = {k: v for k, v in _grp_tres(grp_tres).items() if _LIMIT_TRES.match(k)}
    return Limits(tres, int(grp_jobs) if grp_jobs.isdigit() else None)


def parse_current(assoc_text: str, user_text: str, qos_text: str) -> CurrentState:
    """Build CurrentState from ``sacctmgr -P -n show assoc|user|qos`` outputs (formats above)."""
    accounts: dict[str, CurrentAccount] = {}
    assocs: dict[tuple[str, str], CurrentAssoc] = {}
    for acct, user, partition, parent, share, gtm, qos, dqos, gt, gj in _rows(assoc_text, 10):
        if partition:  # per-partition associations are not Slipway's
            continue
        limits = _limits(gt, gj)
        if not user:
            accounts[acct] = CurrentAccount(acct, parent, share, _tres_mins(gtm), limits)
        else:
            qos_list = tuple(sorted(q for q in qos.split(",") if q))
            assocs[(user, acct)] = CurrentAssoc(user, acct, qos_list, dqos, limits)
    users = {u: d for u, d in _rows(user_text, 2) if u}
    qos_defs = {}
    for name, prio, preempt, mode in _rows(qos_text, 4):
        if not name:
            continue
        qos_defs[name] = QosSpec(name, int(prio or 0),
                                 tuple(p for p in preempt.split(",") if p), (mode or "cluster"))
    return CurrentState(accounts, assocs, users, qos_defs)
