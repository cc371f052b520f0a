"""Quotas: at most so many GPUs of a type, cores, running jobs and open workspaces at once, per
team and per user inside a team. Set by cluster administrators (team administrators may set
their members' quotas within the team's); enforced by Slurm through the associations the account
sync converges (GrpTRES, GrpJobs), so they hold for jobs submitted outside Slipway too;
``workspaces`` is Slipway's own check when a workspace starts."""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from slurm_bridge.sync import Limits

from ..config import Config
from ..db import Job, Membership, Project, Quota, Team, User
from ..jobs import states
from ..services import Services
from ..teams.access import ROLE_ADMIN, Actor, Forbidden, OpError, role_in
from . import events
from .common import team_named, user_named, whole_number

_GPU = re.compile(r"^gpu:([a-z0-9][a-z0-9_.-]{0,31})$")
RESOURCES_HELP = "gpu:TYPE (GPUs of a type at once), cpu (cores), jobs (running jobs), workspaces"
MAXIMA = {"gpu": 100_000, "cpu": 10_000_000, "jobs": 1_000_000, "workspaces": 10_000}


def check_resource(cfg: Config, resource: object) -> str:
    text = str(resource or "").strip().lower()
    m = _GPU.match(text)
    if m:
        if m.group(1) not in cfg.gpu_limits:
            raise OpError(f"unknown GPU type {m.group(1)!r} in quota; known types: "
                          f"{', '.join(sorted(cfg.gpu_limits))}")
        return text
    if text in ("cpu", "cpus", "cores"):
        return "cpu"
    if text in ("jobs", "workspaces"):
        return text
    raise OpError(f"unknown quota {str(resource)[:40]!r}; quotas: {RESOURCES_HELP}")


def _maximum(resource: str) -> int:
    return MAXIMA["gpu" if resource.startswith("gpu:") else resource]


def describe(resource: str, value: int) -> str:
    """``gpu:a4000``, 4 → "4 a4000 GPUs"."""
    if resource.startswith("gpu:"):
        return f"{value} {resource[4:]} GPU{'s' if value != 1 else ''}"
    return {"cpu": f"{value} core{'s' if value != 1 else ''}",
            "jobs": f"{value} running job{'s' if value != 1 else ''}",
            "workspaces": f"{value} open workspace{'s' if value != 1 else ''}"}[resource]


def _row(s: Session, team_id: int, user_id: int | None, resource: str) -> Quota | None:
    return s.scalar(select(Quota).where(Quota.team_id == team_id, Quota.resource == resource,
                                        Quota.user_id.is_(None) if user_id is None
                                        else Quota.user_id == user_id))


def quota_value(s: Session, team_id: int, user_id: int | None, resource: str) -> int | None:
    row = _row(s, team_id, user_id, resource)
    return None if row is None else row.value


def quota_values(s: Session, team_id: int, user_id: int | None) -> dict[tuple[int | None, str], int]:
    """Every quota of team ``team_id`` and of ``user_id`` in it, in one query:
    ``{(user id or None for the team's own, resource): value}``."""
    who = Quota.user_id.is_(None) if user_id is None else \
        (Quota.user_id.is_(None) | (Quota.user_id == user_id))
    return {(uid, res): value for uid, res, value in s.execute(
        select(Quota.user_id, Quota.resource, Quota.value).where(Quota.team_id == team_id, who))}


def set_quota(svc: Services, actor: Actor, *, team: str, resource: str, value: object,
              user: str | None = None) -> dict:
    """Set (``value`` a whole number) or remove (``value`` None/"none") one quota. Cluster
    administrators set any; a team's administrators set their members' quotas, never above
    the team's own. The change reaches Slurm at the next account sync (the caller may run it)."""
    res = check_resource(svc.config, resource)
    remove = value is None or (isinstance(value, str) and value.strip().lower() in ("none", "-"))
    amount = None if remove else whole_number(value, f"quota {res}", 0, _maximum(res))
    with svc.db.transaction() as s:
        t = team_named(s, team)
        u = user_named(s, user) if user else None
        if not actor.is_cluster_admin:
            if u is None or role_in(s, actor, t.id) not in ROLE_ADMIN:
                raise Forbidden("only cluster administrators set team quotas; team administrators "
                                "set their members' quotas within the team's")
            team_cap = quota_value(s, t.id, None, res)
            if amount is not None and team_cap is not None and amount > team_cap:
                raise OpError(f"team {t.name}'s own quota is {describe(res, team_cap)}; a member's "
                              f"cannot be higher")
        if u is not None and s.scalar(select(Membership.id).where(
                Membership.team_id == t.id, Membership.user_id == u.id)) is None:
            raise OpError(f"{u.name} is not a member of team {t.name}")
        row = _row(s, t.id, u.id if u else None, res)
        if remove:
            if row is not None:
                s.delete(row)
        else:
            if row is None:
                row = Quota(team_id=t.id, user_id=u.id if u else None, resource=res, value=amount)
                s.add(row)
            row.value, row.updated_by, row.updated_at = amount, actor.name, svc.now()
        who = f"{u.name} in team {t.name}" if u else f"team {t.name}"
        events.record(s, actor.name, "quota", who,
                      f"{res}: {'no quota' if remove else describe(res, amount)}", at=svc.now())
    return {"team": team, "user": user, "resource": res, "value": amount}


@dataclass(frozen=True)
class QuotaRow:
    team: str
    user: str | None
    resource: str
    value: int


def quotas_of_team(svc: Services, team_name: str) -> list[QuotaRow]:
    with svc.db.session() as s:
        t = team_named(s, team_name)
        rows = s.execute(select(Quota, User.name).outerjoin(User, Quota.user_id == User.id)
                         .where(Quota.team_id == t.id).order_by(User.name, Quota.resource))
        return [QuotaRow(t.name, uname, q.resource, q.value) for q, uname in rows]


def all_quotas(s: Session) -> list[QuotaRow]:
    rows = s.execute(select(Quota, Team.name, User.name).join(Team, Quota.team_id == Team.id)
                     .outerjoin(User, Quota.user_id == User.id)
                     .order_by(Team.name, User.name, Quota.resource))
    return [QuotaRow(tname, uname, q.resource, q.value) for q, tname, uname in rows]


def _limits(pairs: list[tuple[str, int]]) -> Limits:
    tres, jobs = {}, None
    for res, value in pairs:
        if res.startswith("gpu:") and res.endswith("-shard"):
            tres["gres/shard"] = value   # shards are one TRES in Slurm (docs/SHARING.md)
        elif res.startswith("gpu:"):
            tres[f"gres/gpu:{res[4:]}"] = value
        elif res == "cpu":
            tres["cpu"] = value
        elif res == "jobs":
            jobs = value
    return Limits(grp_tres=tres, grp_jobs=jobs)


def limits_for_sync(s: Session, cfg: Config) -> tuple[dict[str, Limits], dict[tuple[str, str], Limits]]:
    """Slurm's association limits from the quotas: per account (teams) and per (Unix user,
    account) (members). ``workspaces`` is not Slurm's."""
    per_team: dict[str, list] = {}
    per_user: dict[tuple[str, str], list] = {}
    rows = s.execute(select(Quota, Team.name, User.unix_user).join(Team, Quota.team_id == Team.id)
                     .outerjoin(User, Quota.user_id == User.id))
    for q, tname, unix in rows:
        account = cfg.slurm_account(tname)
        if q.user_id is None:
            per_team.setdefault(account, []).append((q.resource, q.value))
        elif unix:
            per_user.setdefault((unix, account), []).append((q.resource, q.value))
    return ({a: _limits(p) for a, p in per_team.items()},
            {k: _limits(p) for k, p in per_user.items()})


def workspace_quota_problems(s: Session, team: Team, user_id: int, user_name: str) -> list[str]:
    """The ``workspaces`` quotas (Slipway's own check): open workspaces of the user in the team,
    and of the whole team."""
    out = []
    base = (select(func.count(Job.id)).join(Project, Job.project_id == Project.id)
            .where(Project.team_id == team.id, Job.kind == "workspace",
                   Job.state.in_(states.ACTIVE)))
    for uid, who in ((user_id, f"{user_name} in team {team.name}"), (None, f"team {team.name}")):
        limit = quota_value(s, team.id, uid, "workspaces")
        if limit is None:
            continue
        q = base.where(Job.pusher_id == uid) if uid is not None else base
        have = s.scalar(q) or 0
        if have >= limit:
            out.append(f"slipway: {who} has {have} open workspace(s), its quota is {limit}; "
                       f"stop one first")
    return out
