"""Fair-share between teams: each team's Slurm account has ``teams.fairshare`` shares
(administrators set them: ``slipway team shares vision 40``); what Slurm makes of them (the
fair-share factor, the team's share of recent usage) is sampled from ``sshare`` at each account
sync into the team row, so pages never ask Slurm."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from ..db import Team
from ..services import Services
from ..teams.access import Actor
from . import events
from .common import require_cluster_admin, team_named, whole_number

MAX_SHARES = 1_000_000


def set_shares(svc: Services, actor: Actor, team: str, shares: object) -> int:
    require_cluster_admin(actor, "only cluster administrators set fair-share")
    value = whole_number(shares, "shares", 1, MAX_SHARES)
    with svc.db.transaction() as s:
        t = team_named(s, team)
        old, t.fairshare = t.fairshare, value
        events.record(s, actor.name, "shares", f"team {t.name}", f"{old} -> {value} shares",
                      at=svc.now())
    return value


def sample(svc: Services, now: datetime) -> int:
    """Store sshare's view of every team (fair-share factor, share of usage); returns how many
    teams were sampled. Account rows give the usage; the factor is that of the team's member
    associations (Fair Tree ranks users; every member of a team gets the same one), the highest
    when they differ."""
    records = svc.backend.shares()
    usage: dict[str, float] = {}
    factor: dict[str, float] = {}
    for r in records:
        account = (r.account or "").lower()
        if not r.user:
            usage[account] = float(r.effective_usage or 0.0)
        elif r.fairshare is not None:
            factor[account] = max(factor.get(account, 0.0), float(r.fairshare))
    n = 0
    with svc.db.transaction() as s:
        for t in s.scalars(select(Team)):
            account = svc.config.slurm_account(t.name).lower()
            if account not in usage and account not in factor:
                continue
            t.usage_share = usage.get(account)
            t.fairshare_factor = factor.get(account)
            t.shares_sampled_at = now
            n += 1
    return n


def team_shares(svc: Services, team: str) -> dict:
    with svc.db.session() as s:
        t = team_named(s, team)
        total = sum(s.scalars(select(Team.fairshare))) or 1
        return {"team": t.name, "shares": t.fairshare, "share_of_cluster": t.fairshare / total,
                "fairshare_factor": t.fairshare_factor, "usage_share": t.usage_share,
                "sampled_at": t.shares_sampled_at.isoformat() if t.shares_sampled_at else None}
