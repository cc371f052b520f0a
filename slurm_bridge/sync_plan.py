"""Plan the sacctmgr changes that turn the current accounting state into the desired one.

``plan(desired, current)`` is pure: it returns the changes (adds AND removes) that make
``current`` equal ``desired``; see ``slurm_bridge.sync`` for the scope rules. Association limits
(GrpTRES, GrpJobs) converge both ways: a wanted limit is set, one set but not wanted is
cleared with ``-1``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .sync_specs import (NO_LIMITS, PROTECTED_USERS, AccountSpec, CurrentState, DesiredState,
                         Limits, QosSpec)


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


def limit_args(want: Limits, have: Limits = NO_LIMITS) -> tuple[str, ...]:
    """sacctmgr settings that turn the limits ``have`` into ``want`` (empty when equal):
    ``GrpTRES=`` with every wanted value and ``-1`` for a TRES set but not wanted, and
    ``GrpJobs=N`` (``-1`` to clear)."""
    args = []
    if dict(want.grp_tres) != dict(have.grp_tres):
        merged = {**{k: -1 for k in have.grp_tres if k not in want.grp_tres}, **want.grp_tres}
        args.append("GrpTRES=" + ",".join(f"{k}={v}" for k, v in sorted(merged.items())))
    if want.grp_jobs != have.grp_jobs:
        args.append(f"GrpJobs={-1 if want.grp_jobs is None else want.grp_jobs}")
    return tuple(args)


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
            args += limit_args(a.limits)
            limits = f", {a.limits}" if a.limits else ""
            changes.append(Change(tuple(args), f"add account {a.name} (fairshare {a.fairshare}{limits})"))
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
        if a.limits != have.limits:
            changes.append(Change(("modify", "account", "where", f"name={a.name}", "set",
                                   *limit_args(a.limits, have.limits)),
                                  f"set limits of account {a.name} ({a.limits})"))

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
            limits = u.limits_in(acct)
            if have is None:
                args = ["add", "user", u.name, f"Account={acct}", *qos_args, *limit_args(limits)]
                if is_new and acct == u.default_account:
                    args.append(f"DefaultAccount={acct}")
                more = f"; {limits}" if limits else ""
                changes.append(Change(tuple(args),
                                      f"add user {u.name} to {acct} ({', '.join(qos)}{more})"))
                continue
            if have.qos != tuple(sorted(qos)) or have.default_qos != qos[0]:
                changes.append(Change(("modify", "user", "where", f"name={u.name}", f"account={acct}",
                                       "set", *qos_args),
                                      f"set QOS of {u.name} in {acct} to {', '.join(qos)}"))
            if have.limits != limits:
                changes.append(Change(("modify", "user", "where", f"name={u.name}", f"account={acct}",
                                       "set", *limit_args(limits, have.limits)),
                                      f"set limits of {u.name} in {acct} ({limits})"))
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
