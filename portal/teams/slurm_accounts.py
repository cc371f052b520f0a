"""Keep Slurm's accounts and associations in step with Slipway's teams, both ways.

Every team is a Slurm account ``<slurm_account_prefix><name>`` (``team-`` unless configured; fair
share between teams); every member with a Unix user is a Slurm user associated with the accounts
of all their teams. Accounts with that prefix that no team owns any more are removed, and so are
associations of members who left and of users no longer active (gone from LDAP, switched off). Nothing outside the prefix is touched, so several Slipways (or
a site's own accounts) can share one Slurm database without undoing each other's work: a user's
default account is set only when it is unset, gone, or one of this Slipway's.
The convergence itself (read, diff, apply with ``sacctmgr``) is slurm_bridge's ``sync`` behind the
``SlurmAccounts`` port (``svc.accounts``, portal/adapters/slurm.py); this module only says what
the desired state is. Re-running it changes nothing.
"""
from __future__ import annotations

import fcntl
import logging
import threading
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from slurm_bridge.sync import AccountSpec, DesiredState, Limits, QosSpec, UserSpec
from sqlalchemy import select

from ..billing.ledger import balances as balances_by_team
from ..db.models import Membership, ReconcilerState, Team, User
from ..policy import budget, grants, quotas
from ..private_files import opener as private_opener
from ..services import Services

log = logging.getLogger("slipway.slurm_accounts")

# Emergency priority is granted by cluster admins per user; members get the normal QOS.
BASE_QOS = ("normal",)
EMERGENCY_QOS = "emergency"
_lock = threading.Lock()


def desired_state(svc: Services, *, with_budget: bool = True) -> DesiredState:
    """The accounts, users, QOS and limits the database says Slurm should have: every team's
    account with its shares, its quotas (GrpTRES, GrpJobs) and its balance mirrored into
    GrpTRESMins; every member's association with the QOS the policy allows (``emergency`` only
    for holders of an emergency grant) and the member's own quotas."""
    cfg, now = svc.config, svc.now()
    accounts, users = [], {}
    with svc.db.session() as s:
        team_limits, user_limits = quotas.limits_for_sync(s, cfg)
        grant_users, grant_teams = grants.holders(s, now)
        teams = list(s.scalars(select(Team).order_by(Team.name)))
        balances = balances_by_team(s) if with_budget else {}
        mirror = budget.limits(svc, {cfg.slurm_account(t.name): balances.get(t.id, Decimal(0))
                                     for t in teams}) if with_budget else {}
        for team in teams:
            account = cfg.slurm_account(team.name)
            accounts.append(AccountSpec(name=account, fairshare=team_shares(team),
                                        description=f"slipway team {team.name}",
                                        grp_tres_mins=mirror.get(account),
                                        limits=team_limits.get(account, Limits())))
        # Inactive users (gone from LDAP, or switched off) are left out: the convergence then
        # removes their associations, so they cannot run jobs on the teams' accounts.
        rows = s.execute(select(Membership, Team, User).join(Team, Membership.team_id == Team.id)
                         .join(User, Membership.user_id == User.id).where(User.active.is_(True))
                         .order_by(Team.personal.desc(), Team.name))
        for membership, team, user in rows:
            unix = user.unix_user
            if not unix:
                continue
            account = cfg.slurm_account(team.name)
            entry = users.setdefault(unix, {"default": account, "accounts": {}, "limits": {}})
            emergency = user.id in grant_users or team.id in grant_teams
            entry["accounts"][account] = BASE_QOS + ((EMERGENCY_QOS,) if emergency else ())
            if (unix, account) in user_limits:
                entry["limits"][account] = user_limits[(unix, account)]
    return DesiredState(
        accounts=tuple(accounts),
        users=tuple(UserSpec(name=u, default_account=v["default"], accounts=v["accounts"],
                             limits=v["limits"])
                    for u, v in sorted(users.items())),
        # normal's QOS priority is a floor under every job's priority (0.1 x PriorityWeightQOS):
        # the turn-taking nice (policy/turns.py) never drives a priority to Slurm's floor of 1
        qos=(QosSpec("normal", priority=100),
             QosSpec(EMERGENCY_QOS, priority=1000, preempt=("normal",), preempt_mode="requeue")),
        account_prefix=cfg.slurm_account_prefix,
    )


REQUESTED_KEY = "slurm_accounts.requested_at"


def request_sync(svc: Services) -> None:
    """Ask the reconciler for an account sync at its next tick (money came in: Slurm's copy of
    the balance should follow now, not within ``account_sync_interval``). A row in the database,
    so a CLI process asks the server's reconciler too; the web never waits on sacctmgr."""
    now = svc.now().isoformat()
    with svc.db.transaction() as s:
        row = s.get(ReconcilerState, REQUESTED_KEY)
        if row is None:
            s.add(ReconcilerState(key=REQUESTED_KEY, value=now))
        else:
            row.value = now
    svc.wake.set()


def requested_since(svc: Services, last: datetime) -> bool:
    with svc.db.session() as s:
        row = s.get(ReconcilerState, REQUESTED_KEY)
    return row is not None and datetime.fromisoformat(row.value) >= last


def team_shares(team: Team) -> int:
    """Fair-share weight of a team's account (every team equal until admins set shares)."""
    return int(team.fairshare or 100)


def sync_accounts(svc: Services) -> list[str]:
    """Converge Slurm to the database through the ``SlurmAccounts`` port (``svc.accounts``:
    sacctmgr in production, in-memory in unit tests); returns the changes made (empty when in
    step)."""
    # One convergence at a time for this Slipway (server threads and CLI processes alike):
    # sacctmgr edits are not atomic, and slurmdbd 22.05 can be left with an association whose
    # parent account is gone when one writer adds under an account another is deleting.
    lock_path = Path(svc.config.data_dir) / "slurm-accounts.lock"
    with _lock, open(lock_path, "a", opener=private_opener) as lock_file:  # 0600
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        changes = svc.accounts.converge(desired_state(svc))
    if changes:
        log.info("slurm accounts: %s", "; ".join(changes))
    return changes
