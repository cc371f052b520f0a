"""Who may see, bind and change a data repository -- the data domain's part of the one access
rule (portal/teams/access.py).

* see and read (show, download, bind): members of the owning team, members of the teams it is
  shared with, everybody when it is public, cluster administrators. Anybody else is told there
  is no such repository (its existence is not revealed);
* add versions: members of the owning team (any role);
* share, unshare, delete versions or the repository: the owning team's administrators and owners;
* make public or private, set a team's storage quota: cluster administrators.
"""
from __future__ import annotations

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from ..db import DataRepo, DataShare, Membership, Team
from ..teams.access import ROLE_ADMIN, ROLE_ANY, Actor, Forbidden, NotFound, role_in


def _not_found(team_name: str, name: str) -> NotFound:
    return NotFound(f"there is no data repository {team_name}/{name}")


def _find(s: Session, team_name: str, name: str) -> DataRepo | None:
    return s.scalar(select(DataRepo).join(Team, DataRepo.team_id == Team.id)
                    .where(Team.name == team_name, DataRepo.name == name))


def readable_clause(actor: Actor):
    """SQL condition: the actor may read the DataRepo row (for listings)."""
    mine = select(Membership.team_id).where(Membership.user_id == actor.id)
    shared = exists().where(DataShare.repo_id == DataRepo.id, DataShare.team_id.in_(mine))
    return or_(DataRepo.public.is_(True), DataRepo.team_id.in_(mine), shared)


def may_read(s: Session, actor: Actor, repo: DataRepo) -> bool:
    if actor.is_cluster_admin or repo.public:
        return True
    if role_in(s, actor, repo.team_id) is not None:
        return True
    return s.scalar(select(DataShare.repo_id).join(
        Membership, Membership.team_id == DataShare.team_id).where(
        DataShare.repo_id == repo.id, Membership.user_id == actor.id).limit(1)) is not None


def team_may_bind(s: Session, team_id: int, repo: DataRepo) -> bool:
    """A job of team ``team_id`` may bind the repository's versions."""
    if repo.public or repo.team_id == team_id:
        return True
    return s.get(DataShare, (repo.id, team_id)) is not None


def readable_repo(s: Session, actor: Actor, team_name: str, name: str) -> DataRepo:
    repo = _find(s, team_name, name)
    if repo is None or not may_read(s, actor, repo):
        raise _not_found(team_name, name)
    return repo


def owned_repo(s: Session, actor: Actor, team_name: str, name: str,
               roles: tuple[str, ...] = ROLE_ANY, what: str = "change it") -> DataRepo:
    """The repository, for a member of its team with one of ``roles`` (cluster admins pass).
    Readers outside the team are Forbidden; anybody else gets NotFound."""
    repo = readable_repo(s, actor, team_name, name)
    if actor.is_cluster_admin:
        return repo
    role = role_in(s, actor, repo.team_id)
    if role is None or role not in roles:
        need = "administrator or owner of" if roles == ROLE_ADMIN else "a member of"
        raise Forbidden(f"{actor.name} may not {what}: that needs {need} team {team_name}")
    return repo
