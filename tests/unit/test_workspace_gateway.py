"""The workspace gateway (portal/workspaces/gateway/, docs/WORKSPACES.md "The gateway") over real
sockets: a fake Jupyter server (aiohttp) on 127.0.0.1, the gateway in its own thread, aiohttp as
the browser. Who may enter is a ``resolve`` that lets one cookie value into workspace 7."""
from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from yarl import URL

from portal.workspaces.gateway.auth import session_login
from portal.workspaces.gateway.proxy import NotRunning, Target, make_gateway_app
from portal.workspaces.gateway.server import ThreadedServer
from tests.support.aio import run_async

TOKEN = "jupyter-credential-0123456789abcdef"
GOOD = "signed-session-of-alice"
KERNEL_PROTOCOL = "v1.kernel.websocket.jupyter.org"
BIG = 24 * 1024 * 1024  # a streamed download
UPLOAD = 50 * 1024 * 1024  # a streamed upload


def _pattern(i: int, size: int = 1024 * 1024) -> bytes:
    return bytes([i % 251]) * size


class FakeJupyter:
    """What the tests need of a Jupyter server: it wants ``Authorization: token TOKEN`` and records
    every request it gets (``seen``) and the close codes browsers' WebSockets ended with."""

    def __init__(self, token: str = TOKEN, job_id: int = 7):
        self.token, self.job_id = token, job_id
        self.seen: list[dict] = []
        self.ws_closed: list[tuple[int | None, str]] = []

    def app(self) -> web.Application:
        app = web.Application()
        base = f"/workspaces/{self.job_id}/lab"
        app.router.add_route("*", base + "/echo{tail:.*}", self.echo)
        app.router.add_get(base + "/big", self.big)
        app.router.add_get(base + "/login", self.login)
        app.router.add_get(base + "/lab", self.page)
        app.router.add_get(base + "/gzipped", self.gzipped)
        app.router.add_get(base + "/api/kernels/k1/channels", self.channels)
        return app

    def _record(self, request: web.Request, **extra) -> dict:
        entry = {"method": request.method, "raw_path": request.raw_path,
                 "headers": [(k, v) for k, v in request.headers.items()], **extra}
        self.seen.append(entry)
        return entry

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"token {self.token}"

    async def echo(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            raise web.HTTPForbidden(text="no token")
        digest, size, chunks = hashlib.sha256(), 0, 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
            chunks += 1
        entry = self._record(request, size=size, sha=digest.hexdigest(), chunks=chunks)
        # the body shows what arrived, never the Authorization header itself
        return web.json_response({"method": entry["method"], "raw_path": entry["raw_path"],
                                  "size": size, "sha": entry["sha"], "chunks": chunks,
                                  "cookie": request.headers.get("Cookie")})

    async def big(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            raise web.HTTPForbidden(text="no token")
        self._record(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        for i in range(BIG // (1024 * 1024)):
            await resp.write(_pattern(i))
        await resp.write_eof()
        return resp

    async def page(self, request: web.Request) -> web.StreamResponse:
        """JupyterLab's page: its config carries the server's token; sent in small pieces so
        the token is split across chunks."""
        self._record(request)
        html = (f'<html><script id="jupyter-config-data" type="application/json">'
                f'{{"baseUrl": "/workspaces/7/lab/", "token": "{self.token}", "x": 1}}</script>'
                f'<p>{self.token}{self.token}</p></html>').encode()
        resp = web.StreamResponse(headers={"Content-Type": "text/html; charset=UTF-8",
                                           "Content-Length": str(len(html))})
        await resp.prepare(request)
        for i in range(0, len(html), 7):
            await resp.write(html[i:i + 7])
        return resp

    async def gzipped(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        return web.Response(body=b"\x1f\x8b...", headers={"Content-Type": "text/html",
                                                          "Content-Encoding": "gzip"})

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            raise web.HTTPForbidden(text="no token")
        self._record(request)
        port = request.url.port
        resp = web.Response(status=302, headers={
            "Location": f"http://127.0.0.1:{port}/workspaces/7/lab/tree?x=1"})
        resp.headers.add("Set-Cookie", "_xsrf=2|abc; Path=/workspaces/7/lab/")
        resp.headers.add("Set-Cookie", "username-127-0-0-1=u1; Path=/workspaces/7/lab/; HttpOnly")
        return resp

    async def channels(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            raise web.HTTPForbidden(text="no token")
        self._record(request)
        ws = web.WebSocketResponse(protocols=(KERNEL_PROTOCOL,))
        await ws.prepare(request)
        await ws.send_bytes(b"\x00\x01hello")
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "close please":
                await ws.close(code=4001, message=b"kernel went away")
                break
            if msg.type == WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + msg.data)
        self.ws_closed.append((ws.close_code, ""))
        return ws


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def world():
    jupyter = FakeJupyter()
    upstream = ThreadedServer(jupyter.app(), "127.0.0.1", 0, name="fake-jupyter").start()
    down = _closed_port()
    resolved: list[int] = []
    touched: list[tuple[int, float]] = []

    def resolve(job_id, cookies):
        resolved.append(job_id)
        if cookies.get("slipway_session") != GOOD:
            return None
        if job_id == 7:
            return Target("127.0.0.1", upstream.port, TOKEN)
        if job_id == 8:
            raise NotRunning("workspace 8 is not running")
        if job_id == 9:
            return Target("127.0.0.1", down, TOKEN)
        return None

    def touch(job_id):
        touched.append((job_id, time.monotonic()))

    gateway = ThreadedServer(make_gateway_app(resolve, touch), "127.0.0.1", 0,
                             name="gateway").start()
    yield type("World", (), {"jupyter": jupyter, "gw": gateway.url, "resolved": resolved,
                             "touched": touched, "upstream_port": upstream.port})
    gateway.stop()
    upstream.stop()


def run(coro):
    return run_async(coro)


async def _get(url, **kw):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False) as s:
        async with s.request(kw.pop("method", "GET"), URL(url, encoded=True), allow_redirects=False,
                             **kw) as r:
            return r.status, r.headers.copy(), await r.read()


def _headers(entry) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in entry["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def test_http_injects_the_token_and_keeps_only_jupyters_cookies(world):
    cookie = f"slipway_session={GOOD}; remember_token=rt; _xsrf=2|abc; username-127-0-0-1=u1"
    status, headers, body = run(_get(
        world.gw + "/workspaces/7/lab/echo/a%20b%2Fc?x=1&y=%2F", method="PUT", data=b"hi",
        headers={"Cookie": cookie, "Authorization": "Bearer portal-token", "X-Custom": "1",
                 "Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "hop"}))
    assert status == 200
    seen = world.jupyter.seen[-1]
    h = _headers(seen)
    assert h["authorization"] == [f"token {TOKEN}"]  # the browser's Authorization is gone
    assert h["host"] == [f"127.0.0.1:{world.upstream_port}"]
    assert h["cookie"] == ["_xsrf=2|abc; username-127-0-0-1=u1"]
    assert h["x-custom"] == ["1"] and "x-drop-me" not in h
    assert seen["method"] == "PUT" and seen["raw_path"] == "/workspaces/7/lab/echo/a%20b%2Fc?x=1&y=%2F"
    assert json.loads(body)["size"] == 2
    everything = body + "".join(f"{k}: {v}" for k, v in headers.items()).encode()
    assert TOKEN.encode() not in everything
    deadline = time.monotonic() + 2  # touch runs in the gateway's executor
    while not world.touched and time.monotonic() < deadline:
        time.sleep(0.01)
    assert world.touched and world.touched[0][0] == 7


def test_redirects_and_set_cookies_pass_through_and_head_works(world):
    auth = {"Cookie": f"slipway_session={GOOD}"}
    status, headers, _ = run(_get(world.gw + "/workspaces/7/lab/login", headers=auth))
    assert status == 302
    assert headers["Location"] == "/workspaces/7/lab/tree?x=1"  # back on the gateway, not the node
    assert headers.getall("Set-Cookie") == ["_xsrf=2|abc; Path=/workspaces/7/lab/",
                                            "username-127-0-0-1=u1; Path=/workspaces/7/lab/; HttpOnly"]
    status, headers, body = run(_get(world.gw + "/workspaces/7/lab/echo", method="HEAD", headers=auth))
    assert status == 200 and body == b""


def test_a_large_upload_streams_through(world):
    """50 MiB up: it arrives intact, in many chunks, and the process does not hold it."""
    rss = _RssWatch()

    async def body():
        for i in range(UPLOAD // (1024 * 1024)):
            yield _pattern(i)

    expected = hashlib.sha256()
    for i in range(UPLOAD // (1024 * 1024)):
        expected.update(_pattern(i))
    with rss:
        status, _, out = run(_get(world.gw + "/workspaces/7/lab/echo/upload", method="POST",
                                  data=body(), headers={"Cookie": f"slipway_session={GOOD}"}))
    got = json.loads(out)
    assert status == 200 and got["size"] == UPLOAD and got["sha"] == expected.hexdigest()
    assert got["chunks"] > 50  # streamed: read piece by piece at the far end
    assert rss.growth < 30 * 1024 * 1024, f"RSS grew by {rss.growth / 2**20:.0f} MiB"


def test_a_large_download_streams_back_chunked(world):
    async def fetch():
        async with aiohttp.ClientSession() as s:
            async with s.get(world.gw + "/workspaces/7/lab/big",
                             headers={"Cookie": f"slipway_session={GOOD}"}) as r:
                digest, size = hashlib.sha256(), 0
                async for chunk in r.content.iter_any():
                    digest.update(chunk)
                    size += len(chunk)
                return r.status, r.headers.get("Transfer-Encoding"), size, digest.hexdigest()

    expected = hashlib.sha256(b"".join(_pattern(i) for i in range(BIG // (1024 * 1024))))
    status, te, size, sha = run(fetch())
    assert (status, te, size, sha) == (200, "chunked", BIG, expected.hexdigest())


def test_websocket_relays_both_ways_with_the_subprotocol_and_close_code(world):
    async def talk():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(world.gw + "/workspaces/7/lab/api/kernels/k1/channels?session_id=s1",
                                    protocols=(KERNEL_PROTOCOL,),
                                    headers={"Cookie": f"slipway_session={GOOD}; _xsrf=x"}) as ws:
                got = [ws.protocol, (await ws.receive()).data]
                await ws.send_str("1+1")
                got.append((await ws.receive()).data)
                await ws.send_bytes(b"\x00\xff")
                got.append((await ws.receive()).data)
                await ws.send_str("close please")
                msg = await ws.receive()
                got.append((msg.type, msg.data, msg.extra))
                return got

    got = run(talk())
    assert got == [KERNEL_PROTOCOL, b"\x00\x01hello", "echo:1+1", b"echo:\x00\xff",
                   (WSMsgType.CLOSE, 4001, "kernel went away")]
    h = _headers(world.jupyter.seen[-1])
    assert h["authorization"] == [f"token {TOKEN}"] and h["cookie"] == ["_xsrf=x"]
    assert world.jupyter.seen[-1]["raw_path"] == "/workspaces/7/lab/api/kernels/k1/channels?session_id=s1"


def test_the_browsers_close_code_reaches_jupyter(world):
    async def talk():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(world.gw + "/workspaces/7/lab/api/kernels/k1/channels",
                                    headers={"Cookie": f"slipway_session={GOOD}"}) as ws:
                assert (await ws.receive()).data == b"\x00\x01hello"
                await ws.close(code=4002, message=b"tab closed")

    run(talk())
    deadline = time.monotonic() + 5
    while not world.jupyter.ws_closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert world.jupyter.ws_closed[0][0] == 4002


@pytest.mark.parametrize("cookie", [None, "slipway_session=forged", "remember_token=" + GOOD])
def test_outsiders_get_not_found_and_jupyter_sees_nothing(world, cookie):
    headers = {"Cookie": cookie} if cookie else {}
    status, _, body = run(_get(world.gw + "/workspaces/7/lab/echo", headers=headers))
    assert (status, body) == (404, b"not found\n")

    async def handshake():
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await s.ws_connect(world.gw + "/workspaces/7/lab/api/kernels/k1/channels",
                                   headers=headers)
            return e.value.status

    assert run(handshake()) == 404
    assert world.jupyter.seen == [] and world.touched == []


def test_other_paths_are_not_found_without_asking(world):
    auth = {"Cookie": f"slipway_session={GOOD}"}
    for path in ("/", "/workspaces/7", "/workspaces/7/labx", "/workspaces/07/lab", "/jobs/7/proxy/",
                 "/workspaces/x/lab/", "/workspaces/99999999999999999999/lab/"):
        status, _, _ = run(_get(world.gw + path, headers=auth))
        assert status == 404, path
    assert world.resolved == []


def test_a_workspace_that_is_not_running_says_so(world):
    status, _, body = run(_get(world.gw + "/workspaces/8/lab/", headers={"Cookie": f"slipway_session={GOOD}"}))
    assert (status, body) == (404, b"workspace 8 is not running\n")


def test_jupyter_not_answering_yet_is_502(world):
    auth = {"Cookie": f"slipway_session={GOOD}"}
    status, _, body = run(_get(world.gw + "/workspaces/9/lab/tree", headers=auth))
    assert status == 502 and body.startswith(b"workspace 9 does not answer yet")

    async def handshake():
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await s.ws_connect(world.gw + "/workspaces/9/lab/api/kernels/k1/channels", headers=auth)
            return e.value.status

    assert run(handshake()) == 502


def test_activity_is_recorded_at_most_once_a_second(world):
    auth = {"Cookie": f"slipway_session={GOOD}"}

    async def burst():
        async with aiohttp.ClientSession() as s:
            for _ in range(10):
                async with s.get(world.gw + "/workspaces/7/lab/echo", headers=auth) as r:
                    assert r.status == 200
            async with s.ws_connect(world.gw + "/workspaces/7/lab/api/kernels/k1/channels",
                                    headers=auth) as ws:
                await ws.receive()
                for i in range(5):
                    await ws.send_str(str(i))
                    await ws.receive()

    start = time.monotonic()
    run(burst())
    elapsed = time.monotonic() - start
    time.sleep(0.2)  # touch runs in the executor
    assert [j for j, _ in world.touched] == [7] * len(world.touched)
    assert 1 <= len(world.touched) <= 1 + int(elapsed)
    time.sleep(1.05)
    run(_get(world.gw + "/workspaces/7/lab/echo", headers=auth))
    time.sleep(0.2)
    assert len(world.touched) >= 2 and world.touched[-1][1] - world.touched[-2][1] >= 1.0


class _RssWatch:
    """The process's resident memory, sampled every 5 ms while inside ``with``; ``growth`` is
    the peak above the level at entry."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.growth = self.peak - self.base


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


# ------------------------------------------------ `slipway serve` starts the gateway beside waitress

def test_slipway_serve_runs_the_gateway_with_the_portals_logins(tmp_path, monkeypatch):
    import waitress
    from click.testing import CliRunner
    from sqlalchemy import select

    import portal.cli as cli_mod
    from portal.db import Job
    from portal.workspaces import credential
    from tests.support.fakes import make_services
    from tests.support.web import add_job, login, make_world

    svc = make_services(tmp_path)
    svc.node_address = lambda node: "127.0.0.1"
    ids = make_world(svc)
    gw_port = _closed_port()
    jupyter = FakeJupyter(job_id=0)
    upstream = ThreadedServer(web.Application(), "127.0.0.1", 0, name="fake-jupyter")
    job_id = add_job(svc, ids["proj"], branch="ws-1", state="running", pusher="carol", node="a4k-1",
                     port=upstream.port, kind="workspace")
    pending = add_job(svc, ids["proj"], branch="ws-2", state="pending", pusher="carol", kind="workspace")
    jupyter.job_id, jupyter.token = job_id, credential.token(svc.config.secret_key, job_id)
    upstream.app = jupyter.app()
    upstream.start()
    answers: dict = {}

    def fake_serve(app, **kw):  # while "waitress serves": the browser's side, through the gateway
        sessions = {}
        for who in ("carol", "mallory"):
            client = app.test_client()
            login(client, who)
            sessions[who] = {"Cookie": f"slipway_session={client.get_cookie('slipway_session').value}"}
        base = f"http://127.0.0.1:{gw_port}/workspaces/{job_id}/lab"
        answers["carol"] = run(_get(base + "/echo/x", headers=sessions["carol"]))
        answers["mallory"] = run(_get(base + "/echo/x", headers=sessions["mallory"]))
        answers["anonymous"] = run(_get(base + "/echo/x"))
        answers["pending"] = run(_get(f"http://127.0.0.1:{gw_port}/workspaces/{pending}/lab/",
                                      headers=sessions["carol"]))
        answers["task"] = run(_get(f"http://127.0.0.1:{gw_port}/workspaces/{ids['running']}/lab/",
                                   headers=sessions["carol"]))  # a task is no workspace

    monkeypatch.setattr(waitress, "serve", fake_serve)
    monkeypatch.setattr(cli_mod.serve, "_slipway_answers", lambda host, port: False)
    try:
        r = CliRunner().invoke(cli_mod.main, ["serve", "--no-reconciler", "--port", "8101",
                                              "--workspace-port", str(gw_port)],
                               obj=cli_mod.Ctx(services=svc), catch_exceptions=False)
    finally:
        upstream.stop()
    assert r.exit_code == 0, r.output
    assert f"127.0.0.1:{gw_port}" in r.output
    status, _, body = answers["carol"]
    assert status == 200 and json.loads(body)["raw_path"] == f"/workspaces/{job_id}/lab/echo/x"
    assert _headers(jupyter.seen[-1])["authorization"] == [f"token {jupyter.token}"]
    assert "cookie" not in _headers(jupyter.seen[-1])  # the portal's session stayed behind
    assert answers["mallory"][:1] == answers["anonymous"][:1] == (404,)
    assert answers["mallory"][2] == answers["anonymous"][2] == b"not found\n"
    assert answers["pending"][:3:2] == (404, f"workspace {pending} is not running (pending)\n".encode())
    assert answers["task"][:3:2] == (404, b"not found\n")
    assert len(jupyter.seen) == 1
    time.sleep(0.2)
    with svc.db.session() as s:
        assert s.scalar(select(Job.last_activity_at).where(Job.id == job_id)) is not None
    svc.db.dispose()
    with socket.socket() as s:  # the gateway stopped with the server
        s.bind(("127.0.0.1", gw_port))


# ----------------------------------------------------------------- the portal's session (auth.py)

@pytest.fixture
def portal(tmp_path):
    from portal.app import create_app
    from tests.support.fakes import make_services
    from tests.support.web import make_world

    svc = make_services(tmp_path)
    ids = make_world(svc)
    yield create_app(svc), ids
    svc.db.dispose()


def _user_of(app, cookies):
    """The user id the gateway lets in with ``cookies`` (the check ``portal.cli.serve`` makes)."""
    from portal.identity import web_sessions

    login = session_login(app, cookies)
    if login is None:
        return None
    svc = app.extensions["slipway"]
    with svc.db.session() as s:
        row = web_sessions.live_user(s, *login, now=svc.now(),
                                     lifetime_hours=svc.config.session_lifetime_hours)
    return None if row is None else row.id


def test_the_portal_session_cookie_names_the_logged_in_user(portal):
    from tests.support.web import login

    app, ids = portal
    client = app.test_client()
    assert session_login(app, {}) is None
    r = login(client, "carol")
    assert r.status_code == 302
    value = client.get_cookie("slipway_session").value
    assert _user_of(app, {"slipway_session": value}) == ids["carol"]
    assert session_login(app, {"session": value}) is None  # the configured name only
    tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    assert session_login(app, {"slipway_session": tampered}) is None
    assert session_login(app, {"slipway_session": "garbage"}) is None
    # signed by another portal (another secret key): not a session here
    other = app.session_interface.get_signing_serializer(app)
    other.secret_keys = [b"another-secret-key-entirely"]
    assert session_login(app, {"slipway_session": other.dumps({"_user_id": "1", "sid": "x"})}) is None


def test_a_logged_out_cookie_opens_no_workspace(portal):
    """A copy of the cookie kept from before logging out (another tab, a stolen cookie) is not
    a session any more: the gateway refuses it like the pages do."""
    from tests.support.web import csrf_token, login

    app, ids = portal
    client = app.test_client()
    login(client, "carol")
    value = client.get_cookie("slipway_session").value
    assert _user_of(app, {"slipway_session": value}) == ids["carol"]
    assert client.post("/logout", data={"csrf_token": csrf_token(client)}).status_code == 302
    assert session_login(app, {"slipway_session": value}) is not None   # still signed...
    assert _user_of(app, {"slipway_session": value}) is None             # ...but logged out


def test_an_anonymous_or_expired_session_has_no_user(portal, monkeypatch):
    from datetime import timedelta

    app, ids = portal
    client = app.test_client()
    client.get("/login")  # an anonymous session (a CSRF token only)
    value = client.get_cookie("slipway_session").value
    assert session_login(app, {"slipway_session": value}) is None
    signer = app.session_interface.get_signing_serializer(app)
    # a cookie signed with the portal's key but naming a session that was never opened
    forged = signer.dumps({"_user_id": str(ids["alice"]), "sid": "never-opened"})
    assert session_login(app, {"slipway_session": forged}) == (ids["alice"], "never-opened")
    assert _user_of(app, {"slipway_session": forged}) is None
    from tests.support.web import login

    login(client, "alice")
    fresh = client.get_cookie("slipway_session").value
    assert _user_of(app, {"slipway_session": fresh}) == ids["alice"]
    monkeypatch.setattr(time, "time", lambda real=time.time: real() + 40 * 86400)
    app.permanent_session_lifetime = timedelta(days=31)
    assert session_login(app, {"slipway_session": fresh}) is None  # older than Flask accepts


def test_stopping_the_gateway_closes_open_websockets_as_going_away():
    jupyter = FakeJupyter()
    upstream = ThreadedServer(jupyter.app(), "127.0.0.1", 0, name="fake-jupyter").start()
    gateway = ThreadedServer(make_gateway_app(lambda j, c: Target("127.0.0.1", upstream.port, TOKEN),
                                              lambda j: None), "127.0.0.1", 0, grace=1).start()

    async def talk():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(gateway.url + "/workspaces/7/lab/api/kernels/k1/channels") as ws:
                assert (await ws.receive()).data == b"\x00\x01hello"
                stopping = asyncio.get_running_loop().run_in_executor(None, gateway.stop)
                msg = await asyncio.wait_for(ws.receive(), 5)
                await stopping
                return msg.type, msg.data

    started = time.monotonic()
    try:
        assert run(talk()) == (WSMsgType.CLOSE, aiohttp.WSCloseCode.GOING_AWAY)
    finally:
        upstream.stop()
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while not jupyter.ws_closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert jupyter.ws_closed  # the kernel's socket was closed too


def test_the_credential_is_taken_out_of_every_text_answer(world):
    auth = {"Cookie": f"slipway_session={GOOD}", "Accept-Encoding": "gzip, br"}
    status, headers, body = run(_get(world.gw + "/workspaces/7/lab/lab", headers=auth))
    assert status == 200 and TOKEN.encode() not in body
    assert b'"token": "", "x": 1' in body and b"<p></p>" in body
    assert "accept-encoding" not in _headers(world.jupyter.seen[-1])   # asked uncompressed
    status, _h, body = run(_get(world.gw + "/workspaces/7/lab/gzipped", headers=auth))
    assert status == 502 and b"compressed" in body


def test_the_scrubber_catches_a_token_split_anywhere():
    from portal.workspaces.gateway.scrub import Scrubber, is_textual
    text = b"a" + TOKEN.encode() + b"b" + TOKEN.encode()
    for size in (1, 2, 5, 63, 64, 65, 200):
        sc = Scrubber(TOKEN)
        out = b"".join(sc.feed(text[i:i + size]) for i in range(0, len(text), size)) + sc.flush()
        assert out == b"ab", size
    assert is_textual("text/html; charset=utf-8") and is_textual("application/json")
    assert is_textual("application/x-ipynb+json") and not is_textual("image/png")
    assert not is_textual(None)
