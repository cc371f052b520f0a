"""Issue 17 item 4: more pushes at once than the web server has threads. The hooks' callback is
answered by the gateway's own listener (git_gateway/hook_listener.py), so a push's hooks never
wait for a web-server thread that only a finished push gives back (before: with the callback on
the web server, every thread held a push whose hook waited, until the hook timed out)."""
from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import pytest

from git_gateway import repos
from git_gateway.http import GitHttpApp
from tests.support.git_server import client_env, git, serve, static_authenticator

pytestmark = pytest.mark.timeout(120)

PUSHES = 12
THREADS = 4          # fewer web-server threads than pushes at once


def test_more_pushes_than_server_threads_all_get_their_hooks(tmp_path):
    seen: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def hooks(payload):
        time.sleep(0.2)  # the portal's checks and sbatch take a while: the pushes overlap
        with lock:
            seen.append((payload["phase"], payload["pusher"], payload["updates"][0]["ref"]))
        if payload["phase"] == "post-receive":
            return True, [f"slipway: job for {payload['updates'][0]['ref']} queued"], 200
        return True, [], 200

    repos.create_repo(tmp_path / "repos", "t", "p")
    app = GitHttpApp(tmp_path / "repos", static_authenticator({"alice": "pw"}), hook_url="",
                     hook_secret="s3cret", lfs_root=tmp_path / "lfs", hooks=hooks)
    env = client_env(tmp_path / "home")
    with serve(app, threads=THREADS) as base:
        url = base.replace("http://", "http://alice:pw@") + "/git/t/p.git"
        work = tmp_path / "w"
        git(tmp_path, "init", "-q", str(work), env=env)
        (Path(work) / "slipway-entrypoint.sh").write_text("true\n")
        git(work, "add", "-A", env=env)
        git(work, "commit", "-qm", "x", env=env)

        def push(i):
            return git(work, "push", url, f"HEAD:refs/heads/b{i}", env=env, check=False, timeout=90)

        with concurrent.futures.ThreadPoolExecutor(PUSHES) as pool:
            results = list(pool.map(push, range(PUSHES)))
        app.close()
    for i, r in enumerate(results):
        assert r.returncode == 0, r.stderr
        assert f"slipway: job for refs/heads/b{i} queued" in r.stderr
    for phase in ("pre-receive", "post-receive"):
        assert sorted(ref for ph, who, ref in seen if ph == phase and who == "alice") == \
            sorted(f"refs/heads/b{i}" for i in range(PUSHES))


def test_the_listener_checks_the_secret_and_the_form(tmp_path):
    import json
    import urllib.error
    import urllib.request

    from git_gateway.hook_listener import HookListener

    calls = []
    listener = HookListener(lambda p: (calls.append(p) or (True, ["hi"], 200)), "s3cret")
    try:
        def post(body, headers):
            req = urllib.request.Request(listener.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        text = (b"slipway-hook 1\nphase post-receive\nrepo t/p\npusher a\npusher-is-job 0\n"
                b"update a b refs/heads/x\n")
        th = {"Content-Type": "text/x-slipway-hook", "Accept": "text/plain"}
        assert post(text, {**th, "X-Slipway-Hook-Secret": "wrong"})[0] == 403
        assert post(text, th)[0] == 403 and calls == []
        assert post(text, {**th, "X-Slipway-Hook-Secret": "s3cret"}) == (200, "ok\nhi\n")
        assert calls[0]["updates"] == [{"ref": "refs/heads/x", "old": "a", "new": "b"}]
        status, body = post(json.dumps({"phase": "pre-receive", "updates": []}).encode(),
                            {"Content-Type": "application/json", "X-Slipway-Hook-Secret": "s3cret"})
        assert status == 200 and json.loads(body) == {"ok": True, "messages": ["hi"]}
        status, body = post(b"[[[", {"X-Slipway-Hook-Secret": "s3cret", "Accept": "text/plain"})
        assert status == 400 and body.startswith("refused\nslipway: hook payload is malformed")
        status, body = post(text.replace(b"update a b", b"update ab"),
                            {**th, "X-Slipway-Hook-Secret": "s3cret"})
        assert status == 200 and body == "ok\nhi\n"   # post-receive: bad lines are skipped
        assert calls[-1]["updates"] == []
    finally:
        listener.close()
