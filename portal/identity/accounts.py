"""Local rows for directory users: create/update the ``User`` and make sure their personal team
exists. Shared by the first login and the LDAP sync, so both apply one rule.

The caller owns the session/transaction; these functions only add, change and report.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from ..db import Membership, Team, User
from .ldap_directory import LdapUser
from .names import norm_dn, personal_team_for, valid_unix_user

log = logging.getLogger("slipway.identity")

ROLE_RANK = {"user": 0, "administrator": 1, "owner": 2}


@dataclass
class Index:
    """Users and teams looked up by DN / name. The sync preloads everything; a login loads only
    the rows that concern one user (``Index.for_login``)."""

    users_by_dn: dict[str, User] = field(default_factory=dict)
    users_by_name: dict[str, User] = field(default_factory=dict)
    teams_by_name: dict[str, Team] = field(default_factory=dict)

    def add_user(self, u: User) -> None:
        self.users_by_name[u.name] = u
        if u.ldap_dn:
            self.users_by_dn[norm_dn(u.ldap_dn)] = u

    @classmethod
    def load_all(cls, s: Session) -> "Index":
        ix = cls()
        for u in s.scalars(select(User)):
            ix.add_user(u)
        ix.teams_by_name = {t.name: t for t in s.scalars(select(Team).options(selectinload(Team.memberships)))}
        return ix

    @classmethod
    def for_login(cls, s: Session, lu: LdapUser) -> "Index":
        ix = cls()
        for u in s.scalars(select(User).where(or_(func.lower(User.ldap_dn) == lu.dn.lower(),
                                                  User.name == lu.name))):
            ix.add_user(u)
        team_name = personal_team_for(lu.name)
        if team_name:
            t = s.scalar(select(Team).where(Team.name == team_name))
            if t is not None:
                ix.teams_by_name[t.name] = t
        return ix


@dataclass
class Outcome:
    user: User | None
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def upsert_ldap_user(s: Session, ix: Index, lu: LdapUser, now: datetime, *, reactivate: bool) -> Outcome:
    """Create or update the local row of directory user ``lu`` (matched by DN, then by name) and
    ensure their personal team. ``reactivate``: a row marked inactive becomes active again
    (the sync does this; a login does not — it refuses inactive users)."""
    out = Outcome(None)
    if not valid_unix_user(lu.unix_user):
        out.warnings.append(f"LDAP user {lu.name!r} ({lu.dn}): unusable Unix account {lu.unix_user!r}; skipped")
        return out
    user = ix.users_by_dn.get(norm_dn(lu.dn)) or ix.users_by_name.get(lu.name)
    if user is None:
        user = User(name=lu.name, unix_user=lu.unix_user, ldap_dn=lu.dn, email=lu.email,
                    is_cluster_admin=False, active=True, created_at=now)
        s.add(user)
        s.flush()
        ix.add_user(user)
        out.changes.append(f"user {lu.name} created (unix {lu.unix_user})")
    else:
        if user.name != lu.name:
            other = ix.users_by_name.get(lu.name)
            if other is not None and other is not user:
                out.warnings.append(f"LDAP user {lu.dn} is now named {lu.name!r}, but another user has "
                                    f"that name; kept the name {user.name!r}")
            else:
                out.changes.append(f"user {user.name} renamed to {lu.name}")
                ix.users_by_name.pop(user.name, None)
                user.name = lu.name
                ix.users_by_name[user.name] = user
        what = []
        if user.ldap_dn != lu.dn:
            if user.ldap_dn is None:
                what.append("linked to LDAP")
            elif norm_dn(user.ldap_dn) != norm_dn(lu.dn):
                what.append(f"DN {lu.dn}")
            ix.users_by_dn.pop(norm_dn(user.ldap_dn), None)
            user.ldap_dn = lu.dn
            ix.users_by_dn[norm_dn(lu.dn)] = user
        if user.unix_user != lu.unix_user:
            what.append(f"unix {user.unix_user} -> {lu.unix_user}")
            user.unix_user = lu.unix_user
        if (user.email or None) != (lu.email or None):
            what.append("e-mail")
            user.email = lu.email
        if reactivate and not user.active:
            what.append("reactivated")
            user.active = True
        if what:
            out.changes.append(f"user {user.name}: {', '.join(what)}")
    out.user = user
    ensure_personal_team(s, ix, user, now, out)
    return out


def ensure_personal_team(s: Session, ix: Index, user: User, now: datetime, out: Outcome) -> None:
    """The user's personal team (``personal_team_name``), with the user as owner."""
    name = personal_team_for(user.name)
    if name is None:
        out.warnings.append(f"user {user.name}: no valid personal team name; none created")
        return
    team = ix.teams_by_name.get(name)
    if team is None:
        team = Team(name=name, personal=True, created_at=now)
        s.add(team)
        s.flush()
        ix.teams_by_name[name] = team
        s.add(Membership(user_id=user.id, team_id=team.id, role="owner", created_at=now))
        out.changes.append(f"personal team {name} created for {user.name}")
        return
    mine = [m for m in team.memberships if m.user_id == user.id]
    if team.personal and (mine or not team.memberships):
        if not mine:
            s.add(Membership(user_id=user.id, team_id=team.id, role="owner", created_at=now))
            out.changes.append(f"{user.name} is owner of personal team {name}")
        elif mine[0].role != "owner":
            mine[0].role = "owner"
            out.changes.append(f"{user.name} is owner of personal team {name}")
        return
    out.warnings.append(f"user {user.name}: team {name!r} exists and is not their personal team; "
                        "no personal team")
