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

The desired/current dataclasses live in ``sync_specs``, the planner in ``sync_plan``; their
public names are importable from here.
"""
from __future__ import annotations

from typing import Iterable, Protocol, Sequence

from .errors import SlurmRejected, slurm_text
from .runner import CommandResult
from .sync_plan import Change, limit_args, plan
from .sync_specs import (ASSOC_FORMAT, NO_LIMITS, PROTECTED_ACCOUNTS, PROTECTED_USERS,
                         QOS_FORMAT, USER_FORMAT, AccountSpec, CurrentAccount, CurrentAssoc,
                         CurrentState, DesiredState, Limits, QosSpec, UserSpec, parse_current)

__all__ = ["ASSOC_FORMAT", "NO_LIMITS", "PROTECTED_ACCOUNTS", "PROTECTED_USERS", "QOS_FORMAT",
           "USER_FORMAT", "AccountSpec", "Change", "CurrentAccount", "CurrentAssoc",
           "CurrentState", "DesiredState", "Limits", "QosSpec", "UserSpec", "apply",
           "limit_args", "parse_current", "plan", "read_current", "sync"]


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
