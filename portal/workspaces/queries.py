"""What the pages, the API and the CLI show of workspaces: one shape (``workspace_dict``)."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select

from ..db import Job, Project, Team, User
from ..jobs import states
from ..services import Services
from ..teams.access import Actor, visible_team_ids
from . import policy
from .service import KIND, _workspace


def gateway_base(svc: Services) -> str:
    """The gateway's public base URL: ``workspace_url`` when configured, else the portal's
    host on the next port (``slipway serve --workspace-port``'s default)."""
    configured = svc.config.workspace_url
    if configured:
        return configured.rstrip("/")
    parts = urlsplit(svc.config.base_url)
    port = (parts.port or (443 if parts.scheme == "https" else 80)) + 1
    return urlunsplit((parts.scheme, f"{parts.hostname}:{port}", "", "", "")).rstrip("/")


def lab_url(svc: Services, job_id: int) -> str:
    return f"{gateway_base(svc)}/workspaces/{int(job_id)}/lab/"


def workspace_dict(svc: Services, job: Job, project: str, team: str, pusher: str | None,
                   pol: policy.Policy | None = None) -> dict:
    # "running" comes with the runner's start report; the node with the reconciler's next look
    running = job.state == states.RUNNING and bool(job.node) and bool(job.port)
    d = {"id": job.id, "team": team, "project": project, "branch": job.branch, "user": pusher,
         "state": job.state, "reason": job.reason, "image": job.image,
         "gpu_type": job.gpu_type, "gpu_count": job.gpu_count, "node": job.node,
         "cost": str(job.cost), "bills_while_open": job.state in states.ACTIVE,
         "started_at": job.started_at.isoformat() if job.started_at else None,
         "ended_at": job.ended_at.isoformat() if job.ended_at else None,
         "stop_reason": job.cancel_reason, "reminded_at": job.reminded_at.isoformat()
         if job.reminded_at else None,
         "last_activity_at": job.last_activity_at.isoformat() if job.last_activity_at else None,
         "url": lab_url(svc, job.id) if running else None, "page": f"/workspaces/{job.id}",
         "output_state": job.output_state, "continue_from": job.continue_from}
    if pol is not None:
        d["policy"] = pol.to_dict()
    return d


def list_workspaces(svc: Services, actor: Actor, team: str | None = None,
                    active_only: bool = False, limit: int = 100) -> list[dict]:
    with svc.db.session() as s:
        team_ids = visible_team_ids(s, actor, team)
        stmt = (select(Job, Project.name, Team.name, User.name)
                .join(Project, Job.project_id == Project.id).join(Team, Project.team_id == Team.id)
                .outerjoin(User, User.id == Job.pusher_id).where(Job.kind == KIND)
                .order_by(Job.id.desc()).limit(limit))
        if team_ids is not None:
            stmt = stmt.where(Project.team_id.in_(team_ids))
        if active_only:
            stmt = stmt.where(Job.state.in_(states.ACTIVE))
        return [workspace_dict(svc, j, p, t, u) for j, p, t, u in s.execute(stmt)]


def show_workspace(svc: Services, actor: Actor, job_id: int) -> dict:
    with svc.db.session() as s:
        job, project, team, _role = _workspace(s, actor, job_id)
        pusher = s.get(User, job.pusher_id).name if job.pusher_id else None
        return workspace_dict(svc, job, project.name, team.name, pusher, policy.effective(s, team.id))
