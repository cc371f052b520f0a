"""Lookups the push hook, a re-run and the git gateway's token check share: a project by its
repository key (``team/project[.git]``), team membership, the active job of a branch."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..db import ACTIVE_STATES, AccessToken, Job, Membership, Project, Team, TeamBalance, User


def _repo_names(repo_key: str) -> tuple[str, str] | None:
    """``team/project[.git]`` -> (team, project); None when it names no project."""
    team_name, sep, project_name = repo_key.partition("/")
    if not sep:
        return None
    return team_name, project_name.removesuffix(".git")


def find_project(session: Session, repo_key: str) -> Project | None:
    names = _repo_names(repo_key)
    if names is None:
        return None
    return session.scalar(
        select(Project).join(Team).where(Team.name == names[0], Project.name == names[1]))


# built once: every git request runs it (two per push), so neither the statement's making nor
# its cache key is paid per request (bound parameters only)
_TOKEN_ACCESS = (
    select(AccessToken.token_hash, User.active, User.is_cluster_admin,
           User.name.label("user_name"), Project.id.label("project_id"),
           Team.name.label("team_name"), Membership.id.label("membership_id"))
    .select_from(AccessToken).join(User, AccessToken.user_id == User.id)
    .outerjoin(Team, Team.name == bindparam("team"))
    .outerjoin(Project, (Project.team_id == Team.id) & (Project.name == bindparam("project")))
    .outerjoin(Membership, (Membership.team_id == Team.id) & (Membership.user_id == User.id))
    .where(User.name == bindparam("user"), AccessToken.prefix == bindparam("prefix"),
           AccessToken.revoked_at.is_(None)))


def token_access(session: Session, repo_key: str, username: str, prefix: str) -> list:
    """``username``'s live tokens starting with ``prefix``, each row with the user (active,
    administrator), and the project of ``repo_key`` (``project_id`` None: no such project), its
    team's name and the user's membership id (None: not a member) -- ONE query. Rows:
    token_hash, active, is_cluster_admin, user_name, project_id, team_name, membership_id."""
    team, project = _repo_names(repo_key) or ("", "")
    if not username or not prefix:
        return []
    return session.connection().execute(_TOKEN_ACCESS, {
        "team": team, "project": project, "user": username, "prefix": prefix}).all()


@dataclass(frozen=True)
class PushFacts:
    """What a push's checks start from, read in one query (``push_facts``)."""
    project: Project
    team: Team
    user: User | None          # None: no such user
    is_member: bool
    balance_micros: int        # the team's running balance (``team_balances``; none: 0)


def push_facts(session: Session, repo_key: str, pusher: str) -> PushFacts | None:
    """The project of ``repo_key`` with its team, the pusher (by name), whether they are a member
    and the team's balance, in ONE query; None when there is no such project."""
    names = _repo_names(repo_key)
    if names is None:
        return None
    row = session.execute(
        select(Project, Team, User, Membership.id, TeamBalance.balance_micros)
        .select_from(Project).join(Team, Project.team_id == Team.id)
        .outerjoin(User, User.name == pusher)
        .outerjoin(Membership, (Membership.team_id == Team.id) & (Membership.user_id == User.id))
        .outerjoin(TeamBalance, TeamBalance.team_id == Team.id)
        .where(Team.name == names[0], Project.name == names[1])).first()
    if row is None:
        return None
    project, team, user, membership, micros = row
    return PushFacts(project, team, user, membership is not None, int(micros or 0))


def active_jobs(session: Session, project_id: int, branches: list[str]) -> dict[str, Job]:
    """The active job of each of ``branches`` that has one, in one query."""
    if not branches:
        return {}
    return {j.branch: j for j in session.scalars(select(Job).where(
        Job.project_id == project_id, Job.branch.in_(branches), Job.state.in_(ACTIVE_STATES)))}


def active_job(session: Session, project_id: int, branch: str) -> Job | None:
    return session.scalar(select(Job).where(
        Job.project_id == project_id, Job.branch == branch, Job.state.in_(ACTIVE_STATES)))


def busy_message(job: Job) -> str:
    return (f"slipway: branch {job.branch} already has job {job.id} {job.state}; "
            f"wait for it or cancel it: slipway job cancel {job.id}")
