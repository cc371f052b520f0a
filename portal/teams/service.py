"""Teams: balances, the teams a user is in, members and roles, creating and deleting teams."""
from __future__ import annotations

import shutil
from decimal import Decimal

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import DataRepo, DataVersion, Job, Membership, Project, Team, TeamBalance, User, from_micros
from ..data import repos as data_repos
from ..jobs import runner_spec, states
from ..services import Services
from .access import (
    ROLE_ADMIN,
    ROLE_OWNER,
    ROLES,
    Actor,
    Forbidden,
    OpError,
    team_access,
)

_BALANCES = (select(TeamBalance.team_id, TeamBalance.balance_micros)
             .where(TeamBalance.team_id.in_(bindparam("team_ids", expanding=True))))


def balances_for(s: Session, team_ids: list[int]) -> dict[int, Decimal]:
    """Balances of several teams in ONE primary-key lookup (``team_balances``: the running sum of
    each team's ledger, kept by triggers in the same transaction as every ledger write) — what
    ``billing.balances_of`` reads (teams without entries: 0), with the statement built once."""
    out = {tid: from_micros(0) for tid in team_ids}
    if out:
        out.update({tid: from_micros(int(m or 0))
                    for tid, m in s.execute(_BALANCES, {"team_ids": list(out)})})
    return out


def my_teams(s: Session, actor: Actor) -> list[dict]:
    """The actor's teams with role, balance, project count — three queries in all."""
    rows = s.execute(select(Team, Membership.role).join(Membership, Membership.team_id == Team.id)
                     .where(Membership.user_id == actor.id).order_by(Team.personal.desc(), Team.name)).all()
    ids = [t.id for t, _ in rows]
    bal = balances_for(s, ids)
    counts = dict(s.execute(select(Project.team_id, func.count(Project.id))
                            .where(Project.team_id.in_(ids)).group_by(Project.team_id)).all()) if ids else {}
    return [{"team": t, "role": r, "balance": bal[t.id], "projects": counts.get(t.id, 0)} for t, r in rows]


def user_names(s: Session, user_ids) -> dict[int, str]:
    ids = [i for i in set(user_ids) if i is not None]
    if not ids:
        return {}
    return dict(s.execute(select(User.id, User.name).where(User.id.in_(ids))).all())


_MEMBERS = (select(User, Membership).join(Membership, Membership.user_id == User.id)
            .where(Membership.team_id == bindparam("team_id")).order_by(
                case((Membership.role == "owner", 0), (Membership.role == "administrator", 1), else_=2),
                User.name))


def members(s: Session, team: Team) -> list[tuple[User, Membership]]:
    return [tuple(r) for r in s.execute(_MEMBERS, {"team_id": team.id}).all()]


def create_team(svc: Services, actor: Actor, name: str, owner: str | None = None) -> str:
    """A new (non-personal) team owned by the actor, or by user ``owner`` (``slipway team create
    --owner``; the CLI's operator, id 0, is no user: without ``owner`` its team has no owner).
    Its Slurm account is created by the reconciler's account convergence (no Slurm call from
    the web process)."""
    try:
        name = ig.validate_name((name or "").strip(), "team")
    except ValueError as exc:
        raise OpError(str(exc)) from None
    with svc.db.transaction() as s:
        if s.scalar(select(Team.id).where(Team.name == name)):
            raise OpError(f"team {name!r} exists already", 409)
        now = svc.now()
        t = Team(name=name, personal=False, created_at=now)
        s.add(t)
        s.flush()
        owner_id = actor.id if owner is None else s.scalar(select(User.id).where(User.name == owner))
        if owner is not None and owner_id is None:
            raise OpError(f"there is no user {owner!r}")
        if owner_id:
            s.add(Membership(user_id=owner_id, team_id=t.id, role="owner", created_at=now))
    return name


def delete_team(svc: Services, actor: Actor, team_name: str, confirm: str) -> None:
    """Owner alone (or a cluster admin) deletes a team: its projects, repositories, jobs,
    memberships and ledger. Refused for personal teams and while jobs are active."""
    with svc.db.transaction() as s:
        team, _ = team_access(s, actor, team_name, ROLE_OWNER, "delete the team")
        if (confirm or "").strip() != team.name:
            raise OpError(f"type {team.name} exactly to confirm; nothing was deleted")
        if team.personal:
            raise OpError(f"{team.name} is a personal team; it goes away with its user", 409)
        pids = dict(s.execute(select(Project.id, Project.name).where(Project.team_id == team.id)).all())
        if pids:
            active = list(s.scalars(select(Job.id).where(Job.project_id.in_(list(pids)),
                                                         Job.state.in_(states.ACTIVE))))
            if active:
                raise OpError(f"team {team.name} has active jobs ({', '.join(map(str, active))}); "
                              "cancel them first", 409)
        job_ids = list(s.scalars(select(Job.id).where(Job.project_id.in_(list(pids))))) if pids else []
        repo_ids = list(s.scalars(select(DataRepo.id).where(DataRepo.team_id == team.id)))
        busy = data_repos.bound_by_active_job(s, version_ids=list(s.scalars(
            select(DataVersion.id).where(DataVersion.repo_id.in_(repo_ids))))) if repo_ids else None
        if busy is not None:
            raise OpError(f"job {busy} (of a team it is shared with) binds a data repository of "
                          f"team {team.name} and has not ended; nothing was deleted", 409)
        team_id = team.id
        s.delete(team)
    for name in pids.values():
        svc.git.delete_repo(team_name, name)
    for jid in job_ids:
        shutil.rmtree(runner_spec.job_dir(svc, jid), ignore_errors=True)
    data_repos.remove_team_files(svc, team_id, repo_ids)


def _owner_count(s: Session, team_id: int) -> int:
    return s.scalar(select(func.count(Membership.id)).where(Membership.team_id == team_id,
                                                           Membership.role == "owner")) or 0


def set_member(svc: Services, actor: Actor, team_name: str, username: str, role: str) -> str:
    """Add ``username`` to the team or change their role. Administrators/owners; granting
    ``owner`` or changing an owner's role needs ``owner``; the last owner stays owner."""
    username = (username or "").strip()
    if role not in ROLES:
        raise OpError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    with svc.db.transaction() as s:
        team, my_role = team_access(s, actor, team_name, ROLE_ADMIN, "add or change members")
        user = s.scalar(select(User).where(User.name == username))
        if user is None:
            raise OpError(f"there is no user {username!r} (users appear after their first login "
                          "or `slipway user add`)")
        m = s.scalar(select(Membership).where(Membership.user_id == user.id, Membership.team_id == team.id))
        owner_power = actor.is_cluster_admin or my_role == "owner"
        if (role == "owner" or (m is not None and m.role == "owner")) and not owner_power:
            raise Forbidden("only an owner may grant the owner role or change an owner's membership")
        if m is None:
            s.add(Membership(user_id=user.id, team_id=team.id, role=role, created_at=svc.now()))
            return "added"
        if m.role == "owner" and role != "owner" and _owner_count(s, team.id) <= 1:
            raise OpError(f"{username} is the last owner of {team.name}; make someone else owner first", 409)
        m.role = role
        return "changed"


def remove_member(svc: Services, actor: Actor, team_name: str, username: str) -> None:
    with svc.db.transaction() as s:
        team, my_role = team_access(s, actor, team_name, ROLE_ADMIN, "remove members")
        row = s.execute(select(Membership).join(User, Membership.user_id == User.id)
                        .where(Membership.team_id == team.id, User.name == username)).first()
        if row is None:
            raise OpError(f"{username} is not a member of team {team.name}", 404)
        m = row[0]
        if m.role == "owner":
            if not (actor.is_cluster_admin or my_role == "owner"):
                raise Forbidden("administrators cannot remove an owner")
            if _owner_count(s, team.id) <= 1:
                raise OpError(f"{username} is the last owner of {team.name}; it cannot be removed", 409)
        s.delete(m)
