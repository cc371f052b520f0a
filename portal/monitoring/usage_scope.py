"""Whose usage, over which days, in which buckets: the scope (``cluster``, ``team:NAME``,
``user:NAME``) with its access rule, and the period (``day``, ``week``, ``month``) with its
window.

Access (portal/teams/access.py): the cluster's usage is for cluster administrators (403 for
others); a team's for its members and cluster administrators (anyone else: 404, the team's
existence is not revealed); a user's for that user and cluster administrators (403)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select

from ..db import User
from ..teams import access
from ..teams.access import Actor, Forbidden, NotFound, OpError
from .sample_math import EPOCH, epoch_day

PERIODS = ("day", "week", "month")
# buckets shown when no window is given: 30 days, 12 weeks, 12 months (the current one last)
DEFAULT_BUCKETS = {"day": 30, "week": 12, "month": 12}
MAX_DAYS = 3 * 366
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Scope:
    kind: str            # cluster, team, user
    name: str            # "" for the cluster
    team_id: int | None = None
    user_id: int | None = None

    @property
    def key(self) -> str:
        return "cluster" if self.kind == "cluster" else f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        return {"cluster": "the whole cluster", "team": f"team {self.name}",
                "user": f"user {self.name}"}[self.kind]


def resolve_scope(s, actor: Actor, text: str | None) -> Scope:
    """``cluster`` | ``team:NAME`` | ``user:NAME`` (default: the cluster for administrators,
    else the actor), access checked."""
    text = (text or "").strip()
    if not text:
        text = "cluster" if actor.is_cluster_admin else f"user:{actor.name}"
    kind, _, name = text.partition(":")
    if kind == "cluster" and not name:
        if not actor.is_cluster_admin:
            raise Forbidden("only cluster administrators may see the whole cluster's usage; "
                            f"see your own (user:{actor.name}) or one of your teams (team:NAME)")
        return Scope("cluster", "")
    if kind == "team" and name:
        team, _role = access.team_access(s, actor, name, access.ROLE_ANY, "see the usage")
        return Scope("team", team.name, team_id=team.id)
    if kind == "user" and name:
        if name != actor.name and not actor.is_cluster_admin:
            raise Forbidden(f"{actor.name} may see only their own usage (user:{actor.name}), "
                            "not another user's")
        uid = s.scalar(select(User.id).where(User.name == name))
        if uid is None:
            raise NotFound(f"there is no user {name!r}")
        return Scope("user", name, user_id=uid)
    raise OpError(f"scope must be cluster, team:NAME or user:NAME, got {text[:80]!r}")


def visible_scopes(s, actor: Actor) -> list[str]:
    """The scopes the actor may pick: the cluster (administrators), their teams, themselves."""
    out = ["cluster"] if actor.is_cluster_admin else []
    out += [f"team:{name}" for name in access.my_team_names(s, actor)]
    out.append(f"user:{actor.name}")
    return out


def parse_period(text: str | None) -> str:
    period = (text or "day").strip()
    if period not in PERIODS:
        raise OpError(f"period must be one of {', '.join(PERIODS)}, got {period[:40]!r}")
    return period


def parse_day(text: str | None, what: str) -> int | None:
    """``YYYY-MM-DD`` -> epoch day; None when not given."""
    if text is None or text == "":
        return None
    if not _DATE.match(text):
        raise OpError(f"{what} must be a date YYYY-MM-DD, got {text[:40]!r}")
    try:
        d = date.fromisoformat(text)
    except ValueError:
        raise OpError(f"{what} is not a date: {text!r}") from None
    return (d - date(1970, 1, 1)).days


def bucket_of(period: str, day: int) -> int:
    """The bucket a day falls in: the day itself, its week (weeks start on Monday: epoch day 0
    was a Thursday), or its month (``year * 12 + month - 1``)."""
    if period == "day":
        return day
    if period == "week":
        return (day + 3) // 7
    d = day_date(day)
    return d.year * 12 + d.month - 1


def bucket_start(period: str, bucket: int) -> int:
    """The first day of a bucket."""
    if period == "day":
        return bucket
    if period == "week":
        return bucket * 7 - 3
    return (date(bucket // 12, bucket % 12 + 1, 1) - date(1970, 1, 1)).days


def day_date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


def window(period: str, now: datetime, start: int | None = None,
           end: int | None = None) -> tuple[int, int, list[int]]:
    """(first day, last day (inclusive), buckets oldest first). Without ``start``/``end``: the
    last DEFAULT_BUCKETS buckets up to today; ``end`` defaults to today, ``start`` to the
    first day of the default window ending at ``end``."""
    today = epoch_day(now)
    last = today if end is None else end
    if start is None:
        first_bucket = bucket_of(period, last) - DEFAULT_BUCKETS[period] + 1
        first = bucket_start(period, first_bucket)
    else:
        first = start
    if first > last:
        raise OpError(f"the window starts ({day_date(first)}) after it ends ({day_date(last)})")
    if last - first + 1 > MAX_DAYS:
        raise OpError(f"the window is {last - first + 1} days long; at most {MAX_DAYS}")
    buckets = list(range(bucket_of(period, first), bucket_of(period, last) + 1))
    return first, last, buckets


def bucket_label(period: str, bucket: int) -> str:
    d = day_date(bucket_start(period, bucket))
    return d.strftime("%Y-%m") if period == "month" else d.isoformat()


def bucket_seconds(period: str, bucket: int) -> int:
    """The bucket's first instant in epoch seconds (the plots' x)."""
    return int((datetime.combine(day_date(bucket_start(period, bucket)), datetime.min.time(),
                                 EPOCH.tzinfo) - EPOCH).total_seconds())
