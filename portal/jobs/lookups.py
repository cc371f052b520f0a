"""Lookups the push hook, a re-run and the git gateway's token check share: a project by its
repository key (``team/project[.git]``), team membership, the active job of a branch."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import ACTIVE_STATES, Job, Membership, Project, Team, TeamBalance, User


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


def project_access(session: Session, repo_key: str, user_id: int) -> tuple[str, bool] | None:
    """(team name, is ``user_id`` a member of it) for the project of ``repo_key``, in one query;
    None when there is no such project."""
    names = _repo_names(repo_key)
    if names is None:
        return None
    row = session.execute(
        select(Team.name, Membership.id).select_from(Project).join(Team)
        .outerjoin(Membership, (Membership.team_id == Team.id) & (Membership.user_id == user_id))
        .where(Team.name == names[0], Project.name == names[1])).first()
    return None if row is None else (row[0], row[1] is not None)


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
