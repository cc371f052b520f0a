"""Who may do what: the one access rule of every front door (a non-member gets "not found"
everywhere; a member without the role gets "forbidden"), and the service layer's errors."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..db import Job, Membership, Project, Team

ROLE_ANY = ("user", "administrator", "owner")
ROLE_ADMIN = ("administrator", "owner")
ROLE_OWNER = ("owner",)
ROLES = ROLE_ANY


class OpError(Exception):
    """A refused operation. ``status``: 400 (bad input), 403, 404, 409 (conflict)."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFound(OpError):
    status = 404


class Forbidden(OpError):
    status = 403


@dataclass(frozen=True)
class Actor:
    """Who is acting (a logged-in user or a token's user)."""

    id: int
    name: str
    is_cluster_admin: bool = False


def role_in(s: Session, actor: Actor, team_id: int) -> str | None:
    return s.scalar(select(Membership.role).where(Membership.user_id == actor.id,
                                                  Membership.team_id == team_id))


# team and the actor's role in one query (built once: see "Job pages" below)
_TEAM_AND_ROLE = (select(Team, Membership.role)
                  .outerjoin(Membership, (Membership.team_id == Team.id)
                             & (Membership.user_id == bindparam("user_id")))
                  .where(Team.name == bindparam("team_name")))


def team_access(s: Session, actor: Actor, team_name: str, roles: tuple[str, ...] = ROLE_ANY,
                what: str = "do that") -> tuple[Team, str | None]:
    """(team, actor's role). Non-members: NotFound (existence is not revealed); members lacking
    ``roles``: Forbidden. Cluster admins pass (role may be None)."""
    row = s.execute(_TEAM_AND_ROLE, {"user_id": actor.id, "team_name": team_name}).first()
    if row is None:
        raise NotFound(f"there is no team {team_name!r}")
    team, role = row
    if actor.is_cluster_admin:
        return team, role
    if role is None:
        raise NotFound(f"there is no team {team_name!r}")
    if role not in roles:
        raise Forbidden(f"{actor.name} may not {what} in team {team.name} "
                        f"(needs role: {' or '.join(roles)})")
    return team, role


def project_access(s: Session, actor: Actor, team_name: str, project_name: str,
                   roles: tuple[str, ...] = ROLE_ANY, what: str = "do that") -> tuple[Project, str | None]:
    try:
        team, role = team_access(s, actor, team_name, ROLE_ANY)
    except NotFound:
        raise NotFound(f"there is no project {team_name}/{project_name}") from None
    project = s.scalar(select(Project).where(Project.team_id == team.id, Project.name == project_name))
    if project is None:
        raise NotFound(f"there is no project {team_name}/{project_name}")
    if not actor.is_cluster_admin and role not in roles:
        raise Forbidden(f"{actor.name} may not {what} in team {team.name} "
                        f"(needs role: {' or '.join(roles)})")
    return project, role


def job_access(s: Session, actor: Actor, job_id: int) -> tuple[Job, Project, Team, str | None]:
    row = s.execute(select(Job, Project, Team).join(Project, Job.project_id == Project.id)
                    .join(Team, Project.team_id == Team.id).where(Job.id == job_id)).first()
    if row is None:
        raise NotFound(f"there is no job {job_id}")
    job, project, team = row
    role = role_in(s, actor, team.id)
    if role is None and not actor.is_cluster_admin:
        raise NotFound(f"there is no job {job_id}")
    return job, project, team, role


def can_cancel(actor: Actor, job: Job, role: str | None) -> bool:
    """Any member of the job's team (``role`` from ``job_access``) and cluster admins."""
    return actor.is_cluster_admin or role in ROLE_ANY


def my_team_names(s: Session, actor: Actor) -> list[str]:
    return list(s.scalars(select(Team.name).join(Membership, Membership.team_id == Team.id)
                          .where(Membership.user_id == actor.id).order_by(Team.name)))


def my_team_pairs(s: Session, actor: Actor) -> list[tuple[int, str]]:
    """[(team id, team name)] of the actor's teams, by name — one query for both lists."""
    return [tuple(r) for r in s.execute(_MY_TEAM_PAIRS, {"user_id": actor.id})]


_MY_TEAM_PAIRS = (select(Team.id, Team.name).join(Membership, Membership.team_id == Team.id)
                  .where(Membership.user_id == bindparam("user_id")).order_by(Team.name))


def my_team_ids(s: Session, actor: Actor) -> list[int]:
    return list(s.scalars(select(Membership.team_id).where(Membership.user_id == actor.id)))


def visible_team_ids(s: Session, actor: Actor, team_name: str | None = None) -> list[int] | None:
    """The teams a listing covers: the named team (access checked), else the actor's teams;
    None = every team (cluster admins, no team named)."""
    if team_name:
        return [team_access(s, actor, team_name)[0].id]
    return None if actor.is_cluster_admin else my_team_ids(s, actor)
