"""Resumable uploads of new versions — the service layer.

``start_upload`` takes the manifest (every file's path, size and sha256) and answers which
contents are still missing and from which offset to send each (``missing: {sha256: offset}``):
a content the repository already stores is never sent again (dedupe), identical files are sent
once, and the same user starting the same manifest again continues the same open upload
(resume). ``receive_chunk`` streams bytes to disk at an exact offset; a complete object's
sha256 is checked. ``commit_upload`` turns a complete upload into the next version, in one
transaction; a half upload is never visible as a version. Only its creator (or a cluster
administrator) sees or changes an upload; others are told there is no such upload.
"""
from __future__ import annotations

import json
import re
import secrets
from datetime import timedelta
from typing import BinaryIO

from sqlalchemy import func, select

from ..db import DataRepo, DataUpload, DataVersion
from ..services import Services, log
from ..teams.access import ROLE_ANY, Actor, NotFound, OpError
from . import manifest as mf
from .access import owned_repo
from .present import version_dict
from .store import DataStore
from .versions import add_version, kept_shas, version_shas

SOURCES = ("upload", "web upload")
#: open uploads one user may have at once (each may hold parts on disk until committed)
MAX_OPEN_PER_USER = 20
#: an upload left open this long is given up by the reconciler (its parts are removed)
STALE_AFTER = timedelta(days=7)
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def _store(svc: Services) -> DataStore:
    return DataStore.for_services(svc)


def _check_room(s, repo: DataRepo, objects: dict[str, int]) -> None:
    """413 when the contents its versions do not hold yet would take the team over quota."""
    from .quota import check_room
    known = version_shas(s, repo.id)
    check_room(s, repo.team, sum(n for sha, n in objects.items() if sha not in known))


def _missing(store: DataStore, repo_id: int, upload_id: str, objects: dict[str, int]) -> dict:
    return {sha: store.part_offset(repo_id, upload_id, sha)
            for sha in sorted(objects) if not store.has_object(repo_id, sha)}


def _answer(store: DataStore, up: DataUpload, repo: DataRepo, objects: dict[str, int]) -> dict:
    d = {"upload": up.id, "state": up.state, "team": repo.team.name, "repo": repo.name,
         "total_bytes": up.total_bytes, "source": up.source, "missing": {}}
    if up.state == "open":
        d["missing"] = _missing(store, repo.id, up.id, objects)
    if up.version_number is not None:
        d["version"] = up.version_number
    return d


def _upload(s, actor: Actor, upload_id) -> tuple[DataUpload, DataRepo, dict[str, int]]:
    """The actor's upload (cluster admins: anybody's) with its repository, checked for the
    actor's right to add versions; NotFound for anybody else."""
    gone = NotFound(f"there is no upload {str(upload_id)[:40]!r}")
    if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
        raise gone
    up = s.get(DataUpload, upload_id)
    if up is None or (up.created_by != actor.name and not actor.is_cluster_admin):
        raise gone
    repo = s.get(DataRepo, up.repo_id)
    owned_repo(s, actor, repo.team.name, repo.name, ROLE_ANY, "add versions")
    return up, repo, mf.objects(json.loads(up.manifest))


def start_upload(svc: Services, actor: Actor, team: str, name: str, files,
                 source: str = "upload") -> dict:
    if source not in SOURCES:
        raise OpError(f"source must be one of {', '.join(SOURCES)}")
    files = mf.check_manifest(files)
    text, objects = mf.dumps(files), mf.objects(files)
    store = _store(svc)
    with svc.db.transaction() as s:
        repo = owned_repo(s, actor, team, name, ROLE_ANY, "add versions")
        for up in s.scalars(select(DataUpload).where(
                DataUpload.repo_id == repo.id, DataUpload.created_by == actor.name,
                DataUpload.state == "open").order_by(DataUpload.created_at)):
            if up.manifest == text:       # the same upload again: resume it
                return _answer(store, up, repo, objects)
        _check_room(s, repo, objects)
        open_now = s.scalar(select(func.count()).select_from(DataUpload).where(
            DataUpload.created_by == actor.name, DataUpload.state == "open"))
        if open_now >= MAX_OPEN_PER_USER:
            raise OpError(f"{actor.name} has {open_now} unfinished uploads; finish or abort one "
                          "first (uploads left for 7 days are given up)", 429)
        store.ensure_repo(repo.id)
        up = DataUpload(id=secrets.token_hex(16), repo_id=repo.id, created_by=actor.name,
                        created_at=svc.now(), manifest=text, source=source, state="open",
                        total_bytes=sum(e["size"] for e in files))
        s.add(up)
        s.flush()
        if mf.EMPTY_SHA256 in objects:
            store.put_empty_object(repo.id)
        return _answer(store, up, repo, objects)


def upload_status(svc: Services, actor: Actor, upload_id: str) -> dict:
    with svc.db.session() as s:
        up, repo, objects = _upload(s, actor, upload_id)
        return _answer(_store(svc), up, repo, objects)


def receive_chunk(svc: Services, actor: Actor, upload_id: str, sha256: str, offset: int,
                  stream: BinaryIO, length: int) -> dict:
    """Bytes ``offset`` … ``offset+length`` of one object of the upload, read from ``stream``
    (in 1 MiB pieces, straight to disk). Answers the object's new offset and whether it is
    complete. 409 (with the offset to resume from) when ``offset`` is not where its bytes end;
    400 when a completed object's sha256 is wrong (its bytes are removed)."""
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise OpError("offset must be a whole number of bytes (0 or more)")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise OpError("the chunk's length must be known (send Content-Length)")
    with svc.db.session() as s:   # no transaction is held while the bytes stream in
        up, repo, objects = _upload(s, actor, upload_id)
        if up.state != "open":
            raise OpError(f"upload {up.id} is {up.state}; start a new one", 409)
        if sha256 not in objects:
            raise NotFound(f"upload {up.id} has no file with sha256 {str(sha256)[:64]!r}")
        repo_id, size = repo.id, objects[sha256]
    new = _store(svc).receive_chunk(repo_id, upload_id, sha256, size, offset, stream, length)
    return {"sha256": sha256, "offset": new, "size": size, "complete": new == size}


def commit_upload(svc: Services, actor: Actor, upload_id: str) -> dict:
    """The upload as the repository's next version (409 while contents are missing). A
    commit repeated after it succeeded answers the same version."""
    store = _store(svc)
    with svc.db.transaction() as s:
        up, repo, objects = _upload(s, actor, upload_id)
        team = repo.team.name
        if up.state == "committed":
            v = s.scalar(select(DataVersion).where(DataVersion.repo_id == repo.id,
                                                   DataVersion.number == up.version_number))
            if v is None:
                raise OpError(f"upload {up.id} became version {up.version_number}, which was "
                              "deleted since", 409)
            return version_dict(v, repo, team)
        if up.state != "open":
            raise OpError(f"upload {up.id} is {up.state}; start a new one", 409)
        missing = _missing(store, repo.id, up.id, objects)
        if missing:
            shown = ", ".join(f"{sha[:12]}… ({off} of {objects[sha]} bytes)"
                              for sha, off in list(missing.items())[:5])
            raise OpError(f"{len(missing)} file content(s) of upload {up.id} are incomplete: "
                          f"{shown}; send them, then commit", 409)
        _check_room(s, repo, objects)
        files = [(e["path"], e["sha256"], e["size"]) for e in json.loads(up.manifest)]
        v = add_version(s, svc, repo, files, up.created_by, up.source)
        up.state, up.version_number = "committed", v.number
        out, repo_id = version_dict(v, repo, team), repo.id
    _clean_incoming(store, repo_id, upload_id)
    return out


def abort_upload(svc: Services, actor: Actor, upload_id: str) -> dict:
    """Give an open upload up: its parts are removed, and the contents it completed that no
    version or other open upload needs are freed."""
    store = _store(svc)
    with svc.db.transaction() as s:
        up, repo, _objects = _upload(s, actor, upload_id)
        if up.state != "open":
            raise OpError(f"upload {up.id} is {up.state} already", 409)
        up.state = "aborted"
        s.flush()
        repo_id, keep = repo.id, kept_shas(s, repo.id)
    _clean_incoming(store, repo_id, upload_id)
    freed = 0
    try:
        freed = store.gc_objects(repo_id, keep)
    except OSError as exc:
        log.warning("upload %s: freeing its contents failed: %s", upload_id, exc)
    return {"ok": True, "upload": upload_id, "state": "aborted", "freed_bytes": freed}


def _clean_incoming(store: DataStore, repo_id: int, upload_id: str) -> None:
    try:
        store.remove_incoming(repo_id, upload_id)
    except OSError as exc:
        log.warning("upload %s: removing its parts failed: %s", upload_id, exc)


def expire_stale(svc: Services, now=None) -> int:
    """Give up uploads left open for ``STALE_AFTER`` (the reconciler): parts removed, contents
    no version needs freed. Returns how many."""
    cutoff = (now or svc.now()) - STALE_AFTER
    with svc.db.session() as s:
        stale = s.execute(select(DataUpload.id, DataUpload.repo_id).where(
            DataUpload.state == "open", DataUpload.created_at < cutoff).limit(100)).all()
    store = _store(svc)
    for upload_id, repo_id in stale:
        with svc.db.transaction() as s:
            up = s.get(DataUpload, upload_id)
            if up is None or up.state != "open":
                continue
            up.state = "aborted"
            s.flush()
            keep = kept_shas(s, repo_id)
        _clean_incoming(store, repo_id, upload_id)
        try:
            store.gc_objects(repo_id, keep)
        except OSError as exc:
            log.warning("upload %s: freeing its contents failed: %s", upload_id, exc)
    return len(stale)
