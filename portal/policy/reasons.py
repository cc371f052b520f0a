"""Why a job waits, in words: Slurm's pending reason codes (squeue ``%r``) → a sentence that
names the team, the quota and what uses it ("team vision uses 4 of its 4 a4000 GPUs"), from the
database alone (quotas, and the team's running jobs as the reconciler last saw them)."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Job, Project, Team, User
from ..jobs import states
from .quotas import quota_value

RUNNING = (states.RUNNING, states.FINISHING)

_SIMPLE = {
    "Priority": "jobs with a higher priority are ahead of it",
    "Resources": "no node has the GPUs, cores or memory it needs free yet",
    "BeginTime": "requeued; it starts again shortly",
    "JobHeldAdmin": "held by a cluster administrator (slipway release)",
    "JobHeldUser": "held (slipway release)",
    "Dependency": "the jobs it depends on have not ended",
    "ReqNodeNotAvail": "the nodes it needs are not available (drained or down)",
    "PartitionTimeLimit": "its time limit is longer than its partition allows",
    "PartitionNodeLimit": "it asks for more nodes than its partition has",
    "PartitionDown": "its partition is down",
    "PartitionInactive": "its partition is inactive",
    "NodeDown": "a node it needs is down",
    "QOSGrpGRES": "the QOS's GPUs are all in use",
    "QOSMaxGRESPerUser": "the user uses every GPU the QOS allows",
    "InvalidAccount": "its team's account is not in Slurm yet (Slipway is creating it)",
    "InvalidQOS": "its QOS is not allowed for this user any more",
    "AssocGrpBillingMinutes": ("the team's balance is spent (Slurm holds a copy of it and starts "
                               "nothing more); add funds"),
    "AssocGrpBilling": "the team's balance is spent (Slurm holds a copy of it); add funds",
}


def _in_use(s: Session, team_id: int, user_id: int | None) -> tuple[dict[str, int], int, int]:
    """(GPUs by type, cores, jobs) the team's (or the user's, in it) running jobs hold."""
    q = (select(Job.gpu_type, func.sum(Job.gpu_count), func.sum(Job.cpus), func.count(Job.id))
         .join(Project, Job.project_id == Project.id)
         .where(Project.team_id == team_id, Job.state.in_(RUNNING)).group_by(Job.gpu_type))
    if user_id is not None:
        q = q.where(Job.pusher_id == user_id)
    gpus, cores, jobs = {}, 0, 0
    for gpu_type, count, cpus, n in s.execute(q):
        if gpu_type == ig.CPU:
            cores += int(count or 0)
        else:
            gpus[gpu_type] = int(count or 0)
            cores += int(cpus or 0)
        jobs += int(n or 0)
    return gpus, cores, jobs


def _who(s: Session, team: Team, user_id: int | None) -> str:
    if user_id is None:
        return f"team {team.name}"
    name = s.scalar(select(User.name).where(User.id == user_id)) or "its pusher"
    return f"{name} (in team {team.name})"


QUOTA_CODES = frozenset({"AssocGrpGRES", "AssocMaxGRESPerJob", "AssocGrpGRESRunMinutes",
                         "AssocGrpCpuLimit", "AssocGrpJobsLimit", "AssocMaxJobsLimit"})


def explain(s: Session, job: Job, code: str, cache: dict | None = None) -> str | None:
    """Words for ``code`` (None: not waiting). Quota codes name the tightest full quota; their
    words are the same for every job of one pusher, team and GPU type, so a tick passes one
    ``cache`` for all its pending jobs (a few queries per such group, not per job)."""
    code = (code or "").strip()
    if code in ("", "None"):
        return None
    if code in QUOTA_CODES:
        key = (job.project.team_id, job.pusher_id, job.gpu_type, code)
        if cache is None or key not in cache:
            words = _quota_words(s, job, job.project.team, code)
            if cache is None:
                return words or _SIMPLE.get(code, f"Slurm says {code}")
            cache[key] = words
        if cache[key]:
            return cache[key]
    if code in _SIMPLE:
        return _SIMPLE[code]
    return f"Slurm says {code}"


def _quota_words(s: Session, job: Job, team: Team, code: str) -> str | None:
    resource = ("jobs" if "Jobs" in code else "cpu" if "Cpu" in code
                else f"gpu:{job.gpu_type}")
    for uid in dict.fromkeys((job.pusher_id, None)):   # the user's own quota, then the team's
        limit = quota_value(s, team.id, uid, resource)
        if limit is None:
            continue
        gpus, cores, jobs = _in_use(s, team.id, uid)
        used = jobs if resource == "jobs" else cores if resource == "cpu" else gpus.get(job.gpu_type, 0)
        if used < limit and uid is not None:
            continue
        who = _who(s, team, uid)
        own = "its" if uid is None else "their"
        if resource == "jobs":
            return f"{who} runs {used} of {own} {limit} jobs at once"
        if resource == "cpu":
            return f"{who} uses {used} of {own} {limit} cores"
        return f"{who} uses {used} of {own} {limit} {job.gpu_type} GPUs"
    return None
