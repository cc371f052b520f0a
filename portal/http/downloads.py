"""Downloads of data versions and kept job outputs, for both HTTP front doors (the pages and the
API): one file (streamed from disk) or a whole tree as a ``.tar`` streamed as it is made.

Every download is an attachment of type ``application/octet-stream``: a dataset's ``.html``
file is never rendered on the portal's origin."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from flask import Response, send_file


def _disposition(filename: str) -> str:
    plain = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename) or "download"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def send_path(path: Path, size: int, filename: str) -> Response:
    """One file: streamed by the WSGI server (file wrapper), ranges allowed."""
    resp = send_file(path, mimetype="application/octet-stream", as_attachment=True,
                     download_name=filename, conditional=True, etag=False, max_age=0)
    resp.headers["Content-Disposition"] = _disposition(filename)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def send_archive(filename: str, chunks: Iterable[bytes]) -> Response:
    """A ``.tar`` made while it is sent (no length known in advance)."""
    resp = Response(chunks, mimetype="application/x-tar", direct_passthrough=True)
    resp.headers["Content-Disposition"] = _disposition(filename)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
