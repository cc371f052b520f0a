"""The cluster administrators' queue and node actions (``slipway queue``, ``hold``, ``release``,
``requeue``, ``queue top``, ``node list|drain|resume``): each goes to Slurm once, names the
Slipway job, and is recorded in ``policy_events``. The queue listing reads the database
(the reconciler's last poll), never Slurm."""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select

from .. import integrations as ig
from ..db import Job, Project, Team, User
from ..jobs import states
from ..services import Services
from ..teams.access import Actor, NotFound, OpError
from . import events
from .common import require_cluster_admin

_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\[\],-]{0,127}$")


def _job(svc: Services, job_id: int, wanted: tuple[str, ...], verb: str) -> tuple[int, Job]:
    with svc.db.session() as s:
        job = s.get(Job, int(job_id))
        if job is None:
            raise NotFound(f"there is no job {job_id}")
        if job.state not in wanted or job.slurm_job_id is None:
            raise OpError(f"job {job_id} is {job.state}; only a {' or '.join(wanted)} job can be "
                          f"{verb}", 409)
        return job.slurm_job_id, job


def _do(svc: Services, actor: Actor, job_id: int, action: str, wanted: tuple[str, ...],
        verb: str, call) -> str:
    require_cluster_admin(actor, f"only cluster administrators may {action} jobs")
    slurm_id, _job_row = _job(svc, job_id, wanted, verb)
    try:
        result = call(slurm_id)
    except ig.SlurmBridgeError as exc:
        raise OpError(f"Slurm refused to {action} job {job_id}: {exc}", 409) from None
    with svc.db.transaction() as s:
        events.record(s, actor.name, action, f"job {job_id}",
                      f"Slurm job {slurm_id}" + (f": {result}" if result is not None else ""),
                      at=svc.now())
    svc.wake.set()
    return f"job {job_id} (Slurm job {slurm_id}) {verb}" + (
        f": priority {result}" if action == "top" else "")


def hold(svc: Services, actor: Actor, job_id: int) -> str:
    return _do(svc, actor, job_id, "hold", (states.PENDING,), "held", svc.backend.hold)


def release(svc: Services, actor: Actor, job_id: int) -> str:
    return _do(svc, actor, job_id, "release", (states.PENDING,), "released", svc.backend.release)


def requeue(svc: Services, actor: Actor, job_id: int) -> str:
    return _do(svc, actor, job_id, "requeue", (states.RUNNING,), "requeued", svc.backend.requeue)


def top(svc: Services, actor: Actor, job_id: int) -> str:
    """Move a pending job to the front of the queue (Slurm priority above every other)."""
    return _do(svc, actor, job_id, "top", (states.PENDING,), "moved to the front of the queue",
               svc.backend.top)


def node_update(svc: Services, actor: Actor, node: str, state: str, reason: str | None) -> str:
    require_cluster_admin(actor, "only cluster administrators drain or resume nodes")
    if not isinstance(node, str) or not _NODE.match(node):
        raise OpError(f"{str(node)[:70]!r} is not a node name")
    if state not in ("drain", "resume"):
        raise OpError("a node can be drained or resumed")
    reason = (reason or "").strip()
    if state == "drain" and not reason:
        raise OpError("say why the node is drained (--reason), so users and other administrators "
                      "know")
    if len(reason) > 200 or any(c in reason for c in "\n\r\x00"):
        raise OpError("the reason must be one line of at most 200 characters")
    try:
        svc.backend.update_node(node, state, reason or None)
    except ig.SlurmBridgeError as exc:
        raise OpError(f"Slurm refused to {state} {node}: {exc}", 409) from None
    with svc.db.transaction() as s:
        events.record(s, actor.name, state, f"node {node}", reason, at=svc.now())
    return f"node {node} {'drained' if state == 'drain' else 'resumed'}" + (
        f" ({reason})" if reason else "")


def nodes(svc: Services, actor: Actor) -> list[dict]:
    """The nodes as Slurm has them now (one sinfo call: an administrator's command)."""
    require_cluster_admin(actor, "only cluster administrators list nodes")
    out = []
    for n in svc.backend.nodes():
        out.append({"name": n.name, "state": n.state.lower(),
                    "flags": ",".join(f.lower() for f in n.flags), "reason": n.reason,
                    "partitions": ",".join(n.partitions), "cpus": f"{n.alloc_cpus}/{n.cpus}",
                    "gpus": " ".join(f"{t}:{c.allocated}/{c.total}" for t, c in sorted(n.gpus.items()))})
    return out


@dataclass(frozen=True)
class QueueRow:
    job: int
    slurm: int | None
    team: str
    project: str
    branch: str
    user: str
    state: str
    compute: str
    qos: str
    partition: str
    priority: int | None
    position: int | None
    expected_start: str | None
    cost: str
    reason: str


def queue(svc: Services, actor: Actor, *, team: str | None = None, user: str | None = None
          ) -> list[QueueRow]:
    """Every active job (running first, then pending in Slurm's priority order), from the DB."""
    require_cluster_admin(actor, "only cluster administrators see the whole queue")
    with svc.db.session() as s:
        q = (select(Job, Project.name, Team.name, User.name)
             .join(Project, Job.project_id == Project.id).join(Team, Project.team_id == Team.id)
             .outerjoin(User, Job.pusher_id == User.id)
             .where(Job.state.in_(states.ACTIVE)))
        if team:
            q = q.where(Team.name == team)
        if user:
            q = q.where(User.name == user)
        rows = list(s.execute(q))
    order = {states.RUNNING: 0, states.FINISHING: 0, states.UNKNOWN: 1, states.PENDING: 2,
             states.QUEUED: 3}
    rows.sort(key=lambda r: (order.get(r[0].state, 4), -(r[0].priority or 0), r[0].id))
    out, place = [], 0
    for job, project, tname, uname in rows:
        pos = None
        if job.state == states.PENDING:
            place += 1
            pos = place
        compute = f"cpu x{job.gpu_count}" if job.gpu_type == ig.CPU else f"{job.gpu_type} x{job.gpu_count}"
        out.append(QueueRow(job.id, job.slurm_job_id, tname, project, job.branch, uname or "",
                            job.state, compute, job.qos or "normal", job.partition or "",
                            job.priority, pos,
                            job.expected_start_at.isoformat() if job.expected_start_at else None,
                            ig.format_usd(job.cost), job.reason or ""))
    return out


def position(svc: Services, job: Job) -> int | None:
    """A pending job's place in the queue (1 = next), by Slurm's priorities as last polled."""
    if job.state != states.PENDING or job.priority is None:
        return None
    with svc.db.session() as s:
        ahead = s.scalar(select(func.count(Job.id)).where(Job.state == states.PENDING,
                                                          Job.priority > job.priority)) or 0
    return ahead + 1
