"""Turn-taking between teams ("user group polling"): Slurm orders pending jobs by priority, and
a team that queues many jobs at once would otherwise take every free GPU before the next team's
first job. So each pending job's ``nice`` is its place in its own team's queue (0 for the first,
capped at ``turn_rank_cap``) times ``turn_nice_step``: every team's first job comes before any
team's second, and so on. The step equals Slurm's fair-share weight, so fair-share still tilts
the turns (a team far under its share may take two turns in a row; never more than one place
of its rank). Emergency jobs keep nice 0 (their QOS outranks everything anyway).

Set at submission (``initial_nice``) and kept right by the reconciler after each poll
(``keep_turns``: one ``scontrol update JobId=… Nice=N`` per changed place, only when a job
of that team started, ended or was queued)."""
from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Job, Project
from ..jobs import states
from ..services import Services

EMERGENCY_QOS = "emergency"


def nice_for(svc: Services, rank: int) -> int:
    cfg = svc.config
    return min(rank, cfg.turn_rank_cap) * cfg.turn_nice_step


def initial_nice(s: Session, svc: Services, *, team_id: int, job_id: int, qos: str | None) -> int:
    """The nice a job is submitted with: the number of its team's jobs already waiting in Slurm."""
    if svc.config.turn_nice_step == 0 or (qos or "normal") == EMERGENCY_QOS:
        return 0
    ahead = s.connection().execute(_WAITING_AHEAD, {
        "team_id": team_id, "job_id": job_id}).scalar() or 0
    return nice_for(svc, int(ahead))


# built once (every submission asks it): the team's jobs already waiting in Slurm
_WAITING_AHEAD = (select(func.count(Job.id)).join(Project, Job.project_id == Project.id)
                  .where(Project.team_id == bindparam("team_id"), Job.state == states.PENDING,
                         Job.slurm_job_id.is_not(None), Job.id != bindparam("job_id"),
                         Job.qos != EMERGENCY_QOS))


def wanted(svc: Services, s: Session) -> dict[int, int]:
    """Slurm job id -> the nice it should have, for every pending Slipway job."""
    rows = s.execute(select(Job.slurm_job_id, Project.team_id, Job.qos)
                     .join(Project, Job.project_id == Project.id)
                     .where(Job.state == states.PENDING, Job.slurm_job_id.is_not(None))
                     .order_by(Project.team_id, Job.created_at, Job.id))
    out, rank = {}, {}
    for slurm_id, team_id, qos in rows:
        if (qos or "normal") == EMERGENCY_QOS:
            out[slurm_id] = 0
            continue
        r = rank.get(team_id, 0)
        rank[team_id] = r + 1
        out[slurm_id] = nice_for(svc, r)
    return out


def keep_turns(svc: Services, queue: Mapping[int, Any], errors: list[str]) -> int:
    """Renice the pending jobs whose place changed; returns how many jobs were reniced."""
    if svc.config.turn_nice_step == 0:
        return 0
    with svc.db.session() as s:
        want = wanted(svc, s)
    by_nice: dict[int, list[int]] = {}
    for slurm_id, nice in want.items():
        rec = queue.get(slurm_id)
        if rec is None or rec.state != "PENDING" or int(getattr(rec, "nice", 0) or 0) == nice:
            continue
        by_nice.setdefault(nice, []).append(slurm_id)
    n = 0
    for nice, ids in sorted(by_nice.items()):
        try:
            svc.backend.set_nice(sorted(ids), nice)
            n += len(ids)
        except ig.SlurmBridgeError as exc:
            errors.append(f"turn-taking: could not set nice {nice} on {len(ids)} jobs: {exc}")
    return n
