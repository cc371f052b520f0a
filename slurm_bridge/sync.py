"""Converge Slurm's accounting database (sacctmgr) to a desired state.

``plan(desired, current)`` is pure: it returns the sacctmgr changes (adds AND removes) that
make ``current`` equal ``desired``. ``read_current`` and ``apply`` talk to sacctmgr;
``sync`` does all three. Running it again right after changes nothing.

Scope: Slipway only touches accounts it manages — those in the desired state, those whose
name starts with ``account_prefix``, or those in ``managed_accounts`` — and never ``root``;
a managed account with a sub-account that stays is not deleted (Slurm would delete the
sub-account with it).
A user is removed only when every association it has is in a managed account; QOS
definitions are added/updated, and removed only when their name starts with ``qos_prefix``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol, Sequence

from .errors import InvalidRequest, SlurmRejected, slurm_text
from .runner import CommandResult

PROTECTED_ACCOUNTS = frozenset({"root"})
PROTECTED_USERS = frozenset({"root"})
_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,63}$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_TRES = re.compile(r"^[a-z]+(?:/[a-z0-9_:.-]+)?$")
_DESCR = re.compile(r"^[A-Za-z0-9 _.,:/@+-]{0,200}$")


def _check(what: str, value: str, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidRequest(f"{what} {value!r} is not a valid Slurm name")


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

    def __post_init__(self) -> None:
        _check("account", self.name, _NAME)
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
    """``accounts``: account -> QOS list of that association; the first QOS is its default."""

    name: str
    default_account: str
    accounts: Mapping[str, Sequence[str]]

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


@dataclass(frozen=True)
class CurrentAssoc:
    user: str
    account: str
    qos: tuple[str, ...]
    default_qos: str


@dataclass(frozen=True)
class CurrentState:
    accounts: Mapping[str, CurrentAccount] = field(default_factory=dict)
    assocs: Mapping[tuple[str, str], CurrentAssoc] = field(default_factory=dict)
    default_accounts: Mapping[str, str] = field(default_factory=dict)   # user -> default account
    qos: Mapping[str, QosSpec] = field(default_factory=dict)


ASSOC_FORMAT = "format=Account,User,Partition,ParentName,Share,GrpTRESMins,QOS,DefaultQOS"
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


def parse_current(assoc_text: str, user_text: str, qos_text: str) -> CurrentState:
    """Build CurrentState from ``sacctmgr -P -n show assoc|user|qos`` outputs (formats above)."""
    accounts: dict[str, CurrentAccount] = {}
    assocs: dict[tuple[str, str], CurrentAssoc] = {}
    for acct, user, partition, parent, share, gtm, qos, dqos in _rows(assoc_text, 8):
        if partition:  # per-partition associations are not Slipway's
            continue
        if not user:
            accounts[acct] = CurrentAccount(acct, parent, share, _tres_mins(gtm))
        else:
            qos_list = tuple(sorted(q for q in qos.split(",") if q))
            assocs[(user, acct)] = CurrentAssoc(user, acct, qos_list, dqos)
    users = {u: d for u, d in _rows(user_text, 2) if u}
    qos_defs = {}
    for name, prio, preempt, mode in _rows(qos_text, 4):
        if not name:
            continue
        qos_defs[name] = QosSpec(name, int(prio or 0),
                                 tuple(p for p in preempt.split(",") if p), (mode or "cluster"))
    return CurrentState(accounts, assocs, users, qos_defs)


# --------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Change:
    """One ``sacctmgr -i ARGS...`` call."""

    args: tuple[str, ...]
    summary: str

    def __str__(self) -> str:
        return self.summary


def _qos_settings(q: QosSpec) -> tuple[str, ...]:
    return (f"Priority={q.priority}", f"Preempt={','.join(q.preempt) if q.preempt else ''}",
            f"PreemptMode={q.preempt_mode}")


def _tres_arg(a: AccountSpec, have: Iterable[tuple[str, int]] = ()) -> str:
    """GrpTRESMins value: the wanted limits, and -1 (clear) for limits set but not wanted."""
    wanted = dict(a.grp_tres_mins)
    clear = {k: -1 for k, _ in have if k not in wanted}
    merged = {**clear, **wanted} or {"billing": -1}
    return ",".join(f"{k}={v}" for k, v in sorted(merged.items()))


def plan(desired: DesiredState, current: CurrentState) -> list[Change]:
    """The ordered changes that turn ``current`` into ``desired``."""
    changes: list[Change] = []

    # 1. QOS definitions (before associations reference them)
    for q in desired.qos:
        have = current.qos.get(q.name)
        if have is None:
            changes.append(Change(("add", "qos", q.name, *_qos_settings(q)), f"add QOS {q.name}"))
        elif have != q:
            changes.append(Change(("modify", "qos", "where", f"name={q.name}", "set", *_qos_settings(q)),
                                  f"update QOS {q.name}"))

    # 2. accounts: add, then update shares/limits/parent
    for a in desired.accounts:
        have = current.accounts.get(a.name)
        if have is None:
            args = ["add", "account", a.name, f"Parent={a.parent}", f"Fairshare={a.fairshare}",
                    f"Description={a.description}", "Organization=slipway"]
            if a.grp_tres_mins:
                args.append("GrpTRESMins=" + _tres_arg(a))
            changes.append(Change(tuple(args), f"add account {a.name} (fairshare {a.fairshare})"))
            continue
        if have.parent != a.parent:
            changes.append(Change(("modify", "account", "where", f"name={a.name}", "set",
                                   f"Parent={a.parent}"), f"move account {a.name} under {a.parent}"))
        wanted_tres = a.grp_tres_mins
        if have.fairshare != str(a.fairshare) or have.grp_tres_mins != wanted_tres:
            changes.append(Change(("modify", "account", "where", f"name={a.name}", "set",
                                   f"Fairshare={a.fairshare}",
                                   "GrpTRESMins=" + _tres_arg(a, have.grp_tres_mins)),
                                  f"update account {a.name} (fairshare {a.fairshare}, "
                                  f"GrpTRESMins {_tres_arg(a) if a.grp_tres_mins else 'none'})"))

    # 3. users and their associations
    desired_users = {u.name: u for u in desired.users}
    for u in desired.users:
        accts = dict(u.accounts)
        is_new = not any(user == u.name for user, _ in current.assocs) and u.name not in current.default_accounts
        order = [u.default_account] + sorted(a for a in accts if a != u.default_account)
        for acct in order:
            qos = accts[acct]
            have = current.assocs.get((u.name, acct))
            qos_args = (f"QOS={','.join(sorted(qos))}", f"DefaultQOS={qos[0]}")
            if have is None:
                args = ["add", "user", u.name, f"Account={acct}", *qos_args]
                if is_new and acct == u.default_account:
                    args.append(f"DefaultAccount={acct}")
                changes.append(Change(tuple(args), f"add user {u.name} to {acct} ({', '.join(qos)})"))
            elif have.qos != tuple(sorted(qos)) or have.default_qos != qos[0]:
                changes.append(Change(("modify", "user", "where", f"name={u.name}", f"account={acct}",
                                       "set", *qos_args),
                                      f"set QOS of {u.name} in {acct} to {', '.join(qos)}"))
        have_default = current.default_accounts.get(u.name)
        # A default someone else set (a site account, another Slipway's) stays while it is valid:
        # jobs are always submitted with an explicit --account, so it only matters to the user.
        foreign_default = (have_default and (u.name, have_default) in current.assocs
                           and not desired.manages_account(have_default))
        if not is_new and have_default != u.default_account and not foreign_default:
            changes.append(Change(("modify", "user", "where", f"name={u.name}", "set",
                                   f"DefaultAccount={u.default_account}"),
                                  f"set default account of {u.name} to {u.default_account}"))

    # 4. removals: associations, whole users, then accounts
    by_user: dict[str, list[str]] = {}
    for (user, acct) in current.assocs:
        by_user.setdefault(user, []).append(acct)
    for user in sorted(by_user):
        if user in PROTECTED_USERS:
            continue
        managed = [a for a in by_user[user] if desired.manages_account(a)]
        if not managed:
            continue
        want = {a for a, _ in desired_users[user].accounts} if user in desired_users else set()
        drop = sorted(a for a in managed if a not in want)
        if not drop:
            continue
        if not want and len(managed) == len(by_user[user]):
            changes.append(Change(("delete", "user", "where", f"name={user}"), f"remove user {user}"))
            continue
        keep = sorted(set(by_user[user]) - set(drop))
        default = (desired_users[user].default_account if user in desired_users
                   else current.default_accounts.get(user))
        if default in drop or (default is None and keep):
            # deleting the default account's association leaves DefaultAccount empty
            changes.append(Change(("modify", "user", "where", f"name={user}", "set",
                                   f"DefaultAccount={keep[0]}"),
                                  f"set default account of {user} to {keep[0]}"))
        for acct in drop:
            changes.append(Change(("delete", "user", "where", f"name={user}", f"account={acct}"),
                                  f"remove {user} from {acct}"))
    desired_accounts = {a.name for a in desired.accounts}
    # Deleting an account deletes its sub-accounts with it (measured, 22.05): one with a
    # sub-account Slipway keeps (someone else's, or wanted) stays.
    drop_accounts = {a for a in current.accounts
                     if a not in desired_accounts and desired.manages_account(a)}
    while True:
        kept = {c.parent for c in current.accounts.values()
                if c.parent in drop_accounts and c.name not in drop_accounts}
        if not kept:
            break
        drop_accounts -= kept
    for acct in sorted(drop_accounts):
        changes.append(Change(("delete", "account", "where", f"name={acct}"),
                              f"remove account {acct}"))
    if desired.qos_prefix:
        wanted_qos = {q.name for q in desired.qos}
        for name in sorted(current.qos):
            if name.startswith(desired.qos_prefix) and name not in wanted_qos:
                changes.append(Change(("delete", "qos", "where", f"name={name}"), f"remove QOS {name}"))
    return changes


# -------------------------------------------------------------------------------- apply
class _Runs(Protocol):
    def run(self, argv: Sequence[str], *, input: str | None = None) -> CommandResult: ...


_HARMLESS = ("Nothing new added", "Nothing modified", "Nothing deleted")


def _sacctmgr(backend: _Runs, args: Iterable[str]) -> str:
    argv = ["sacctmgr", *args]
    res = backend.run(argv)
    if res.rc != 0 and not any(h in res.stdout + res.stderr for h in _HARMLESS):
        text = slurm_text(res.stderr) or slurm_text(res.stdout) or f"exit {res.rc}"
        raise SlurmRejected(f"sacctmgr refused {' '.join(args)}: {text}", slurm_message=text,
                            argv=tuple(argv))
    return res.stdout


def read_current(backend: _Runs, cluster: str | None = None) -> CurrentState:
    """Read accounts, associations, users and QOS with ``sacctmgr --parsable2 --noheader``."""
    where = ["where", f"cluster={cluster}"] if cluster else []
    base = ["--parsable2", "--noheader", "show"]
    return parse_current(_sacctmgr(backend, [*base, "assoc", *where, ASSOC_FORMAT]),
                         _sacctmgr(backend, [*base, "user", USER_FORMAT]),
                         _sacctmgr(backend, [*base, "qos", QOS_FORMAT]))


def apply(backend: _Runs, changes: Iterable[Change]) -> list[Change]:
    """Run each change with ``sacctmgr -i``; stop at the first refusal (SlurmRejected)."""
    done = []
    for change in changes:
        _sacctmgr(backend, ["-i", *change.args])
        done.append(change)
    return done


def sync(backend: _Runs, desired: DesiredState, cluster: str | None = None) -> list[Change]:
    """Read, plan and apply; return the changes made (empty when already converged)."""
    return apply(backend, plan(desired, read_current(backend, cluster)))
