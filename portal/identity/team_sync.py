"""LDAP → users and teams, converging both ways; safe to re-run (a second run changes nothing).

What one ``sync_ldap(svc)`` does, from two paged searches (users under ``ldap_user_base`` with
``ldap_user_filter`` (``{username}`` → ``*``), ``groupOfNames`` under ``ldap_group_base``):

* **Users.** Every directory user gets a local ``User`` (name = ``ldap_uid_attr``, Unix account =
  ``ldap_unix_attr``, DN, e-mail) and a personal team (``personal_team_name``, role owner) — the
  team "exists already" at first login. A user with a DN whom the directory no longer lists
  becomes **inactive** (never deleted: jobs and the ledger reference them); listed again → active.
  Local users (no DN) are never touched.
* **Groups → teams.** Each group is the team named after its ``cn`` (``team_name_for_group``) with
  ``ldap_group`` = the group DN; a team is matched by that DN, so it keeps its name if the group's
  ``cn`` changes only in case. ``member`` DNs get role ``user``, ``owner`` DNs role ``owner``.
  Roles are only ever raised by the sync (an administrator/owner set in Slipway stays).
* **Removals.** In a team that mirrors a group, a directory user who is not in the group (or no
  longer in the directory) loses the membership. Local users (no DN) added by hand are kept.
  Teams without ``ldap_group`` and personal teams are never touched.
* **A group that disappeared:** its team is kept with all its data (projects, repositories,
  ledger, Slurm account and its history) and keeps ``ldap_group``, but loses every
  directory-sourced member; cluster administrators still reach it, and if the group comes back
  its members return. Deleting such a team stays an explicit administrator's act.
* **Name clashes:** a group whose team name is taken by a team not mirroring it (a Slipway team, a
  personal team, another group) is skipped with a warning — nothing is merged silently.
* **Safety:** if the directory returns no users at all while the database has directory users,
  or no groups while teams mirror groups, the sync refuses (a wrong base or filter must not
  disable everyone or empty every team); ``allow_empty=True`` overrides. With no
  ``ldap_group_base`` only users are synced and no team is touched.

After database changes it converges Slurm's accounts (``portal.teams.slurm_accounts.sync_accounts``,
through the ``SlurmAccounts`` port ``svc.accounts``); a Slurm failure is reported, the database change stands and
the reconciler's account sync catches up. ``maybe_sync_ldap(svc, now)`` is the reconciler's hook:
at most once per ``ldap_sync_interval``.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from ..db import Membership, ReconcilerState, Team
from ..services import Services
from .accounts import ROLE_RANK, Index, upsert_ldap_user
from ..teams import slurm_accounts
from .ldap_directory import Directory, DirectoryUnavailable, LdapGroup, LdapUser
from .names import norm_dn, team_name_for_group

log = logging.getLogger("slipway.identity.sync")

STATE_KEY = "ldap_synced_at"
_lock = threading.Lock()


class SyncRefused(Exception):
    """The directory's answer looks wrong (e.g. no users at all); nothing was changed."""


@dataclass
class SyncReport:
    users_seen: int = 0
    groups_seen: int = 0
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    slurm_changes: list[str] = field(default_factory=list)
    users_created: int = 0
    users_deactivated: int = 0
    teams_created: int = 0
    memberships_added: int = 0
    memberships_removed: int = 0
    search_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def summary(self) -> str:
        return (f"{self.users_seen} LDAP users, {self.groups_seen} groups: {len(self.changes)} change(s) "
                f"({self.users_created} users created, {self.users_deactivated} deactivated, "
                f"{self.teams_created} teams created, +{self.memberships_added}/-{self.memberships_removed} "
                f"memberships) in {self.elapsed_s:.2f} s")


def sync_ldap(svc: Services, *, directory: Directory | None = None, allow_empty: bool = False) -> SyncReport:
    """One convergence of users and teams with the directory. Raises ``DirectoryUnavailable``
    (nothing changed) or ``SyncRefused``; returns what changed."""
    cfg = svc.config
    if directory is None:
        if not cfg.ldap_url:
            raise DirectoryUnavailable("no LDAP server configured (ldap_url)")
        directory = Directory.from_config(cfg)
    rep = SyncReport()
    t0 = time.perf_counter()
    users = list(directory.iter_users())
    groups = list(directory.iter_groups())
    rep.search_s = time.perf_counter() - t0
    rep.users_seen, rep.groups_seen = len(users), len(groups)
    now = svc.now()
    with _lock, svc.db.transaction() as s:
        ix = Index.load_all(s)
        if not users and ix.users_by_dn and not allow_empty:
            raise SyncRefused(f"the directory returned no users under {directory.user_base!r} "
                              f"while {len(ix.users_by_dn)} LDAP users exist here; check ldap_user_base "
                              "and ldap_user_filter (or sync with allow_empty)")
        mirrored = [t for t in ix.teams_by_name.values() if t.ldap_group]
        if directory.group_base and not groups and mirrored and not allow_empty:
            raise SyncRefused(f"the directory returned no groups under {directory.group_base!r} while "
                              f"{len(mirrored)} teams mirror LDAP groups; check ldap_group_base "
                              "(or sync with allow_empty)")
        by_dn = _sync_users(s, ix, users, now, rep)
        if directory.group_base:   # no group base: teams are not the directory's business
            _sync_groups(s, ix, groups, by_dn, now, rep)
    rep.elapsed_s = time.perf_counter() - t0
    for w in rep.warnings:
        log.warning("ldap sync: %s", w)
    if rep.changed:
        log.info("ldap sync: %s", rep.summary())
        _sync_slurm(svc, rep)
    return rep


def _sync_users(s, ix: Index, users: list[LdapUser], now: datetime, rep: SyncReport) -> dict[str, int]:
    """Upsert every directory user; deactivate the ones gone. Returns normalised DN -> user id."""
    by_dn: dict[str, int] = {}
    seen_names: set[str] = set()
    for lu in users:
        if lu.name in seen_names:
            rep.warnings.append(f"LDAP user name {lu.name!r} appears twice ({lu.dn}); second entry ignored")
            continue
        seen_names.add(lu.name)
        before = len(ix.users_by_name)
        out = upsert_ldap_user(s, ix, lu, now, reactivate=True)
        rep.changes.extend(out.changes)
        rep.warnings.extend(out.warnings)
        if out.user is not None:
            rep.users_created += len(ix.users_by_name) > before
            by_dn[norm_dn(lu.dn)] = out.user.id
    live_ids = set(by_dn.values())
    for u in ix.users_by_name.values():
        if u.ldap_dn and u.id not in live_ids and u.active:
            u.active = False
            rep.users_deactivated += 1
            rep.changes.append(f"user {u.name} deactivated (no longer in LDAP)")
    return by_dn


def _sync_groups(s, ix: Index, groups: list[LdapGroup], by_dn: dict[str, int], now: datetime,
                 rep: SyncReport) -> None:
    teams_by_group = {norm_dn(t.ldap_group): t for t in ix.teams_by_name.values() if t.ldap_group}
    ldap_user_ids = {u.id for u in ix.users_by_name.values() if u.ldap_dn}
    names = {u.id: u.name for u in ix.users_by_name.values()}
    current: dict[int, dict[int, Membership]] = {}
    if teams_by_group:
        for m in s.scalars(select(Membership).where(
                Membership.team_id.in_([t.id for t in teams_by_group.values()]))):
            current.setdefault(m.team_id, {})[m.user_id] = m
    mirrored: set[int] = set()
    for g in groups:
        key = norm_dn(g.dn)
        team = teams_by_group.get(key)
        if team is None:
            name = team_name_for_group(g.cn)
            if name is None:
                rep.warnings.append(f"LDAP group {g.dn}: cn {g.cn!r} gives no valid team name; skipped")
                continue
            other = ix.teams_by_name.get(name)
            if other is not None:
                rep.warnings.append(f"LDAP group {g.dn}: team {name!r} exists and does not mirror it "
                                    f"({'mirrors ' + other.ldap_group if other.ldap_group else 'personal' if other.personal else 'a Slipway team'}); skipped")
                continue
            team = Team(name=name, personal=False, ldap_group=g.dn, created_at=now)
            s.add(team)
            s.flush()
            ix.teams_by_name[name] = team
            teams_by_group[key] = team
            rep.teams_created += 1
            rep.changes.append(f"team {name} created for LDAP group {g.dn}")
        if team.id in mirrored:
            continue
        mirrored.add(team.id)
        desired: dict[int, str] = {}
        for dn in g.members:
            uid = by_dn.get(norm_dn(dn))
            if uid is not None:
                desired.setdefault(uid, "user")
        for dn in g.owners:
            uid = by_dn.get(norm_dn(dn))
            if uid is not None:
                desired[uid] = "owner"
        _converge(s, team, desired, current.setdefault(team.id, {}), ldap_user_ids, names, now, rep)
    for key, team in teams_by_group.items():
        if team.id not in mirrored:   # the group is gone: keep the team, drop directory members
            before = rep.memberships_removed
            _converge(s, team, {}, current.setdefault(team.id, {}), ldap_user_ids, names, now, rep)
            if rep.memberships_removed > before:
                rep.warnings.append(f"team {team.name}: LDAP group {team.ldap_group} is gone; its "
                                    "directory members were removed, the team and its data are kept")


def _converge(s, team: Team, desired: dict[int, str], have: dict[int, Membership],
              ldap_user_ids: set[int], names: dict[int, str], now: datetime, rep: SyncReport) -> None:
    for uid, role in sorted(desired.items()):
        m = have.get(uid)
        if m is None:
            m = Membership(user_id=uid, team_id=team.id, role=role, created_at=now)
            s.add(m)
            have[uid] = m
            rep.memberships_added += 1
            rep.changes.append(f"{names.get(uid, uid)} added to team {team.name} ({role})")
        elif ROLE_RANK.get(role, 0) > ROLE_RANK.get(m.role, 0):
            rep.changes.append(f"{names.get(uid, uid)}: {m.role} -> {role} in team {team.name}")
            m.role = role
    for uid in sorted(set(have) - set(desired)):
        if uid not in ldap_user_ids:
            continue  # a local user added by hand: not the directory's to remove
        s.delete(have.pop(uid))
        rep.memberships_removed += 1
        rep.changes.append(f"{names.get(uid, uid)} removed from team {team.name}")


def _sync_slurm(svc: Services, rep: SyncReport) -> None:
    try:
        rep.slurm_changes = slurm_accounts.sync_accounts(svc)
    except Exception as exc:  # noqa: BLE001 — the database change stands; Slurm catches up later
        rep.errors.append(f"Slurm accounts not updated yet ({exc}); the reconciler will retry")


def maybe_sync_ldap(svc: Services, now: datetime | None = None) -> SyncReport | None:
    """The reconciler's hook: run ``sync_ldap`` when ``ldap_sync_interval`` seconds have passed
    since the last attempt (kept in ``reconciler_state``). None when not due / not configured;
    otherwise a report whose ``errors`` say what failed (never raises for directory trouble)."""
    cfg = svc.config
    if not cfg.ldap_url or cfg.ldap_sync_interval <= 0:
        return None
    now = now or svc.now()
    with svc.db.session() as s:
        row = s.get(ReconcilerState, STATE_KEY)
        if row is not None:
            try:
                last = datetime.fromisoformat(row.value)
                if 0 <= (now - last).total_seconds() < cfg.ldap_sync_interval:
                    return None
            except ValueError:
                pass
    with svc.db.transaction() as s:   # the attempt counts, success or not: no hammering a dead server
        row = s.get(ReconcilerState, STATE_KEY)
        if row is None:
            s.add(ReconcilerState(key=STATE_KEY, value=now.isoformat(), updated_at=now))
        else:
            row.value, row.updated_at = now.isoformat(), now
    try:
        return sync_ldap(svc)
    except (DirectoryUnavailable, SyncRefused) as exc:
        return SyncReport(errors=[f"ldap sync: {exc}"])
