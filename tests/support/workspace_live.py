"""Helpers for the live workspace tests (tests/integration/test_workspaces_live.py,
tests/browser/test_workspace_browser.py): a portal login session (the cookie the gateway reads),
the gateway's and the node's URLs of a workspace, its credential, its row in the database,
waiting for JupyterLab to answer, and a kernel's ``execute_request`` over its WebSocket (the
Jupyter kernel protocol, JSON frames) through the gateway or straight to the node."""
from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
import uuid
from datetime import datetime, timezone

import aiohttp
import requests

from portal.workspaces import credential
from tests.support.aio import run_async
from tests.support.data_live import api, ok
from tests.support.harness import Slipway

SESSION_COOKIE = "slipway_session"
NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "six-times-seven",
               "metadata": {}, "outputs": [], "source": ["6*7"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                "name": "python3"},
                 "language_info": {"name": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


# ------------------------------------------------------------------------------ the portal
def portal_login(sw: Slipway, user: str, password: str) -> requests.Session:
    """A requests session logged in through the portal's login form (its session cookie is
    what the gateway checks)."""
    s = requests.Session()
    page = s.get(sw.url + "/login", timeout=30)
    m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert m, page.text[:2000]
    r = s.post(sw.url + "/login", data={"username": user, "password": password,
                                         "csrf_token": m.group(1)}, timeout=30)
    assert r.ok and "/login" not in r.url and s.cookies.get(SESSION_COOKIE), (r.status_code, r.url)
    return s


def gateway_port(sw: Slipway) -> int:
    """``slipway serve --workspace-port`` defaults to the portal's port + 1."""
    return int(sw.url.rsplit(":", 1)[1]) + 1


def gateway_lab(sw: Slipway, job_id: int) -> str:
    return f"http://127.0.0.1:{gateway_port(sw)}/workspaces/{int(job_id)}/lab/"


def start_workspace(sw: Slipway, user: str, team: str, project: str, branch: str,
                    **fields: str) -> dict:
    """POST /api/projects/T/P/workspaces as ``user``; the workspace's dictionary."""
    r = ok(api(sw, user, "POST", f"projects/{team}/{project}/workspaces",
               {"branch": branch, **fields}), 201)
    return r["workspace"]


def show(sw: Slipway, user: str, job_id: int) -> dict:
    return ok(api(sw, user, "GET", f"workspaces/{int(job_id)}"))["workspace"]


def wait_state(sw: Slipway, user: str, job_id: int, states=("running",), timeout: float = 120) -> dict:
    """Until the workspace is in one of ``states``; "running" also waits for its node (the
    runner's start callback makes it running; the node comes with the reconciler's next poll)."""
    deadline = time.monotonic() + timeout
    while True:
        w = show(sw, user, job_id)
        if w["state"] in states and (w["state"] != "running" or w["node"]):
            return w
        assert time.monotonic() < deadline, (f"workspace {job_id} still {w['state']} after "
                                             f"{timeout} s: {w}\n{server_log_tail(sw)}")
        time.sleep(0.5)


def server_log_tail(sw: Slipway, chars: int = 4000) -> str:
    try:
        return sw.log_file.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no server log)"


# ---------------------------------------------------------------------------- the database
def job_row(sw: Slipway, job_id: int) -> dict:
    con = sqlite3.connect(f"file:{sw.data_dir / 'slipway.db'}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        row = con.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
    finally:
        con.close()
    assert row is not None, f"no job {job_id}"
    return dict(row)


def secret_key(sw: Slipway) -> str:
    return (sw.data_dir / "secret_key").read_text().strip()


def token(sw: Slipway, job_id: int) -> str:
    """The workspace's credential, as the portal derives it (never shown anywhere)."""
    return credential.token(secret_key(sw), job_id)


def node_lab(sw: Slipway, job_id: int) -> str:
    """The Jupyter server on the node (the local cluster's nodes are 127.0.0.1) at the job's
    port: what somebody on the cluster's network could reach without the portal."""
    row = job_row(sw, job_id)
    assert row["node"] and row["port"], row
    return f"http://127.0.0.1:{int(row['port'])}/workspaces/{int(job_id)}/lab/"


def auth(sw: Slipway, job_id: int) -> dict:
    return {"Authorization": f"token {token(sw, job_id)}"}


def wait_lab(url: str, timeout: float = 120, **kw) -> None:
    """Until ``url + api/status`` answers 200 (JupyterLab takes seconds to start)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = requests.get(url + "api/status", timeout=5, **kw)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:300]}"
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s: {last}")


def start_kernel(url: str, **kw) -> str:
    r = requests.post(url + "api/kernels", json={"name": "python3"}, timeout=60, **kw)
    assert r.status_code == 201, (r.status_code, r.text[:1000])
    return r.json()["id"]


def kernels(url: str, **kw) -> list[dict]:
    r = requests.get(url + "api/kernels", timeout=30, **kw)
    assert r.status_code == 200, (r.status_code, r.text[:1000])
    return r.json()


# ---------------------------------------------------------------------- the kernel protocol
def ws_url(http_url: str) -> str:
    return "ws" + http_url[len("http"):]


def execute_request(code: str) -> tuple[str, dict]:
    msg_id = uuid.uuid4().hex
    msg = {"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                      "session": uuid.uuid4().hex, "version": "5.3",
                      "date": datetime.now(timezone.utc).isoformat()},
           "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
           "content": {"code": code, "silent": False, "store_history": True,
                       "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}
    return msg_id, msg


async def _execute(url: str, headers: dict, code: str, until: str, timeout: float) -> list[dict]:
    """Send one execute_request; collect the replies to it until ``until``: "idle" (the cell has
    run) or "busy" (it has started). Returns the messages (msg_type, content)."""
    msg_id, msg = execute_request(code)
    got = []
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=5),
                                     max_msg_size=0) as ws:
            await ws.send_str(json.dumps(msg))
            async with asyncio.timeout(timeout):
                async for frame in ws:
                    if frame.type != aiohttp.WSMsgType.TEXT:
                        continue
                    m = json.loads(frame.data)
                    if m.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    got.append({"msg_type": m["header"]["msg_type"], "content": m["content"]})
                    if (m["header"]["msg_type"] == "status"
                            and m["content"].get("execution_state") == until):
                        return got
    raise AssertionError(f"the WebSocket closed before the kernel was {until}: {got}")


def execute(url: str, code: str, *, headers: dict | None = None, until: str = "idle",
            timeout: float = 60) -> list[dict]:
    """Run ``code`` in the kernel whose channels WebSocket is ``url`` (ws://...)."""
    return run_async(_execute(url, headers or {}, code, until, timeout))


def result_text(messages: list[dict]) -> str | None:
    for m in messages:
        if m["msg_type"] == "execute_result":
            return m["content"]["data"].get("text/plain")
    return None


async def _handshake(url: str, headers: dict) -> tuple[int, str]:
    """A WebSocket handshake: (101, "") when it is upgraded, else (status, body)."""
    async with aiohttp.ClientSession() as client:
        try:
            async with client.ws_connect(url, headers=headers):
                return 101, ""
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, exc.message


def handshake(url: str, headers: dict | None = None) -> int:
    return run_async(_handshake(url, headers or {}))[0]


def raw_handshake(url: str, cookie: str | None = None) -> requests.Response:
    """The upgrade request as a plain HTTP GET (requests cannot switch protocols): what the
    server answers before any upgrade, body included."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": key}
    if cookie:
        headers["Cookie"] = cookie
    http = "http" + url[len("ws"):] if url.startswith("ws") else url
    return requests.get(http, headers=headers, timeout=30, stream=True)


def cookie_header(session: requests.Session) -> dict:
    return {"Cookie": f"{SESSION_COOKIE}={session.cookies.get(SESSION_COOKIE)}"}
