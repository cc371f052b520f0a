"""git-lfs server side: the batch API with the ``basic`` transfer and a sha256-checked store.

Objects live at ``<lfs_root>/<team>/<project>/<oid[0:2]>/<oid[2:4]>/<oid>`` (one store per
project: no cross-project sharing, so deleting a project deletes exactly its objects). Uploads are
streamed into a temp file in ``<lfs_root>/<team>/<project>/tmp/`` while hashing, then renamed
into place atomically only when the sha256 matches the oid.

Action hrefs point back at this app (same scheme/host/path as the batch request) and carry the
caller's own ``Authorization`` header, so git-lfs needs no second credential prompt.
``locks/verify`` answers ``{"ours": [], "theirs": []}`` (keeps git-lfs quiet on push); the rest
of the locking API answers 404 (locking not supported).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from . import repos
from .jsonbody import JsonBodyError, loads_bounded

MEDIA_TYPE = "application/vnd.git-lfs+json"
OID_RE = re.compile(r"[0-9a-f]{64}")
CHUNK = 64 * 1024
MAX_BATCH_BODY = 1 << 20
MAX_BATCH_OBJECTS = 10_000
EXPIRES_IN = 3600


class LfsError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class LfsOp:
    kind: str                 # "batch" | "upload" | "download" | "verify_locks" | "locks"
    write: bool
    oid: str | None = None
    body: dict | None = None
    needs_body_for_write: bool = False

    def with_body(self, body: dict) -> "LfsOp":
        return replace(self, body=body, write=body.get("operation") == "upload",
                       needs_body_for_write=False)


class LfsStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def project_dir(self, team: str, project: str) -> Path:
        return repos.lfs_path(self.root, team, project)

    def object_path(self, team: str, project: str, oid: str) -> Path:
        if not OID_RE.fullmatch(oid or ""):
            raise ValueError(f"bad oid {oid!r}")
        return self.project_dir(team, project) / oid[0:2] / oid[2:4] / oid

    def size(self, team: str, project: str, oid: str) -> int | None:
        try:
            return self.object_path(team, project, oid).stat().st_size
        except FileNotFoundError:
            return None

    def put_stream(self, team: str, project: str, oid: str, stream, length: int | None,
                   max_bytes: int | None = None) -> int:
        """Store ``stream`` as object ``oid``; verify sha256 (and length); return the size."""
        final = self.object_path(team, project, oid)
        tmpdir = self.project_dir(team, project) / "tmp"
        repos.private_dirs(tmpdir)  # 0700: objects are read by the server process only
        fd, tmp = tempfile.mkstemp(dir=tmpdir, prefix=oid[:16] + ".")
        h = hashlib.sha256()
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                remaining = length
                while remaining is None or remaining > 0:
                    data = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
                    if not data:
                        break
                    written += len(data)
                    if max_bytes is not None and written > max_bytes:
                        raise LfsError("413 Payload Too Large",
                                       f"object is larger than the limit of {max_bytes} bytes")
                    h.update(data)
                    out.write(data)
                    if remaining is not None:
                        remaining -= len(data)
                out.flush()
                os.fsync(out.fileno())
            if length is not None and written != length:
                raise LfsError("400 Bad Request",
                               f"body ended after {written} of {length} bytes")
            if h.hexdigest() != oid:
                raise LfsError("422 Unprocessable Entity",
                               f"sha256 of the uploaded data is {h.hexdigest()}, expected {oid}")
            repos.private_dirs(final.parent)
            os.chmod(tmp, 0o400)  # mkstemp made it 0600; objects are immutable once stored
            os.replace(tmp, final)
            tmp = None
            return written
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass


class LfsApi:
    def __init__(self, store: LfsStore, max_object_bytes: int | None = None):
        self.store = store
        self.max_object_bytes = max_object_bytes

    # ------------------------------------------------------------- routing
    @staticmethod
    def classify(method: str, sub: str) -> LfsOp | None:
        """``sub`` is the path after ``…/info/lfs``."""
        if sub == "/objects/batch":
            return LfsOp("batch", write=True, needs_body_for_write=True) if method == "POST" else None
        if sub.startswith("/objects/"):
            oid = sub[len("/objects/"):]
            if not OID_RE.fullmatch(oid):
                return None
            if method == "PUT":
                return LfsOp("upload", write=True, oid=oid)
            if method in ("GET", "HEAD"):
                return LfsOp("download", write=False, oid=oid)
            return None
        if sub == "/locks/verify" and method == "POST":
            return LfsOp("verify_locks", write=True)
        if sub == "/locks" or sub.startswith("/locks/"):
            return LfsOp("locks", write=False)
        return None

    @staticmethod
    def error(start_response, status: str, message: str,
              extra: list[tuple[str, str]] | None = None) -> list[bytes]:
        return _json(start_response, status, {"message": message}, extra)

    @staticmethod
    def read_json_body(environ) -> dict:
        cl = environ.get("CONTENT_LENGTH", "")
        length = int(cl) if cl.strip().isdigit() else None
        if length is not None and length > MAX_BATCH_BODY:
            raise LfsError("413 Payload Too Large", "batch request too large")
        data = environ["wsgi.input"].read(length if length is not None else MAX_BATCH_BODY + 1)
        if len(data) > MAX_BATCH_BODY:
            raise LfsError("413 Payload Too Large", "batch request too large")
        try:  # bounded depth: 100,000 nested brackets must not raise RecursionError
            body = loads_bounded(data, max_bytes=None)
        except JsonBodyError as exc:
            raise LfsError("422 Unprocessable Entity", f"batch request refused: {exc}")
        if not isinstance(body, dict) or body.get("operation") not in ("upload", "download") \
                or not isinstance(body.get("objects"), list):
            raise LfsError("422 Unprocessable Entity",
                           "batch request needs operation upload|download and objects")
        if len(body["objects"]) > MAX_BATCH_OBJECTS:
            raise LfsError("413 Payload Too Large", "too many objects in one batch")
        return body

    # ------------------------------------------------------------ handlers
    def handle(self, environ, start_response, team: str, project: str, op: LfsOp,
               authorization: str):
        try:
            if op.kind == "batch":
                return self._batch(environ, start_response, team, project, op.body, authorization)
            if op.kind == "upload":
                return self._put(environ, start_response, team, project, op.oid)
            if op.kind == "download":
                return self._get(environ, start_response, team, project, op.oid)
            if op.kind == "verify_locks":
                _drain(environ)
                return _json(start_response, "200 OK", {"ours": [], "theirs": []})
            return self.error(start_response, "404 Not Found", "locking is not supported")
        except LfsError as e:
            return self.error(start_response, e.status, e.message)

    def _batch(self, environ, start_response, team, project, body, authorization):
        if body.get("hash_algo", "sha256") != "sha256":
            return self.error(start_response, "409 Conflict", "only sha256 is supported")
        base = _request_url(environ)
        base = base[: -len("/objects/batch")] if base.endswith("/objects/batch") else base
        operation = body["operation"]
        out = []
        for obj in body["objects"]:
            oid = obj.get("oid") if isinstance(obj, dict) else None
            size = obj.get("size") if isinstance(obj, dict) else None
            entry: dict = {"oid": oid, "size": size}
            if not isinstance(oid, str) or not OID_RE.fullmatch(oid) \
                    or not isinstance(size, int) or isinstance(size, bool) or size < 0:
                entry["error"] = {"code": 422, "message": "invalid oid or size"}
                out.append(entry)
                continue
            if self.max_object_bytes is not None and size > self.max_object_bytes:
                entry["error"] = {"code": 422, "message":
                                  f"object of {size} bytes is larger than the limit of "
                                  f"{self.max_object_bytes} bytes"}
                out.append(entry)
                continue
            have = self.store.size(team, project, oid)
            href = f"{base}/objects/{oid}"
            action = {"href": href, "expires_in": EXPIRES_IN}
            if authorization:
                action["header"] = {"Authorization": authorization}
            if operation == "upload":
                entry["authenticated"] = True
                if have != size:
                    entry["actions"] = {"upload": action}
            else:
                if have is None:
                    entry["error"] = {"code": 404, "message": "object not found"}
                else:
                    entry["authenticated"] = True
                    entry["size"] = have
                    entry["actions"] = {"download": action}
            out.append(entry)
        return _json(start_response, "200 OK",
                     {"transfer": "basic", "objects": out, "hash_algo": "sha256"})

    def _put(self, environ, start_response, team, project, oid):
        cl = environ.get("CONTENT_LENGTH", "")
        length = int(cl) if cl.strip().isdigit() else None
        if length is not None and self.max_object_bytes is not None and length > self.max_object_bytes:
            return self.error(start_response, "413 Payload Too Large",
                              f"object is larger than the limit of {self.max_object_bytes} bytes")
        self.store.put_stream(team, project, oid, environ["wsgi.input"], length,
                              self.max_object_bytes)
        start_response("200 OK", [("Content-Type", MEDIA_TYPE), ("Content-Length", "0")])
        return [b""]

    def _get(self, environ, start_response, team, project, oid):
        path = self.store.object_path(team, project, oid)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return self.error(start_response, "404 Not Found", "object not found")
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        if environ.get("REQUEST_METHOD") == "HEAD":
            f.close()
            return [b""]
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return wrapper(f, CHUNK)
        return _iter_file(f)


def _iter_file(f):
    try:
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            yield data
    finally:
        f.close()


def _drain(environ) -> None:
    cl = environ.get("CONTENT_LENGTH", "")
    if cl.strip().isdigit():
        remaining = min(int(cl), MAX_BATCH_BODY)
        while remaining > 0:
            data = environ["wsgi.input"].read(min(CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)


def _json(start_response, status: str, obj, extra=None) -> list[bytes]:
    body = json.dumps(obj).encode("utf-8")
    headers = [("Content-Type", MEDIA_TYPE), ("Content-Length", str(len(body))),
               ("Cache-Control", "no-cache")]
    headers.extend(extra or [])
    start_response(status, headers)
    return [body]


def _request_url(environ) -> str:
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "localhost")
        port = environ.get("SERVER_PORT", "")
        if port and port not in ("80", "443"):
            host = f"{host}:{port}"
    path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    return f"{scheme}://{host}{path}"
