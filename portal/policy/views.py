"""The policy read views the front doors show, with who may read them: a team's quotas and
fair-share (its members and cluster administrators; anyone else: "not found"), the record of
policy changes (cluster administrators)."""
from __future__ import annotations

from dataclasses import asdict

from ..services import Services
from ..teams import access
from ..teams.access import Actor
from . import events, quotas, shares
from .common import require_cluster_admin

MAX_EVENTS = 5000


def member_or_admin(svc: Services, actor: Actor, team: str, what: str) -> None:
    if actor.is_cluster_admin:
        return
    with svc.db.session() as s:
        access.team_access(s, actor, team, access.ROLE_ANY, what)


def team_quotas(svc: Services, actor: Actor, team: str) -> list[dict]:
    """The team's quotas and its members' (``user`` None: the team's own)."""
    member_or_admin(svc, actor, team, "see the quotas")
    return [dict(asdict(q), text=quotas.describe(q.resource, q.value))
            for q in quotas.quotas_of_team(svc, team)]


def team_shares(svc: Services, actor: Actor, team: str) -> dict:
    member_or_admin(svc, actor, team, "see the fair-share")
    return shares.team_shares(svc, team)


def policy_log(svc: Services, actor: Actor, *, action: str | None = None, limit: int = 200
               ) -> list[dict]:
    require_cluster_admin(actor, "only cluster administrators read the policy log")
    if action is not None and (not action or len(action) > 32):
        raise access.OpError("--action names one action, e.g. quota, grant, hold")
    return events.recent(svc, limit=max(1, min(int(limit), MAX_EVENTS)), action=action)
