"""The request-body gate (portal/http/body_gate.py) on a real waitress server, over raw sockets:
a stranger's large body is refused before it is read; a caller with credentials sends as before;
and the checker (portal/identity/request_credentials.py) accepts exactly the doors' credentials."""
from __future__ import annotations

import base64
import socket
import threading
import time

import pytest

from portal.http import body_gate

LIMIT = 1024


def _app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"got {len(body)} bytes".encode()]


@pytest.fixture
def server():
    calls = []

    def allowed(headers, path):
        calls.append((dict(headers), path))
        if headers.get("AUTHORIZATION") == "Bearer boom":
            raise RuntimeError("database unreachable")
        return headers.get("AUTHORIZATION") == "Bearer good"

    srv = body_gate.server_factory(allowed, LIMIT)(_app, host="127.0.0.1", port=0, threads=2,
                                                    max_request_body_size=1 << 30)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    yield int(srv.effective_port), calls
    srv.close()
    t.join(5)


def _talk(port: int, head: str, body: bytes = b"", *, wait: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(head.encode() + b"\r\n")
        if body:
            try:
                s.sendall(body)
            except OSError:  # refused and closed while we were still sending
                pass
        out = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


def _head(method: str, length: int | None, *extra: str) -> str:
    lines = [f"{method} /upload HTTP/1.1", "Host: x", "Connection: close", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n"


def test_a_small_body_needs_no_credentials_and_the_gate_is_not_asked(server):
    port, calls = server
    out = _talk(port, _head("POST", 10), b"x" * 10)
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"got 10 bytes")
    assert calls == []


def test_a_strangers_large_body_is_refused_before_it_is_read(server):
    port, calls = server
    # only the headers are sent: the answer comes without waiting for the 512 MiB they announce
    started = time.monotonic()
    out = _talk(port, _head("PUT", 512 * 1024**2))
    assert out.startswith(b"HTTP/1.1 401 Unauthorized"), out[:200]
    assert b'www-authenticate: basic realm="slipway"' in out.lower()
    assert b"valid credentials" in out and b"got " not in out
    assert time.monotonic() - started < 4
    assert calls[0][1] == "/upload"


def test_a_chunked_body_of_unknown_size_needs_credentials_too(server):
    port, _calls = server
    out = _talk(port, _head("POST", None, "Transfer-Encoding: chunked"), b"5\r\nhello\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 401")
    out = _talk(port, _head("POST", None, "Transfer-Encoding: chunked", "Authorization: Bearer good"),
                b"5\r\nhello\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"got 5 bytes")


def test_a_caller_with_credentials_sends_a_large_body(server):
    port, calls = server
    out = _talk(port, _head("PUT", 5 * LIMIT, "Authorization: Bearer good"), b"y" * 5 * LIMIT)
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(f"got {5 * LIMIT} bytes".encode())
    assert calls[-1][0]["AUTHORIZATION"] == "Bearer good"


def test_expect_continue_is_never_answered_for_a_refused_body(server):
    port, _calls = server
    out = _talk(port, _head("PUT", 5 * LIMIT, "Expect: 100-continue", "Authorization: Bearer bad"))
    assert out.startswith(b"HTTP/1.1 401") and b"100 Continue" not in out
    out = _talk(port, _head("PUT", 5 * LIMIT, "Expect: 100-continue", "Authorization: Bearer good"),
                b"z" * 5 * LIMIT)
    assert out.startswith(b"HTTP/1.1 100 Continue") and out.endswith(f"got {5 * LIMIT} bytes".encode())


def test_a_failing_check_refuses(server):
    port, _calls = server
    out = _talk(port, _head("PUT", 5 * LIMIT, "Authorization: Bearer boom"))
    assert out.startswith(b"HTTP/1.1 401")


# ---------------------------------------------------------------- the checker: which credentials

@pytest.fixture
def checker(tmp_path):
    from portal.app import create_app
    from portal.db import Job
    from portal.identity import tokens
    from portal.jobs import runner_spec
    from tests.support.fakes import make_services
    from tests.support.web import make_world

    svc = make_services(tmp_path)
    ids = make_world(svc)
    app = create_app(svc)
    from portal.identity.request_credentials import make_checker

    with svc.db.transaction() as s:
        from portal.db import User
        alice = s.get(User, ids["alice"])
        tok = tokens.create_token(s, alice, "gate", now=svc.now())
        job = s.query(Job).filter(Job.state == "running").first()
        job.token_hash = runner_spec.hash_token("job-secret")
        job_id = job.id
    yield svc, app, make_checker(svc, app), tok, job_id
    svc.db.dispose()


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def test_the_checker_takes_what_the_doors_take_and_nothing_else(checker):
    from tests.support.web import csrf_token, login

    svc, app, check, tok, job_id = checker
    assert check({"AUTHORIZATION": _basic("alice", tok)}, "/alice/p.git/git-receive-pack")
    assert not check({"AUTHORIZATION": _basic("alice", tok + "x")}, "/x")
    assert not check({"AUTHORIZATION": _basic("bob", tok)}, "/x")      # alice's token, not bob's
    assert check({"AUTHORIZATION": f"Bearer {tok}"}, "/api/data")
    assert not check({"AUTHORIZATION": "Bearer swp_nothing-of-the-sort"}, "/api/data")
    assert not check({"AUTHORIZATION": "Basic !!!not-base64"}, "/x")
    # a job's token: as git's job:<id> user, or as Bearer on that job's own internal path only
    assert check({"AUTHORIZATION": _basic(f"job:{job_id}", "job-secret")}, "/x")
    assert not check({"AUTHORIZATION": _basic(f"job:{job_id}", "wrong")}, "/x")
    assert check({"AUTHORIZATION": "Bearer job-secret"}, f"/internal/jobs/{job_id}/events")
    assert not check({"AUTHORIZATION": "Bearer job-secret"}, f"/internal/jobs/{job_id + 1}/events")
    assert not check({"AUTHORIZATION": "Bearer job-secret"}, "/api/data")
    # the hooks' secret
    assert check({"X_SLIPWAY_HOOK_SECRET": svc.config.hook_secret}, "/internal/hooks")
    assert not check({"X_SLIPWAY_HOOK_SECRET": "guess"}, "/internal/hooks")
    # a portal login, while it lasts
    client = app.test_client()
    login(client, "alice")
    cookie = f"other=1; slipway_session={client.get_cookie('slipway_session').value}"
    assert check({"COOKIE": cookie}, "/uploads/1/objects/ab")
    client.post("/logout", data={"csrf_token": csrf_token(client)})
    assert not check({"COOKIE": cookie}, "/uploads/1/objects/ab")
    assert not check({}, "/login")
