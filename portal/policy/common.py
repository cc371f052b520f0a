"""Small helpers the policy modules share: who may change policy, name lookups."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Team, User
from ..teams.access import Actor, Forbidden, NotFound, OpError

ACTIONS_FOR_ADMINS = "only cluster administrators may change scheduling policy"


def require_cluster_admin(actor: Actor, what: str = ACTIONS_FOR_ADMINS) -> None:
    if not actor.is_cluster_admin:
        raise Forbidden(what)


def team_named(s: Session, name: str) -> Team:
    team = s.scalar(select(Team).where(Team.name == str(name)))
    if team is None:
        raise NotFound(f"there is no team {name!r}")
    return team


def user_named(s: Session, name: str) -> User:
    user = s.scalar(select(User).where(User.name == str(name)))
    if user is None:
        raise NotFound(f"there is no user {name!r}")
    return user


def whole_number(value: object, what: str, low: int, high: int) -> int:
    """``value`` (int or digits) as an int within [low, high], else a clear OpError."""
    if isinstance(value, bool):
        raise OpError(f"{what} must be a whole number, not {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdigit() or len(text) > 12:
            raise OpError(f"{what} must be a whole number, not {value[:40]!r}")
        value = int(text)
    if not isinstance(value, int):
        raise OpError(f"{what} must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise OpError(f"{what} must be between {low} and {high}, not {value}")
    return value
