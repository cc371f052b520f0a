"""A data repository's versions: made (``add_version``, the one way: uploads and job outputs
both come here), shown, downloaded (one file, or the whole version as a streamed tar) and
deleted — the service layer. Versions are immutable; their numbers are never reused."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from sqlalchemy import select

from ..db import DataFile, DataRepo, DataUpload, DataVersion
from ..services import Services, log
from ..teams.access import ROLE_ADMIN, Actor, NotFound, OpError
from .access import owned_repo, readable_repo
from .manifest import check_tree
from .names import check_rel_path, check_sha256, parse_version
from .present import version_dict
from .store import DataStore


def _store(svc: Services) -> DataStore:
    return DataStore.for_services(svc)


def find_version(s, repo: DataRepo, team: str, number: int | None) -> DataVersion:
    """Version ``number`` of the repository (None: the newest); NotFound otherwise."""
    stmt = select(DataVersion).where(DataVersion.repo_id == repo.id)
    if number is None:
        v = s.scalar(stmt.order_by(DataVersion.number.desc()).limit(1))
        if v is None:
            raise NotFound(f"{team}/{repo.name} has no versions yet")
        return v
    v = s.scalar(stmt.where(DataVersion.number == number))
    if v is None:
        raise NotFound(f"{team}/{repo.name} has no version {number}")
    return v


def version_shas(s, repo_id: int) -> set[str]:
    """The contents the repository's versions hold."""
    return set(s.scalars(select(DataFile.sha256).join(
        DataVersion, DataFile.version_id == DataVersion.id).where(
        DataVersion.repo_id == repo_id).distinct()))


def kept_shas(s, repo_id: int) -> set[str]:
    """The objects a repository still needs: those of its versions and of its open uploads."""
    keep = version_shas(s, repo_id)
    for text in s.scalars(select(DataUpload.manifest).where(DataUpload.repo_id == repo_id,
                                                            DataUpload.state == "open")):
        keep.update(e["sha256"] for e in json.loads(text))
    return keep


def add_version(s, svc: Services, repo: DataRepo, files, created_by: str | None, source: str,
                source_job_id: int | None = None) -> DataVersion:
    """The next version of ``repo`` made of ``files`` [(path, sha256, size)] whose objects are
    in the store: its read-only tree is built on disk (renamed into place whole), then its rows
    are added in the caller's transaction ``s`` (flushed, not committed)."""
    files = sorted((check_rel_path(p), check_sha256(sha), int(size)) for p, sha, size in files)
    if not files:
        raise OpError("a version needs at least one file")
    check_tree([p for p, _sha, _n in files])
    store = _store(svc)
    absent = sorted({sha for _p, sha, _n in files if not store.has_object(repo.id, sha)})
    if absent:
        raise OpError(f"{len(absent)} file content(s) of the new version are not stored (e.g. "
                      f"{absent[0][:12]}…); send them again", 409)
    number = repo.next_version or 1
    # A tree left by a version whose transaction never committed has this (unused) number.
    store.remove_version(repo.id, number)
    try:
        store.build_version(repo.id, number, [(p, sha) for p, sha, _n in files])
    except FileNotFoundError:
        raise OpError("a file content of the new version went away meanwhile (deleted with "
                      "another version); try again", 409) from None
    v = DataVersion(repo_id=repo.id, number=number, size_bytes=sum(n for _p, _s, n in files),
                    file_count=len(files), created_by=created_by, created_at=svc.now(),
                    source=source, source_job_id=source_job_id)
    s.add(v)
    s.flush()
    s.add_all([DataFile(version_id=v.id, path=p, sha256=sha, size=n) for p, sha, n in files])
    repo.next_version = number + 1
    s.flush()
    return v


def _number(version) -> int | None:
    return parse_version(version)


def show_version(svc: Services, actor: Actor, team: str, name: str, version) -> dict:
    with svc.db.session() as s:
        repo = readable_repo(s, actor, team, name)
        v = find_version(s, repo, team, _number(version))
        return version_dict(v, repo, repo.team.name, files=True)


def version_file(svc: Services, actor: Actor, team: str, name: str, version,
                 path: str) -> tuple[Path, int, str]:
    """(path on disk, size, file name) of one file of a version, for streaming."""
    rel = check_rel_path(path)
    with svc.db.session() as s:
        repo = readable_repo(s, actor, team, name)
        v = find_version(s, repo, team, _number(version))
        ref = f"{repo.team.name}/{repo.name}:{v.number}"
        if s.scalar(select(DataFile.id).where(DataFile.version_id == v.id,
                                              DataFile.path == rel)) is None:
            raise NotFound(f"{ref} has no file {rel}")
        repo_id, number = repo.id, v.number
    store = _store(svc)
    try:
        disk, size = store.safe_file(store.version_dir(repo_id, number), rel)
    except FileNotFoundError:
        log.error("data version %s: file %s is missing on disk", ref, rel)
        raise NotFound(f"{ref}: file {rel} is missing on disk; tell an administrator") from None
    return disk, size, rel.rsplit("/", 1)[-1]


def version_archive(svc: Services, actor: Actor, team: str, name: str,
                    version) -> tuple[str, Iterator[bytes]]:
    """(``TEAM-NAME-N.tar``, its bytes as a stream): the version's files under ``TEAM-NAME-N/``."""
    with svc.db.session() as s:
        repo = readable_repo(s, actor, team, name)
        v = find_version(s, repo, team, _number(version))
        base = f"{repo.team.name}-{repo.name}-{v.number}"
        repo_id, number, ref = repo.id, v.number, f"{repo.team.name}/{repo.name}:{v.number}"
    store = _store(svc)
    top = store.version_dir(repo_id, number)
    if not top.is_dir():
        log.error("data version %s is missing on disk (%s)", ref, top)
        raise NotFound(f"{ref} is missing on disk; tell an administrator")
    return f"{base}.tar", store.tar_stream(top, base)


def delete_version(svc: Services, actor: Actor, team: str, name: str, number,
                   confirm: str) -> dict:
    """Delete one version (its number is never reused): refused while a queued or running job
    binds it. Its storage is billed up to now; contents no other version holds are freed."""
    from . import storage
    from .repos import bound_by_active_job
    number = _number(number)
    if number is None:
        raise OpError("say which version number to delete (not latest)")
    with svc.db.session() as s:   # who may, before what they typed: a stranger learns nothing
        owned_repo(s, actor, team, name, ROLE_ADMIN, "delete versions")
    if str(confirm if confirm is not None else "").strip() != str(number):
        raise OpError(f"type the version number ({number}) to confirm; deleting a version is "
                      "irreversible")

    def _checked(s):
        repo = owned_repo(s, actor, team, name, ROLE_ADMIN, "delete versions")
        v = find_version(s, repo, team, number)
        busy = bound_by_active_job(s, version_ids=[v.id])
        if busy is not None:
            raise OpError(f"job {busy} binds {team}/{name}:{number} and has not ended; cancel "
                          "it or wait, then delete", 409)
        return repo, v

    with svc.db.session() as s:   # checks, its last minutes billed, then the delete
        repo, v = _checked(s)
        final = storage.version_samples(s, [repo.id], only_version_ids={v.id})
    storage.bill_final(svc, final)
    with svc.db.transaction() as s:
        repo, v = _checked(s)
        repo_id, ref = repo.id, f"{repo.team.name}/{repo.name}:{number}"
        s.delete(v)
        s.flush()
        keep = kept_shas(s, repo_id)
    store = _store(svc)
    freed = 0
    try:
        store.remove_version(repo_id, number)
        freed = store.gc_objects(repo_id, keep)
    except OSError as exc:   # the row is gone; the bytes are unreachable and left to clean up
        log.warning("data version %s: removing its files failed: %s", ref, exc)
    return {"ok": True, "deleted": ref, "freed_bytes": freed}
