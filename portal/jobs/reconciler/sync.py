"""The periodic syncs a tick also runs: LDAP → users and teams, teams → Slurm's accounts."""
from __future__ import annotations

from datetime import datetime

from ...identity import team_sync
from ...policy import resources, shares
from ...services import Services
from ...teams import slurm_accounts
from .report import TickReport


def ldap(svc: Services, now: datetime, report: TickReport) -> None:
    """LDAP users and groups → users and teams, every ``ldap_sync_interval`` (when configured)."""
    rep = team_sync.maybe_sync_ldap(svc, now)
    if rep is not None:
        report.errors += rep.errors


def slurm_accounts_due(svc: Services, last: datetime | None, now: datetime) -> bool:
    """Every ``account_sync_interval``, and at once when asked (a deposit: request_sync)."""
    return (last is None or (now - last).total_seconds() >= svc.config.account_sync_interval
            or slurm_accounts.requested_since(svc, last))


def sync_slurm_accounts(svc: Services, last: datetime | None, now: datetime,
                        report: TickReport) -> datetime | None:
    """Every ``account_sync_interval`` seconds, converge Slurm's accounts with the teams (through
    ``svc.accounts``: sacctmgr, or the in-memory accounts of the tests). Returns when the
    accounts were last converged (``last`` when not due or when it failed: retried next tick)."""
    if not slurm_accounts_due(svc, last, now):
        return last
    try:
        slurm_accounts.sync_accounts(svc)
    except Exception as exc:  # noqa: BLE001 — retried next tick
        report.errors.append(f"Slurm account sync failed: {exc}")
        return last
    # what Slurm made of the policy, for pages that never ask Slurm: fair-share, partitions
    for what, step in (("fair-share", shares.sample), ("partitions", resources.sample)):
        try:
            step(svc, now)
        except Exception as exc:  # noqa: BLE001 — sampled again at the next sync
            report.errors.append(f"sampling {what} failed: {exc}")
    return now
