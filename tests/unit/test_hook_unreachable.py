"""Issue 9 item 9: when the git hook cannot reach Slipway it says which URL it tried (a server
listening on another port than its announced base_url was refused as "unavailable" with no clue)."""
from __future__ import annotations

import io
import socket
import sys

from git_gateway import hook_program


def _run_hook(phase, environ):
    err = io.BytesIO()

    class E:
        buffer = err
    old = sys.stderr
    sys.stderr = E()
    try:
        rc = hook_program.main([f"/repo/hooks/{phase}"], environ,
                               io.BytesIO(b"0" * 40 + b" " + b"a" * 40 + b" refs/heads/x\n"))
    finally:
        sys.stderr = old
    return rc, err.getvalue().decode()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pre_receive_names_the_url_it_could_not_reach():
    url = f"http://127.0.0.1:{_closed_port()}/internal/hooks"
    rc, err = _run_hook("pre-receive", {"SLIPWAY_HOOK_URL": url, "SLIPWAY_HOOK_TIMEOUT": "2"})
    assert rc == 1
    assert err == (f"slipway: the Slipway server is unavailable, try again (tried {url}: "
                   "Connection refused)\n"), err


def test_post_receive_names_the_url_too_and_keeps_the_push():
    url = f"http://127.0.0.1:{_closed_port()}/internal/hooks"
    rc, err = _run_hook("post-receive", {"SLIPWAY_HOOK_URL": url, "SLIPWAY_HOOK_TIMEOUT": "2"})
    assert rc == 0
    assert f"the Slipway server at {url} could not be told (Connection refused)" in err


def test_credentials_in_the_url_are_not_shown():
    port = _closed_port()
    url = f"http://user:s3cret@127.0.0.1:{port}/internal/hooks"
    rc, err = _run_hook("pre-receive", {"SLIPWAY_HOOK_URL": url, "SLIPWAY_HOOK_TIMEOUT": "2"})
    assert rc == 1 and "s3cret" not in err and f"tried http://127.0.0.1:{port}/internal/hooks" in err


def test_a_url_that_is_not_http_is_named_with_the_problem():
    rc, err = _run_hook("pre-receive", {"SLIPWAY_HOOK_URL": "ftp://x/hooks"})
    assert rc == 1 and "(tried ftp://x/hooks: SLIPWAY_HOOK_URL must be an http(s) URL)" in err
