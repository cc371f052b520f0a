"""``/api/data``: data repositories (datasets and models), their versions, files, archives and
resumable uploads (docs/DATA.md). Front door only: parse, call ``portal.data``, answer JSON or
stream bytes. Job outputs, continue and team storage: ``data_output``.

A chunk of an upload (``PUT /api/data/uploads/ID/objects/SHA?offset=K``) is the one request
whose body may exceed the app's bound (``MAX_CONTENT_LENGTH``): up to ``MAX_CHUNK_BYTES``,
streamed to the service as it arrives, never read into memory; a Content-Length is required.
"""
from __future__ import annotations


from flask import Response, jsonify, request

from ..data import access as data_access
from ..data import names
from ..data import repos as repos_svc
from ..data import uploads as uploads_svc
from ..data import versions as versions_svc
from ..data.parts import OffsetMismatch
from ..http import downloads
from ..http.context import actor, db, svc
from ..http.params import int_query
from .core import ApiError, _body, _text, api

MAX_CHUNK_BYTES = 1024 * 1024 * 1024  # one PUT of an upload's object: at most 1 GiB
CHUNK_ENDPOINT = "api.data_upload_chunk"


@api.url_value_preprocessor
def _chunk_body_bound(endpoint, _values):
    """Runs before authentication (``before_request``), so nothing reads the body under the
    app-wide bound first: a chunk PUT may carry up to ``MAX_CHUNK_BYTES``."""
    if endpoint == CHUNK_ENDPOINT:
        request.max_content_length = MAX_CHUNK_BYTES


def _version(text: str) -> int | None:
    """``V`` of a URL: a number or ``latest`` (None)."""
    return names.parse_version(text)


def send_path(found) -> Response:
    """A file of a version or an output, ``(Path, size, filename)`` from the service, streamed."""
    return downloads.send_path(*found)


def send_archive(found) -> Response:
    """A streamed ``.tar``: ``(filename, Iterator[bytes])`` from the service."""
    return downloads.send_archive(*found)


def readable(team: str, name: str) -> None:
    """404 first for whom the repository is not there (the one access rule), before the body is
    judged: an outsider learns nothing from a 400 about a malformed body."""
    data_access.readable_repo(db(), actor(), team, name)


def _confirm(body: dict) -> str:
    return str(body.get("confirm", request.args.get("confirm", "")))


# ------------------------------------------------------------------------ repositories

@api.get("/data")
def data_list():
    team = request.args.get("team", "").strip() or None
    return jsonify({"ok": True, "repos": repos_svc.list_repos(svc(), actor(), team)})


@api.post("/data")
def data_create():
    body = _body()
    repo = repos_svc.create_repo(svc(), actor(), _text(body, "team").strip(), _text(body, "name"),
                                 _text(body, "kind"), _text(body, "description"))
    return jsonify({"ok": True, "repo": repo}), 201


@api.get("/data/<team>/<name>")
def data_show(team: str, name: str):
    return jsonify({"ok": True, "repo": repos_svc.show_repo(svc(), actor(), team, name)})


@api.delete("/data/<team>/<name>")
def data_delete(team: str, name: str):
    d = repos_svc.delete_repo(svc(), actor(), team, name, _confirm(_body()))
    return jsonify(dict(d, ok=True))


@api.post("/data/<team>/<name>/shares")
def data_share(team: str, name: str):
    readable(team, name)
    other = _text(_body(), "team").strip()
    if not other:
        raise ApiError(400, 'name the team to share with: {"team": "OTHER"}')
    return jsonify({"ok": True, "repo": repos_svc.share_repo(svc(), actor(), team, name, other)})


@api.delete("/data/<team>/<name>/shares/<other>")
def data_unshare(team: str, name: str, other: str):
    return jsonify({"ok": True, "repo": repos_svc.unshare_repo(svc(), actor(), team, name, other)})


@api.put("/data/<team>/<name>/public")
def data_public(team: str, name: str):
    readable(team, name)
    body = _body()
    public = body.get("public")
    if not isinstance(public, bool):
        raise ApiError(400, 'send {"public": true} or {"public": false}')
    return jsonify({"ok": True, "repo": repos_svc.set_public(svc(), actor(), team, name, public)})


# ---------------------------------------------------------------------------- versions

@api.get("/data/<team>/<name>/versions/<version>")
def data_version(team: str, name: str, version: str):
    v = versions_svc.show_version(svc(), actor(), team, name, _version(version))
    return jsonify({"ok": True, "version": v})


@api.get("/data/<team>/<name>/versions/<version>/files/<path:relpath>")
def data_version_file(team: str, name: str, version: str, relpath: str):
    return send_path(versions_svc.version_file(svc(), actor(), team, name, _version(version), relpath))


@api.get("/data/<team>/<name>/versions/<version>/archive")
def data_version_archive(team: str, name: str, version: str):
    return send_archive(versions_svc.version_archive(svc(), actor(), team, name, _version(version)))


@api.delete("/data/<team>/<name>/versions/<version>")
def data_version_delete(team: str, name: str, version: str):
    number = _version(version)
    if number is None:
        raise ApiError(400, "name the version to delete by its number, not 'latest'")
    d = versions_svc.delete_version(svc(), actor(), team, name, number, _confirm(_body()))
    return jsonify(dict(d, ok=True))


# ----------------------------------------------------------------------------- uploads

@api.post("/data/<team>/<name>/uploads")
def data_upload_start(team: str, name: str):
    readable(team, name)
    body = _body()
    files = body.get("files")
    if not isinstance(files, list):
        raise ApiError(400, 'send the files to upload: {"files": [{"path", "size", "sha256"}, ...]}')
    source = _text(body, "source").strip() or "upload"
    d = uploads_svc.start_upload(svc(), actor(), team, name, files, source=source)
    return jsonify(dict(d, ok=True))


@api.get("/data/uploads/<upload_id>")
def data_upload_status(upload_id: str):
    return jsonify(dict(uploads_svc.upload_status(svc(), actor(), upload_id), ok=True))


@api.delete("/data/uploads/<upload_id>")
def data_upload_abort(upload_id: str):
    return jsonify(dict(uploads_svc.abort_upload(svc(), actor(), upload_id), ok=True))


@api.put("/data/uploads/<upload_id>/objects/<sha256>")
def data_upload_chunk(upload_id: str, sha256: str):
    """Bytes ``offset`` … of object ``sha256``: the raw body, streamed to the service."""
    length = request.content_length
    if length is None:
        raise ApiError(411, "send a Content-Length with each chunk (no chunked transfer encoding)")
    offset = int_query("offset", 0)
    names.check_sha256(sha256)
    d = uploads_svc.receive_chunk(svc(), actor(), upload_id, sha256, offset, request.stream, length)
    return jsonify(dict(d, ok=True))


@api.post("/data/uploads/<upload_id>/commit")
def data_upload_commit(upload_id: str):
    return jsonify({"ok": True, "version": uploads_svc.commit_upload(svc(), actor(), upload_id)}), 201


@api.errorhandler(OffsetMismatch)
def _offset_mismatch(exc: OffsetMismatch):
    """A chunk that does not start where the object's part ends: the offset to resume from."""
    return jsonify({"ok": False, "error": str(exc), "offset": exc.offset}), exc.status
