"""Local accounts as the operator manages them (``slipway user …``, ``token create``): add a user
with their personal team, set a local password, list users, create a token for a user, and the
Actor a user name stands for. Moved out of the CLI so that it decides nothing of its own.

The cluster-administrator checks of ``user add`` / ``passwd`` stay with the caller (the CLI's one
helper on ``Actor.is_cluster_admin``); ``create_token_for`` checks like ``user_tokens.list_tokens``.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Membership, Team, User
from ..services import Services
from ..teams.access import Actor, Forbidden, NotFound, OpError
from . import user_tokens, web_sessions
from .names import personal_team_name


def actor_named(s: Session, name: str) -> Actor | None:
    """The Actor user ``name`` stands for (None: there is no such user)."""
    u = s.scalar(select(User).where(User.name == name))
    return None if u is None else Actor(id=u.id, name=u.name, is_cluster_admin=bool(u.is_cluster_admin))


def add_user(svc: Services, name: str, *, unix_user: str | None = None, admin: bool = False,
             password_hash: str | None = None) -> str:
    """A new user and their personal team (``personal_team_name``), the user its owner; returns
    the team's name."""
    try:
        team_name = ig.validate_name(personal_team_name(name), "personal team")
    except ValueError as exc:
        raise OpError(str(exc)) from None
    with svc.db.transaction() as s:
        if s.scalar(select(User.id).where(User.name == name)):
            raise OpError(f"user {name!r} exists already", 409)
        if s.scalar(select(Team.id).where(Team.name == team_name)):
            raise OpError(f"team {team_name!r} exists already; cannot create {name}'s personal team", 409)
        now = svc.now()
        u = User(name=name, unix_user=unix_user or name, is_cluster_admin=admin, created_at=now,
                 password_hash=password_hash)
        t = Team(name=team_name, personal=True, created_at=now)
        s.add_all([u, t])
        s.flush()
        s.add(Membership(user_id=u.id, team_id=t.id, role="owner", created_at=now))
    return team_name


def local_account(s: Session, name: str) -> User:
    """User ``name`` if their password is Slipway's to set (not an LDAP account)."""
    u = s.scalar(select(User).where(User.name == name))
    if u is None:
        raise NotFound(f"there is no user {name!r}")
    if u.ldap_dn:
        raise OpError(f"{name}'s password lives in LDAP ({u.ldap_dn}); change it there")
    return u


def set_password(svc: Services, name: str, password_hash: str | None) -> int:
    """A new local password; every portal login of ``name`` ends with the old one (how many)."""
    with svc.db.transaction() as s:
        user = local_account(s, name)
        user.password_hash = password_hash
        return web_sessions.end_all(s, user.id)


def end_sessions(svc: Services, name: str) -> int:
    """End every portal login of user ``name`` (their browsers must log in again); how many.
    Their access tokens are not touched (``token revoke`` is for those)."""
    with svc.db.transaction() as s:
        user_id = s.scalar(select(User.id).where(User.name == name))
        if user_id is None:
            raise NotFound(f"there is no user {name!r}")
        return web_sessions.end_all(s, user_id)


def list_users(s: Session) -> list[dict]:
    """Every user by name, with their teams and roles (``slipway user list --json``'s shape)."""
    users = []
    for u in s.scalars(select(User).order_by(User.name)):
        memberships = sorted((m.team.name, m.role) for m in u.memberships)
        users.append({"name": u.name, "unix_user": u.unix_user, "is_cluster_admin": bool(u.is_cluster_admin),
                      "active": bool(u.active), "ldap_dn": u.ldap_dn,
                      "teams": [{"team": tn, "role": r} for tn, r in memberships]})
    return users


def create_token_for(svc: Services, actor: Actor, user_name: str, name: str) -> str:
    """A new access token of user ``user_name`` (the plaintext, shown once): the user's own, or
    anyone's for a cluster administrator."""
    with svc.db.session() as s:
        owner = actor_named(s, user_name)
    if owner is None:
        raise NotFound(f"there is no user {user_name!r}")
    if owner.id != actor.id and not actor.is_cluster_admin:
        raise Forbidden("only cluster administrators may create tokens for other users")
    return user_tokens.create_token(svc, owner, name)[1]
