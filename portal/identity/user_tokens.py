"""A user's access tokens as the front doors see them: create, list, revoke, and the user a
bearer token belongs to."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import AccessToken, User
from ..services import Services
from ..teams.access import Actor, Forbidden, NotFound, OpError
from . import tokens as tokens_mod


def create_token(svc: Services, actor: Actor, name: str) -> tuple[int, str]:
    name = (name or "").strip() or "default"
    if len(name) > 128:
        raise OpError("token name is too long (128 characters at most)")
    with svc.db.transaction() as s:
        user = s.get(User, actor.id)
        tok = tokens_mod.create_token(s, user, name, now=svc.now())
        s.flush()
        tid = s.scalar(select(AccessToken.id).where(AccessToken.token_hash == tokens_mod._hash(tok)))
    return tid, tok


def list_tokens(s: Session, actor: Actor, user_name: str | None = None) -> list[AccessToken]:
    """The actor's tokens; with ``user_name`` another user's (cluster administrators only)."""
    user_id = actor.id
    if user_name and user_name != actor.name:
        if not actor.is_cluster_admin:
            raise Forbidden(f"{actor.name} may not see {user_name}'s tokens (only cluster administrators may)")
        user_id = s.scalar(select(User.id).where(User.name == user_name))
        if user_id is None:
            raise NotFound(f"there is no user {user_name!r}")
    return list(s.scalars(select(AccessToken).where(AccessToken.user_id == user_id)
                          .order_by(AccessToken.revoked_at.is_not(None), AccessToken.id.desc())))


def revoke_token(svc: Services, actor: Actor, token_id: int) -> None:
    """A user revokes their own tokens; a cluster administrator anyone's."""
    with svc.db.transaction() as s:
        mine = () if actor.is_cluster_admin else (AccessToken.user_id == actor.id,)
        tok = s.scalar(select(AccessToken).where(AccessToken.id == token_id, *mine))
        if tok is None:
            raise NotFound(f"there is no token {token_id}")
        if tok.revoked_at is None:
            tok.revoked_at = svc.now()


def user_by_bearer(s: Session, token: str, *, now: datetime | None = None) -> User | None:
    """The active user owning live access token ``token`` (``Authorization: Bearer``). Uses the
    same storage as ``portal.identity.tokens.verify_token`` (prefix lookup, constant-time sha256 compare)."""
    import hmac

    if not token or len(token) < tokens_mod.PREFIX_LEN:
        return None
    digest = tokens_mod._hash(token)
    rows = s.execute(select(AccessToken, User).join(User, AccessToken.user_id == User.id).where(
        AccessToken.prefix == token[:tokens_mod.PREFIX_LEN], AccessToken.revoked_at.is_(None))).all()
    for tok, user in rows:
        if hmac.compare_digest(tok.token_hash, digest) and user.active:
            if now is not None:
                tok.last_used_at = now
            return user
    return None
