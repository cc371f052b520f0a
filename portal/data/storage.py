"""What the data domain stores, as storage samples for billing ($/GB-month by the minute,
``accounting.storage``): one resource per data version (``data:TEAM/NAME:N``) and per kept job
output (``output:job/N``).

Within one repository a file content (sha256) is stored once, so it is billed once: to the
lowest-numbered version that holds it (deleting that version moves it to the next one).
A deleted version or output is billed up to the minute it goes (``bill_final``, called before
its rows are removed); after that no sample names it and its charges stop.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import select

from .. import integrations as ig
from ..db import DataFile, DataRepo, DataVersion, Job, Project, Team
from ..services import Services


def version_resource(team: str, repo: str, number: int) -> str:
    return f"data:{team}/{repo}:{number}"


def output_resource(job_id: int) -> str:
    return f"output:job/{job_id}"


def billed_version_bytes(s, repo_ids: list[int] | None = None) -> dict[int, int]:
    """version id -> bytes billed to it (each distinct content of a repository once, to the
    lowest-numbered version holding it)."""
    stmt = (select(DataVersion.repo_id, DataVersion.number, DataVersion.id, DataFile.sha256,
                   DataFile.size)
            .join(DataFile, DataFile.version_id == DataVersion.id)
            .order_by(DataVersion.repo_id, DataVersion.number))
    if repo_ids is not None:
        stmt = stmt.where(DataVersion.repo_id.in_(repo_ids))
    out: dict[int, int] = defaultdict(int)
    seen: dict[int, set[str]] = defaultdict(set)
    for repo_id, _number, vid, sha, size in s.execute(stmt):
        if sha in seen[repo_id]:
            continue
        seen[repo_id].add(sha)
        out[vid] += size
    return out


def version_samples(s, repo_ids: list[int] | None = None, only_version_ids=None) -> list:
    billed = billed_version_bytes(s, repo_ids)
    stmt = (select(DataVersion.id, DataVersion.number, DataVersion.created_at, DataRepo.name,
                   Team.name).join(DataRepo, DataVersion.repo_id == DataRepo.id)
            .join(Team, DataRepo.team_id == Team.id))
    if repo_ids is not None:
        stmt = stmt.where(DataVersion.repo_id.in_(repo_ids))
    out = []
    for vid, number, created, repo, team in s.execute(stmt):
        if only_version_ids is not None and vid not in only_version_ids:
            continue
        out.append(ig.storage_sample(team, version_resource(team, repo, number),
                                     billed.get(vid, 0), created))
    return out


def output_samples(s, job_ids: list[int] | None = None) -> list:
    stmt = (select(Job.id, Job.output_bytes, Job.started_at, Job.output_kept_at, Team.name)
            .join(Project, Job.project_id == Project.id).join(Team, Project.team_id == Team.id)
            .where(Job.output_state == "kept"))
    if job_ids is not None:
        stmt = stmt.where(Job.id.in_(job_ids))
    return [ig.storage_sample(team, output_resource(jid), size or 0, started or kept)
            for jid, size, started, kept, team in s.execute(stmt) if (started or kept)]


def samples(svc: Services) -> list:
    """Every data version and kept output, for the reconciler's storage tick."""
    with svc.db.session() as s:
        return version_samples(s) + output_samples(s)


def bill_final(svc: Services, final_samples: list, now: datetime | None = None) -> int:
    """Bill ``final_samples`` (of things about to be deleted) up to this minute; returns the
    number of charges written. Call it outside any write transaction, before the delete."""
    if not final_samples:
        return 0
    from ..billing import ledger as billing
    biller = ig.make_biller(billing.DbLedgerStore(svc.db), svc.config)
    return len(biller.tick_storage(final_samples, now or svc.now()).appended)
