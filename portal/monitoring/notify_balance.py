"""Low balance: a team's balance went under ``alarm_balance_threshold``. Its owners and
administrators get one mail per crossing (``notify_team_balance`` remembers which side of the
threshold each team was on at the last tick), never one per tick while it stays under.

A team seen for the first time is only recorded: one that starts under the threshold (a new
team before its first funds, or every team when notifications are first deployed) has not
*gone* under, and its first mail comes at its first real crossing."""
from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Membership, Team, TeamBalance, User, from_micros, to_micros
from ..db.notify_models import NotifyTeamBalance
from ..services import Services
from ..teams.access import ROLE_ADMIN
from .notify_outbox import Notice, enqueue, footer


def _message(svc: Services, team: str, balance, role: str) -> tuple[str, str]:
    cfg = svc.config
    threshold = ig.format_usd(cfg.alarm_balance_threshold)
    title = f"Slipway: team {team}'s balance is under {threshold}"
    body = (f"The balance of team {team} went under {threshold}: it is {ig.format_usd(balance)} "
            f"now.\n\n"
            f"New jobs start only while the balance is at least "
            f"{ig.format_usd(cfg.min_start_balance)}, and running jobs are stopped when it "
            f"reaches $0.00.\n"
            f"Add funds or ask for them: {cfg.base_url}/teams/{quote(team, safe='')}/billing\n\n"
            f"You get this as the team's {role}; one mail each time the balance goes under "
            f"{threshold}.\n")
    return title, body + footer(svc)


def collect(s: Session, svc: Services, now: datetime) -> list[int]:
    """Record each team's side of the threshold; queue the mails of this tick's crossings (in
    ``s``, the caller's transaction). The ids of the outbox rows to send."""
    threshold = to_micros(svc.config.alarm_balance_threshold)
    teams = s.execute(select(Team.id, Team.name, func.coalesce(TeamBalance.balance_micros, 0))
                      .outerjoin(TeamBalance, TeamBalance.team_id == Team.id)).all()
    seen = {r.team_id: r for r in s.scalars(select(NotifyTeamBalance))}
    crossed: list[tuple[int, str, int, int]] = []
    for team_id, name, micros in teams:
        low = int(micros) < threshold
        st = seen.get(team_id)
        if st is None:
            s.add(NotifyTeamBalance(team_id=team_id, low=low, crossings=0, changed_at=now))
            continue
        if st.low == low:
            continue
        st.low, st.changed_at = low, now
        if low:
            st.crossings += 1
            crossed.append((team_id, name, int(micros), st.crossings))
    if not crossed:
        return []
    members = s.execute(select(Membership.team_id, Membership.user_id, Membership.role)
                        .join(User, User.id == Membership.user_id)
                        .where(Membership.team_id.in_([c[0] for c in crossed]),
                               Membership.role.in_(ROLE_ADMIN), User.active.is_(True))).all()
    notices = []
    for team_id, name, micros, n in crossed:
        for tid, user_id, role in members:
            if tid == team_id:
                title, body = _message(svc, name, from_micros(micros), role)
                notices.append(Notice("low_balance", f"{team_id}:{n}", user_id, title, body))
    return enqueue(s, svc, notices)
