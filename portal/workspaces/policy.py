"""Workspace policy: when a workspace is idle, when its user is reminded, whether it is stopped,
and the caps (workspaces per user, GPUs per workspace).

Three levels: a team's row of ``workspace_policies`` → the cluster's row (``team_id`` NULL) →
``DEFAULTS``. Cluster administrators set both (``set_policy``)."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from sqlalchemy import select

from ..db import Team, WorkspacePolicy
from ..services import Services
from ..teams.access import Actor, Forbidden, NotFound, OpError, team_access

FIELDS = ("idle_seconds", "remind_seconds", "auto_stop", "max_per_user", "max_gpus")
_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")


@dataclass(frozen=True)
class Policy:
    idle_seconds: int = 3600
    remind_seconds: int = 600
    auto_stop: bool = True
    max_per_user: int = 2
    max_gpus: int = 2

    @property
    def remind_at_seconds(self) -> int:
        """Idle this long: the reminder goes out."""
        return max(0, self.idle_seconds - self.remind_seconds)

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULTS = Policy()


def parse_duration(text) -> int:
    """``60m``, ``1h30m``, ``90s``, ``45`` (minutes) → seconds."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    t = str(text or "").strip().lower()
    if t.isdigit():
        return int(t) * 60
    m = _DURATION.match(t)
    if not t or not m or not any(m.groups()):
        raise OpError(f"cannot read duration {str(text)[:40]!r}; write e.g. 60m, 1h30m, 90s")
    h, mi, se = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + se


def _row(s, team_id: int | None) -> WorkspacePolicy | None:
    cond = WorkspacePolicy.team_id.is_(None) if team_id is None else WorkspacePolicy.team_id == team_id
    return s.scalar(select(WorkspacePolicy).where(cond))


def effective(s, team_id: int | None) -> Policy:
    values = DEFAULTS.to_dict()
    for row in (_row(s, None), _row(s, team_id) if team_id is not None else None):
        if row is not None:
            values.update({f: getattr(row, f) for f in FIELDS if getattr(row, f) is not None})
    return Policy(**values)


def _check(values: dict) -> dict:
    out = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise OpError(f"unknown policy field {key!r}; known: {', '.join(FIELDS)}")
        if value is None:
            out[key] = None
            continue
        if key == "auto_stop":
            if not isinstance(value, bool):
                raise OpError("auto_stop must be true or false")
            out[key] = value
            continue
        if key in ("idle_seconds", "remind_seconds"):
            value = parse_duration(value)
            if not 10 <= value <= 30 * 86400 and not (key == "remind_seconds" and value == 0):
                raise OpError(f"{key.replace('_seconds', '')} must be between 10 seconds and 30 days")
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
            raise OpError(f"{key} must be a whole number between 0 and 1000")
        out[key] = value
    return out


def show_policy(svc: Services, actor: Actor, team: str | None = None) -> dict:
    with svc.db.session() as s:
        team_id = _team_id(s, actor, team) if team else None
        own = _row(s, team_id)
        return {"team": team, "effective": effective(s, team_id).to_dict(),
                "set": {f: getattr(own, f) for f in FIELDS} if own is not None else {}}


def set_policy(svc: Services, actor: Actor, team: str | None, values: dict) -> dict:
    """Cluster administrators set the cluster's policy (``team`` None) or a team's override
    (a None value: inherit)."""
    if not actor.is_cluster_admin:
        raise Forbidden("only cluster administrators set the workspace policy")
    values = _check(values)
    with svc.db.transaction() as s:
        team_id = _team_id(s, actor, team) if team else None
        row = _row(s, team_id)
        if row is None:
            row = WorkspacePolicy(team_id=team_id)
            s.add(row)
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_by, row.updated_at = actor.name, svc.now()
        s.flush()
        eff = effective(s, team_id)
        if eff.remind_seconds > eff.idle_seconds:
            raise OpError(f"the reminder ({eff.remind_seconds} s before) cannot come before the "
                          f"workspace is even idle ({eff.idle_seconds} s)")
    return show_policy(svc, actor, team)


def _team_id(s, actor: Actor, team: str) -> int:
    """The team's id: cluster administrators name any team, members their own."""
    if not actor.is_cluster_admin:
        return team_access(s, actor, team)[0].id
    t = s.scalar(select(Team).where(Team.name == team))
    if t is None:
        raise NotFound(f"there is no team {team!r}")
    return t.id
