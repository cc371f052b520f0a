"""Users' access tokens and the git ``authenticate`` callback.

Tokens look like ``swp_<random>``; only sha256(token) is stored, with the first 12 characters
(``prefix``) to find candidates. The plaintext is shown once, when created.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import AccessToken, User
from ..jobs import lookups, service
from ..services import Services

TOKEN_PREFIX = "swp_"
PREFIX_LEN = 12


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user: User, name: str = "default", *, now: datetime) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(AccessToken(user_id=user.id, name=name, prefix=token[:PREFIX_LEN],
                            token_hash=_hash(token), created_at=now))
    return token


def verify_token(session: Session, username: str, token: str, *, now: datetime | None = None) -> User | None:
    """The user if ``token`` is one of ``username``'s live tokens and the user is active.

    A deactivated user (LDAP no longer lists them, or an administrator switched them off) keeps
    their token rows, but no token of theirs opens git, the API or anything else."""
    if not username or not token or len(token) < PREFIX_LEN:
        return None
    digest = _hash(token)
    rows = session.execute(
        select(AccessToken, User).join(User).where(
            User.name == username, AccessToken.prefix == token[:PREFIX_LEN],
            AccessToken.revoked_at.is_(None))
    ).all()
    for tok, user in rows:
        if hmac.compare_digest(tok.token_hash, digest):
            if not user.active:
                return None
            if now is not None:
                tok.last_used_at = now
            return user
    return None


def revoke_token(session: Session, user: User, name: str, *, now: datetime) -> int:
    n = 0
    for tok in session.scalars(select(AccessToken).where(
            AccessToken.user_id == user.id, AccessToken.name == name, AccessToken.revoked_at.is_(None))):
        tok.revoked_at = now
        n += 1
    return n


def make_authenticate(svc: Services):
    """The callback git_gateway's GitHttpApp calls for every request.

    * ``job:<id>`` + that job's token: read/write on the job's own project repository only;
    * a user name + one of their access tokens: read/write on the repositories of their teams
      (cluster administrators: every repository); inactive users' tokens are refused (401);
    * bad credentials → None (401); valid ones without access → AccessDenied (404).
    """

    def authenticate(repo_key: str, username: str, password: str, write: bool):
        now = svc.now()
        with svc.db.session() as s:
            if username.startswith("job:"):
                jid = username[4:]
                if not jid.isdigit():
                    return None
                job = service.check_job_token(s, int(jid), password, now=now)
                if job is None:
                    return None
                if job.project.repo_key != repo_key:
                    raise ig.access_denied(f"job {jid} may only push to its own project")
                return ig.principal(username, True)
            # every git request comes here (two per push): the token, its user, the project,
            # its team and the membership in ONE query (lookups.token_access)
            found = lookups.token_access(s, repo_key, username, password[:PREFIX_LEN])
            digest = _hash(password) if len(password) >= PREFIX_LEN else ""
            row = next((r for r in found if hmac.compare_digest(r.token_hash, digest)), None)
            if row is None or not row.active:
                return None
            if row.project_id is None:
                raise ig.access_denied("no such repository")
            if not (row.is_cluster_admin or row.membership_id is not None):
                raise ig.access_denied(f"{row.user_name} is not a member of team {row.team_name}")
            return ig.principal(row.user_name, False)

    return authenticate
