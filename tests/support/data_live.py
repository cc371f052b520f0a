"""Helpers for the live data tests (tests/integration/test_data_live.py): the JSON API with a
user's token, uploading a data version through the resumable-upload API, reading Slipway's
database read-only, and running a command as a Unix user on the host."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from tests.support.harness import Slipway


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict

    def json(self) -> dict:
        return json.loads(self.body.decode("utf-8"))


def api(sw: Slipway, user: str, method: str, path: str, body: dict | bytes | None = None,
        timeout: float = 60) -> Reply:
    """``METHOD /api/PATH`` as ``user`` (Bearer token); errors come back as a Reply, not raised."""
    data, headers = None, {"Authorization": f"Bearer {sw.tokens[user]}"}
    if isinstance(body, bytes):
        data = body
        headers["Content-Type"] = "application/octet-stream"
    elif body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(sw.url + "/api/" + path.lstrip("/"), data=data, method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read(), dict(e.headers))


def ok(reply: Reply, status: int = 200) -> dict:
    assert reply.status == status, (reply.status, reply.body[:2000])
    return reply.json()


def upload(sw: Slipway, user: str, team: str, name: str, files: dict[str, bytes]) -> Reply:
    """A new version of TEAM/NAME holding ``files`` (path -> bytes), through the upload API:
    start, one PUT per missing object, commit. The first refusal is returned as is."""
    manifest = [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                for p, b in files.items()]
    r = api(sw, user, "POST", f"data/{team}/{name}/uploads", {"files": manifest})
    if r.status != 200:
        return r
    started = r.json()
    by_sha = {hashlib.sha256(b).hexdigest(): b for b in files.values()}
    for sha, offset in started["missing"].items():
        put = api(sw, user, "PUT", f"data/uploads/{started['upload']}/objects/{sha}?offset={offset}",
                  by_sha[sha][offset:])
        assert put.status == 200, (put.status, put.body[:2000])
    return api(sw, user, "POST", f"data/uploads/{started['upload']}/commit")


def db_rows(sw: Slipway, sql: str, *args) -> list[tuple]:
    con = sqlite3.connect(f"file:{sw.data_dir / 'slipway.db'}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def repo_id(sw: Slipway, team: str, name: str) -> int:
    [(rid,)] = db_rows(sw, "SELECT r.id FROM data_repos r JOIN teams t ON t.id = r.team_id "
                           "WHERE t.name = ? AND r.name = ?", team, name)
    return rid


def team_id(sw: Slipway, team: str) -> int:
    [(tid,)] = db_rows(sw, "SELECT id FROM teams WHERE name = ?", team)
    return tid


def wait_output_kept(sw: Slipway, user: str, job_id: int, timeout: float = 60) -> dict:
    """The job's /output once the reconciler has kept (sealed) it."""
    deadline = time.monotonic() + timeout
    while True:
        out = ok(api(sw, user, "GET", f"jobs/{job_id}/output"))["output"]
        if out["state"] == "kept":
            return out
        assert time.monotonic() < deadline, f"job {job_id}'s output still {out['state']}: {out}"
        time.sleep(0.5)


def as_unix(unix_user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", unix_user, "--", *argv], capture_output=True,
                          text=True, cwd="/tmp", timeout=60)
