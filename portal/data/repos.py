"""Data repositories: create, list, show, share, public/private, delete (the service layer)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..db import ACTIVE_STATES, DataRepo, DataShare, DataVersion, Job, JobInput, Team
from ..services import Services, log
from ..teams.access import ROLE_ADMIN, ROLE_ANY, Actor, Forbidden, NotFound, OpError, role_in, \
    team_access
from . import gates
from .access import owned_repo, readable_clause, readable_repo
from .names import check_kind, check_repo_name
from .present import repo_dict


def _store(svc: Services):
    from .store import DataStore
    return DataStore.for_services(svc)


def _shared_with(s, repo: DataRepo) -> list[str]:
    return list(s.scalars(select(Team.name).join(DataShare, DataShare.team_id == Team.id)
                          .where(DataShare.repo_id == repo.id).order_by(Team.name)))


def _dict(s, actor: Actor, repo: DataRepo) -> dict:
    team = repo.team.name
    admin = actor.is_cluster_admin or role_in(s, actor, repo.team_id) in ROLE_ADMIN
    return repo_dict(repo, team, shared_with=_shared_with(s, repo) if admin else None,
                     size_bytes=repo_bytes(s, repo.id))


def repo_bytes(s, repo_id: int) -> int:
    """Bytes the repository stores: each distinct file content once."""
    from ..db import DataFile
    rows = s.execute(select(DataFile.sha256, DataFile.size).join(
        DataVersion, DataFile.version_id == DataVersion.id).where(
        DataVersion.repo_id == repo_id).distinct()).all()
    return sum(size for _sha, size in rows)


def create_repo(svc: Services, actor: Actor, team: str, name: str, kind: str,
                description: str = "") -> dict:
    name = check_repo_name((name or "").strip() if isinstance(name, str) else name)
    kind = check_kind(kind)
    if not isinstance(description, str) or len(description) > 2000:
        raise OpError("description must be text of at most 2000 characters")
    try:
        with svc.db.transaction() as s:
            t, _ = team_access(s, actor, team, ROLE_ANY, "create data repositories")
            if s.scalar(select(DataRepo.id).where(DataRepo.team_id == t.id, DataRepo.name == name)):
                raise OpError(f"data repository {t.name}/{name} exists already", 409)
            repo = DataRepo(team_id=t.id, name=name, kind=kind, public=False,
                            description=description.strip(), created_by=actor.name,
                            created_at=svc.now(), next_version=1)
            s.add(repo)
            s.flush()
            _store(svc).ensure_repo(repo.id)
            out = repo_dict(repo, t.name, shared_with=[], versions=[], size_bytes=0)
            repo_id = repo.id
    except IntegrityError:
        raise OpError(f"data repository {team}/{name} exists already", 409) from None
    gates.sync_repo(svc, repo_id)
    return out


def list_repos(svc: Services, actor: Actor, team: str | None = None) -> list[dict]:
    with svc.db.session() as s:
        stmt = select(DataRepo).join(Team, DataRepo.team_id == Team.id).order_by(Team.name, DataRepo.name)
        if team:
            t = s.scalar(select(Team).where(Team.name == team))
            if t is None:
                raise NotFound(f"there is no team {team!r}")
            stmt = stmt.where(DataRepo.team_id == t.id)
        if not actor.is_cluster_admin:
            stmt = stmt.where(readable_clause(actor))
        return [_dict(s, actor, r) for r in s.scalars(stmt)]


def show_repo(svc: Services, actor: Actor, team: str, name: str) -> dict:
    with svc.db.session() as s:
        return _dict(s, actor, readable_repo(s, actor, team, name))


def share_repo(svc: Services, actor: Actor, team: str, name: str, other_team: str) -> dict:
    with svc.db.transaction() as s:
        repo = owned_repo(s, actor, team, name, ROLE_ADMIN, "share data repositories")
        other = s.scalar(select(Team).where(Team.name == (other_team or "").strip()))
        if other is None:
            raise NotFound(f"there is no team {other_team!r}")
        if other.id == repo.team_id:
            raise OpError(f"{team}/{name} belongs to team {team} already")
        if s.get(DataShare, (repo.id, other.id)) is None:
            s.add(DataShare(repo_id=repo.id, team_id=other.id, created_by=actor.name,
                            created_at=svc.now()))
            s.flush()
        out, repo_id = _dict(s, actor, repo), repo.id
    gates.sync_repo(svc, repo_id)
    return out


def unshare_repo(svc: Services, actor: Actor, team: str, name: str, other_team: str) -> dict:
    with svc.db.transaction() as s:
        repo = owned_repo(s, actor, team, name, ROLE_ADMIN, "share data repositories")
        other = s.scalar(select(Team).where(Team.name == (other_team or "").strip()))
        share = s.get(DataShare, (repo.id, other.id)) if other is not None else None
        if share is None:
            raise NotFound(f"{team}/{name} is not shared with {other_team!r}")
        s.delete(share)
        s.flush()
        out, repo_id = _dict(s, actor, repo), repo.id
    gates.sync_repo(svc, repo_id)
    return out


def set_public(svc: Services, actor: Actor, team: str, name: str, public: bool) -> dict:
    if not isinstance(public, bool):
        raise OpError("public must be true or false")
    with svc.db.transaction() as s:
        repo = readable_repo(s, actor, team, name)
        if not actor.is_cluster_admin:
            raise Forbidden("only cluster administrators make data repositories public or private")
        repo.public = public
        s.flush()
        out, repo_id = _dict(s, actor, repo), repo.id
    gates.sync_repo(svc, repo_id)
    return out


def bound_by_active_job(s, *, version_ids=(), source_job_id: int | None = None) -> int | None:
    """The id of a queued or running job that binds one of these versions (or that output)."""
    stmt = select(JobInput.job_id).join(Job, Job.id == JobInput.job_id).where(
        Job.state.in_(ACTIVE_STATES))
    if source_job_id is not None:
        stmt = stmt.where(JobInput.source_job_id == source_job_id)
    else:
        if not version_ids:
            return None
        stmt = stmt.where(JobInput.version_id.in_(list(version_ids)))
    return s.scalar(stmt.order_by(JobInput.job_id).limit(1))


def delete_repo(svc: Services, actor: Actor, team: str, name: str, confirm: str) -> dict:
    from . import storage
    with svc.db.session() as s:   # checks, then its last minutes billed, then the delete
        repo = owned_repo(s, actor, team, name, ROLE_ADMIN, "delete data repositories")
        if (confirm or "").strip() != name:
            raise OpError(f"type the repository's name ({name}) to confirm; deleting it is "
                          "irreversible")
        _refuse_if_bound(s, team, name, [v.id for v in repo.versions])
        final = storage.version_samples(s, [repo.id])
    storage.bill_final(svc, final)
    with svc.db.transaction() as s:
        repo = owned_repo(s, actor, team, name, ROLE_ADMIN, "delete data repositories")
        _refuse_if_bound(s, team, name, [v.id for v in repo.versions])
        repo_id, numbers = repo.id, [v.number for v in repo.versions]
        s.delete(repo)
    try:
        _store(svc).remove_repo(repo_id)
    except OSError as exc:   # the rows are gone; the bytes are unreachable and left to clean up
        log.warning("data repository %s/%s: removing its files failed: %s", team, name, exc)
    return {"ok": True, "deleted": f"{team}/{name}", "versions": numbers}


def _refuse_if_bound(s, team: str, name: str, version_ids: list[int]) -> None:
    busy = bound_by_active_job(s, version_ids=version_ids)
    if busy is not None:
        raise OpError(f"job {busy} binds {team}/{name} and has not ended; cancel it or wait, "
                      "then delete", 409)


def remove_team_files(svc: Services, team_id: int, repo_ids: list[int]) -> None:
    """A deleted team's data on disk: its repositories and its kept outputs."""
    from .trees import make_writable_and_remove
    store = _store(svc)
    for path in [store.repo_dir(rid) for rid in repo_ids] + [store.outputs_root / str(int(team_id))]:
        try:
            make_writable_and_remove(path)
        except OSError as exc:
            log.warning("removing %s of a deleted team failed: %s", path, exc)
