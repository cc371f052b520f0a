"""The upload endpoints behind the repository page's upload form (``static/upload.js``): JSON,
the browser session with the page's CSRF token (``X-CSRFToken``), calling
``portal.data.uploads``.

    POST /data/<team>/<name>/uploads     {files: [{path, size, sha256}]}  -> upload + missing
    GET  /uploads/<id>                   the upload's state (resume)
    PUT  /uploads/<id>/objects/<sha256>?offset=K   raw body: bytes K.. of that object
    POST /uploads/<id>/commit            -> the new version (+ its page's URL)
    POST /uploads/<id>/abort

A chunk's body is streamed to the service (``request.stream``, never read into memory) and
may be up to ``MAX_CHUNK`` bytes; every other route keeps the app's bound (MAX_CONTENT_LENGTH).
The blueprint is exempt from the app-wide CSRF check because that check would open the body
stream under the app's bound; ``_guard`` sets this request's bound first, then checks the token.
"""
from __future__ import annotations

from flask import Blueprint, current_app, flash, jsonify, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from ..data import repos as repos_svc
from ..data import uploads as uploads_svc
from ..http import params
from ..teams import access
from .common import actor, fmt_bytes, svc

bp = Blueprint("data_upload", __name__)

MAX_CHUNK = 64 * 1024 * 1024
MANIFEST_MAX_BYTES = 16 * 1024 * 1024   # a manifest of ~100,000 files
SOURCE = "web upload"




def _error(status: int, message: str):
    return jsonify({"ok": False, "error": message}), status


@bp.errorhandler(access.OpError)
def _op_error(exc: access.OpError):
    return _error(exc.status, str(exc))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    if exc.code == 413:
        return _error(413, f"the request body is too large (a chunk may be at most {MAX_CHUNK} "
                           "bytes)")
    return _error(exc.code or 400, exc.description or exc.name)


@bp.before_request
def _guard():
    if not current_user.is_authenticated:
        return _error(401, "log in again: your session has ended")
    if request.endpoint == "data_upload.chunk":
        request.max_content_length = MAX_CHUNK   # before anything opens the body stream
    csrf = current_app.extensions.get("slipway_csrf")
    if csrf is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
        try:
            csrf.protect()
        except CSRFError:
            return _error(400, "the page expired (CSRF token missing or invalid); reload the "
                               "page and try again")
    return None


def _urls(d: dict) -> dict:
    upload = d.get("upload")
    if upload:
        d["status_url"] = url_for("data_upload.status", upload_id=upload)
        d["objects_url"] = url_for("data_upload.status", upload_id=upload) + "/objects/"
        d["commit_url"] = url_for("data_upload.commit", upload_id=upload)
        d["abort_url"] = url_for("data_upload.abort", upload_id=upload)
    return d


@bp.post("/data/<team>/<name>/uploads")
def start(team: str, name: str):
    repos_svc.show_repo(svc(), actor(), team, name)   # a stranger gets 404 before any parsing
    body = params.json_body(max_bytes=MANIFEST_MAX_BYTES)
    if not isinstance(body, dict) or not isinstance(body.get("files"), list):
        return _error(400, 'send a JSON object {"files": [{"path", "size", "sha256"}, ...]}')
    if not body["files"]:
        return _error(400, "choose at least one file to upload")
    d = uploads_svc.start_upload(svc(), actor(), team, name, body["files"], source=SOURCE)
    return jsonify(_urls(dict(d))), 201


@bp.get("/uploads/<upload_id>")
def status(upload_id: str):
    return jsonify(_urls(dict(uploads_svc.upload_status(svc(), actor(), upload_id))))


@bp.put("/uploads/<upload_id>/objects/<sha256>")
def chunk(upload_id: str, sha256: str):
    offset = params.int_query("offset", 0)
    length = request.content_length
    if length is None:
        return _error(411, "send the chunk with a Content-Length header (no chunked encoding)")
    if length > MAX_CHUNK:
        return _error(413, f"a chunk may be at most {MAX_CHUNK} bytes, this one has {length}")
    d = uploads_svc.receive_chunk(svc(), actor(), upload_id, sha256, offset, request.stream, length)
    return jsonify(d)


@bp.post("/uploads/<upload_id>/commit")
def commit(upload_id: str):
    v = dict(uploads_svc.commit_upload(svc(), actor(), upload_id))
    v["url"] = url_for("data.version", team=v["team"], name=v["repo"], version=v["number"])
    v["repo_url"] = url_for("data.repo", team=v["team"], name=v["repo"])
    flash(f"Version {v['number']} of {v['team']}/{v['repo']} uploaded: {v['file_count']} "
          f"file(s), {fmt_bytes(v['size_bytes'])}.", "ok")
    return jsonify(v), 201


@bp.post("/uploads/<upload_id>/abort")
def abort(upload_id: str):
    return jsonify(uploads_svc.abort_upload(svc(), actor(), upload_id))
