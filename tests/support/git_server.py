"""Small helpers to serve GitHttpApp (and a hook-callback recorder) on 127.0.0.1 for tests.

    with serve(app) as base_url: ...            # waitress in a thread, random free port

    python -m tests.support.git_server --repos R --lfs L --hook-url U --hook-secret S \
        --user alice:pw [--user job:42:tok] [--port 0]
prints ``PORT <n>`` on stdout when listening (used to measure the server's own RSS).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from contextlib import contextmanager
from typing import Callable

from git_gateway import hook_wire
from git_gateway.http import AccessDenied, GitHttpApp, Principal


def _stop(server) -> None:
    try:
        server.task_dispatcher.shutdown(timeout=5)
    except Exception:
        pass
    for ch in list(getattr(server, "_map", {}).values()):
        try:
            ch.close()
        except Exception:
            pass
    server.close()


@contextmanager
def serve(app, threads: int = 8, host: str = "127.0.0.1"):
    """Serve a WSGI app with waitress on a random free port; yields ``http://host:port``."""
    from waitress.server import create_server

    server = create_server(app, host=host, port=0, threads=threads,
                           max_request_body_size=4 << 30, channel_timeout=300,
                           clear_untrusted_proxy_headers=True, ident="slipway-test",
                           # poll(), not select(): channels closed by _stop from this thread
                           # show up as POLLNVAL instead of EBADF in the loop thread
                           asyncore_use_poll=True)
    t = threading.Thread(target=server.run, name="waitress", daemon=True)
    t.start()
    try:
        yield f"http://{host}:{server.effective_port}"
    finally:
        _stop(server)
        t.join(timeout=5)


def static_authenticator(users: dict[str, str], access: dict[str, set[str]] | None = None
                         ) -> Callable[[str, str, str, bool], Principal | None]:
    """authenticate() for tests: ``users`` name -> password; ``access`` name -> repo keys
    (absent = all repos). Names ``job:<n>`` are job principals."""
    def authenticate(repo_key: str, username: str, password: str, write: bool):
        if users.get(username) != password or not password:
            return None
        if access is not None and repo_key not in access.get(username, set()):
            raise AccessDenied(repo_key)
        return Principal(name=username, is_job=username.startswith("job:"))
    return authenticate


class HookRecorder:
    """WSGI hook-callback receiver: records payloads, answers via ``decide(payload)``."""

    def __init__(self, secret: str = "hook-secret",
                 decide: Callable[[dict], dict] | None = None):
        self.secret = secret
        self.decide = decide or (lambda p: {"ok": True, "messages": []})
        self.calls: list[dict] = []
        self.bad_secret = 0
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_SLIPWAY_HOOK_SECRET") != self.secret:
            with self._lock:
                self.bad_secret += 1
            start_response("403 Forbidden", [("Content-Type", "application/json")])
            return [b'{"ok": false, "messages": ["slipway: bad hook secret"]}']
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length)
        if environ.get("CONTENT_TYPE", "").startswith(hook_wire.MEDIA_TYPE):  # the bash hook
            payload, problems = hook_wire.parse(raw)
            if problems and payload["phase"] == "pre-receive":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [("refused\n" + "\n".join(problems) + "\n").encode()]
        else:
            payload = json.loads(raw.decode("utf-8"))
        with self._lock:
            self.calls.append(payload)
        reply = self.decide(payload)
        if environ.get("HTTP_ACCEPT") == "text/plain":   # what both hooks ask for
            lines = ["ok" if reply.get("ok") else "refused"] + [
                line for m in reply.get("messages") or [] for line in str(m).splitlines()]
            body = ("\n".join(lines) + "\n").encode("utf-8")
            ctype = "text/plain; charset=utf-8"
        else:
            body = json.dumps(reply).encode("utf-8")
            ctype = "application/json"
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]

    def phase(self, name: str) -> list[dict]:
        with self._lock:
            return [c for c in self.calls if c["phase"] == name]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", required=True)
    ap.add_argument("--lfs", required=True)
    ap.add_argument("--hook-url", default="")
    ap.add_argument("--hook-secret", default="")
    ap.add_argument("--user", action="append", default=[], help="name:password")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args(argv)
    users = {}
    for u in args.user:
        name, _, pw = u.rpartition(":")
        users[name] = pw
    app = GitHttpApp(args.repos, static_authenticator(users), args.hook_url, args.hook_secret,
                     args.lfs)
    from waitress.server import create_server
    server = create_server(app, host="127.0.0.1", port=args.port, threads=args.threads,
                           max_request_body_size=4 << 30, channel_timeout=300)
    print(f"PORT {server.effective_port}", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())


class Gateway:
    """A complete test gateway: repos/LFS roots under ``tmp``, a HookRecorder and GitHttpApp,
    both served by waitress. Use as a context manager."""

    def __init__(self, tmp, users: dict[str, str] | None = None,
                 access: dict[str, set[str]] | None = None,
                 decide: Callable[[dict], dict] | None = None, hook_secret: str = "hook-secret",
                 max_lfs_object_bytes: int | None = None):
        from pathlib import Path
        self.tmp = Path(tmp)
        self.repos_root = self.tmp / "repos"
        self.lfs_root = self.tmp / "lfs"
        self.users = dict(users or {"alice": "alice-pw", "bob": "bob-pw", "job:42": "job-token"})
        self.recorder = HookRecorder(hook_secret, decide)
        self._access = access
        self._max_lfs = max_lfs_object_bytes
        self._stack = None
        self.base_url = ""
        self.hook_url = ""

    def __enter__(self) -> "Gateway":
        from contextlib import ExitStack
        self._stack = ExitStack()
        hook_base = self._stack.enter_context(serve(self.recorder))
        self.hook_url = hook_base + "/internal/git-hook"
        self.app = GitHttpApp(self.repos_root, static_authenticator(self.users, self._access),
                              self.hook_url, self.recorder.secret, self.lfs_root,
                              max_lfs_object_bytes=self._max_lfs)
        self.base_url = self._stack.enter_context(serve(self.app))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def create(self, team: str = "team", project: str = "proj"):
        from git_gateway import repos
        return repos.create_repo(self.repos_root, team, project)

    def url(self, team: str = "team", project: str = "proj", user: str | None = None,
            password: str | None = None) -> str:
        """Remote URL; with ``user`` the credentials are embedded (test clients only)."""
        from urllib.parse import quote
        base = self.base_url
        if user is not None:
            pw = self.users.get(user, "") if password is None else password
            base = base.replace("http://", f"http://{quote(user, safe='')}:{quote(pw, safe='')}@")
        return f"{base}/git/{team}/{project}.git"


def client_env(home) -> dict[str, str]:
    """An isolated environment for test git clients (own HOME/global config, no prompts)."""
    import os
    from pathlib import Path
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / ".gitconfig"
    if not cfg.exists():
        cfg.write_text("[user]\n\tname = Test User\n\temail = test@example.com\n"
                       "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
                       "[protocol]\n\tversion = 2\n")
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "GIT_CONFIG_GLOBAL": str(cfg), "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8"}


def git(cwd, *args: str, env: dict | None = None, check: bool = True, timeout: float = 300):
    """Run a git client command for tests; returns CompletedProcess (text)."""
    import subprocess
    r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r
