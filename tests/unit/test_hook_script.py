"""Issue 17 item 1: the bash git hook (git_gateway/hook_script.sh), the native one built from
git_gateway/hook_native.c, and their text callback (git_gateway/hook_wire.py) say exactly what
the Python hook program says, and hand over to it for what they do not do themselves (https, an
unreachable server, a push without the gateway). Every test runs against both."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from sqlalchemy import select

from git_gateway import hook_native, hook_program, hook_wire, hooks
from portal.app import create_app
from portal.db import Job
from tests.support.fakes import FakeBackend, commit_to_bare, make_services, seed
from tests.support.oneshot_http import oneshot_server

Z = "0" * 40
LINE = b"0" * 40 + b" " + b"a" * 40 + b" refs/heads/x\n"


@pytest.fixture(params=["bash", "native"])
def hook_dir(request, tmp_path):
    """The bash hook, and the native one (hook_native.c) that must say exactly the same."""
    assert hooks.find_bash(), "bash is needed"
    native = request.param == "native"
    if native and hook_native.compiler() is None:
        pytest.skip("no C compiler: the native hook is not built here (the bash one is used)")
    hooks.install(tmp_path / "hooks", python=sys.executable, native=native)
    is_elf = (tmp_path / "hooks" / "pre-receive").read_bytes().startswith(b"\x7fELF")
    assert is_elf == native and hooks.installed(tmp_path / "hooks")
    return tmp_path / "hooks"


def run(hook_dir, phase, environ, data=LINE):
    r = subprocess.run([str(hook_dir / phase)], input=data, env={"PATH": "/usr/bin:/bin", **environ},
                       capture_output=True, timeout=60)
    return r.returncode, r.stderr.decode()


def server(status=200, body=b"ok\n", ctype="text/plain"):
    """A one-shot HTTP server on loopback; returns (url, seen [(head, body)])."""
    return oneshot_server(status, body, ctype)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_text_callback_carries_what_the_json_one_does(hook_dir):
    url, seen = server(body=b"ok\nslipway: job 7 queued (a4000 x1)\n")
    environ = {"SLIPWAY_HOOK_URL": url, "SLIPWAY_HOOK_SECRET": "s3", "SLIPWAY_REPO": "t/p",
               "SLIPWAY_PUSHER": "alice", "SLIPWAY_PUSHER_IS_JOB": "0", "GIT_PUSH_OPTION_COUNT": "3",
               "GIT_PUSH_OPTION_0": "gpus=a6000:1", "GIT_PUSH_OPTION_1": 'a\\b"\x01 ü  x ',
               "GIT_PUSH_OPTION_2": "", "GIT_QUARANTINE_PATH": "/r/objects/incoming-1"}
    data = (b"0" * 40 + b" " + b"a" * 40 + b" refs/heads/feat/\xc3\xbc\n"
            + b"b" * 40 + b" " + b"0" * 40 + b" refs/heads/gone\n")
    assert run(hook_dir, "pre-receive", environ, data) == (0, "slipway: job 7 queued (a4000 x1)\n")
    head, body = seen[0]
    assert head.startswith("POST /internal/hooks HTTP/1.0\r\n")
    assert "X-Slipway-Hook-Secret: s3\r\n" in head and "Accept: text/plain\r\n" in head
    assert f"Content-Type: {hook_wire.MEDIA_TYPE}\r\n" in head
    payload, problems = hook_wire.parse(body)
    updates, _ = hook_program.parse_updates(data)
    assert not problems
    assert payload == hook_program.build_payload("pre-receive", updates, environ)
    assert payload["push_options"][1] == 'a\\b"\x01 ü  x '
    url, seen = server()
    assert run(hook_dir, "post-receive", {**environ, "SLIPWAY_HOOK_URL": url}, data) == (0, "")
    assert "quarantine" not in hook_wire.parse(seen[0][1])[0]


@pytest.mark.parametrize("phase, status, body, ctype, rc, out", [
    ("pre-receive", 409, b"refused\nslipway: branch busy\nsecond line\n", "text/plain", 1,
     "slipway: branch busy\nsecond line\n"),
    ("pre-receive", 403, b"ok\nx\n", "text/plain", 1, "x\n"),        # ok is not ok with a 4xx
    ("post-receive", 200, b"refused\nslipway: job 3 could not be submitted\n", "text/plain", 0,
     "slipway: job 3 could not be submitted\n"),
    ("pre-receive", 502, b"<html>bad gateway</html>", "text/html", 1,
     "slipway: the Slipway server is unavailable, try again (tried {url}: HTTP 502 from the "
     "Slipway server)\n"),
    ("post-receive", 502, b"<html>bad gateway</html>", "text/html", 0,
     "slipway: the push was stored but the Slipway server at {url} could not be told (HTTP 502 "
     "from the Slipway server); no job was started yet; a job this push reserved starts within a "
     "minute (slipway job list)\n"),
])
def test_replies(hook_dir, phase, status, body, ctype, rc, out):
    url, _ = server(status, body, ctype)
    assert run(hook_dir, phase, {"SLIPWAY_HOOK_URL": url, "SLIPWAY_HOOK_TIMEOUT": "5"}) == \
        (rc, out.format(url=url))


def test_what_bash_does_not_do_is_handed_to_the_python_program(hook_dir):
    url = f"http://127.0.0.1:{closed_port()}/internal/hooks"
    assert run(hook_dir, "pre-receive", {"SLIPWAY_HOOK_URL": url}) == (
        1, f"slipway: the Slipway server is unavailable, try again (tried {url}: Connection refused)\n")
    rc, err = run(hook_dir, "post-receive", {"SLIPWAY_HOOK_URL": url.replace("//", "//u:s3cret@")})
    assert rc == 0 and "could not be told" in err and "no job was started yet" in err
    assert "s3cret" not in err
    assert run(hook_dir, "pre-receive", {"SLIPWAY_HOOK_URL": "ftp://x/hooks"}) == (
        1, "slipway: the Slipway server is unavailable, try again (tried ftp://x/hooks: "
           "SLIPWAY_HOOK_URL must be an http(s) URL)\n")
    assert run(hook_dir, "pre-receive", {}) == (0, "")      # a push made without the gateway
    rc, err = run(hook_dir, "pre-receive", {}, b"garbage\n")
    assert rc == 1 and "malformed" in err


def test_a_push_option_with_a_line_break_is_refused_before_anything_is_sent(hook_dir):
    url, seen = server()
    rc, err = run(hook_dir, "pre-receive", {"SLIPWAY_HOOK_URL": url, "GIT_PUSH_OPTION_COUNT": "1",
                                            "GIT_PUSH_OPTION_0": "x\nrepo other/p"})
    assert rc == 1 and "push option 1 has a line break" in err and seen == []


def test_a_push_of_many_refs_is_sent_whole(hook_dir):
    """Thousands of refs (stdin far beyond a pipe's 64 KiB) reach the server, every line."""
    data = b"".join(b"0" * 40 + b" " + b"%040x" % i + b" refs/heads/b%d\n" % i for i in range(3000))
    url, seen = server(body=b"ok\n")
    assert run(hook_dir, "pre-receive", {"SLIPWAY_HOOK_URL": url, "SLIPWAY_REPO": "t/p",
                                         "SLIPWAY_PUSHER": "a"}, data) == (0, "")
    payload, problems = hook_wire.parse(seen[0][1])
    assert not problems and len(payload["updates"]) == 3000
    assert payload["updates"][-1]["ref"] == "refs/heads/b2999"


def test_a_server_that_never_answers_is_a_timeout(hook_dir):
    srv = socket.create_server(("127.0.0.1", 0))     # accepts (the kernel's backlog), never reads
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/internal/hooks"
    try:
        rc, err = run(hook_dir, "pre-receive", {"SLIPWAY_HOOK_URL": url, "SLIPWAY_HOOK_TIMEOUT": "1"})
    finally:
        srv.close()
    assert (rc, err) == (1, f"slipway: the Slipway server is unavailable, try again (tried {url}: "
                            f"timed out)\n")


def test_an_ipv6_callback_url_with_credentials(hook_dir):
    try:
        url, seen = oneshot_server(body=b"ok\nslipway: via v6\n", host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    url = url.replace("http://", "http://u:s3cret@")
    assert run(hook_dir, "pre-receive", {"SLIPWAY_HOOK_URL": url}) == (0, "slipway: via v6\n")
    head = seen[0][0]
    assert head.startswith("POST /internal/hooks HTTP/1.0\r\n") and "Host: [::1]:" in head
    assert "s3cret" not in head


def test_wire_refuses_what_is_not_a_callback():
    ok = b"slipway-hook 1\nphase pre-receive\nrepo t/p\npusher a\npusher-is-job 0\n"
    assert hook_wire.parse(ok)[0]["updates"] == []
    for bad, why in [(b"{}", "first line"), (ok + b"repo x/y\n", "twice"),
                     (ok + b"admin 1\n", "unknown key"), (ok.replace(b"pusher a\n", b""), "missing"),
                     (ok + b"option\n", "without a value")]:
        with pytest.raises(hook_wire.HookWireError, match=why):
            hook_wire.parse(bad)
    payload, problems = hook_wire.parse(ok + b"update a b\nupdate a b refs/heads/\xff\n")
    assert payload["updates"] == []
    assert problems[0] == "slipway: malformed hook input line" and "UTF-8" in problems[1]


def test_the_hooks_endpoint_reads_the_text_form(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    seed(svc)
    c = create_app(svc).test_client()
    try:
        sha = commit_to_bare(svc.config.repos_root / "nlp" / "proj.git", tmp_path / "w",
                             {"slipway-entrypoint.sh": "true\n"})
        h = {"X-Slipway-Hook-Secret": svc.config.hook_secret, "Accept": "text/plain",
             "Content-Type": hook_wire.MEDIA_TYPE}
        body = (f"slipway-hook 1\nphase pre-receive\nrepo nlp/proj\npusher alice\npusher-is-job 0\n"
                f"update {Z} {sha} refs/heads/exp-1\n")
        r = c.post("/internal/hooks", data=body, headers={**h, "X-Slipway-Hook-Secret": "no"})
        assert r.status_code == 403 and r.text.startswith("refused\n")
        assert c.post("/internal/hooks", data=body, headers=h).text == "ok\n"
        r = c.post("/internal/hooks", data=body.replace("pre-receive", "post-receive"), headers=h)
        assert r.text.startswith("ok\nslipway: job ") and r.text.endswith("queued (a4000 x1)\n")
        with svc.db.session() as s:
            assert len(s.scalars(select(Job)).all()) == 1 and len(backend.submits) == 1
        r = c.post("/internal/hooks", data=body + "update a b\n", headers=h)
        assert r.text == "refused\nslipway: malformed hook input line\n"
        r = c.post("/internal/hooks", data=body + "repo x/y\n", headers=h)
        assert r.status_code == 400 and "'repo' given twice" in r.text
    finally:
        svc.db.dispose()
