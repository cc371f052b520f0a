"""``GitHttpApp``: plain WSGI app serving git smart HTTP (via ``git http-backend``) and git-lfs.

URLs (docs/ARCHITECTURE.md): ``http://HOST/git/<team>/<project>.git/...``. The app accepts
PATH_INFO both with the ``/git`` prefix (served at the site root) and without it (mounted at
``/git``, e.g. by a dispatcher middleware).

Served endpoints, everything else is 404:
    GET  …/info/refs?service=git-upload-pack|git-receive-pack
    POST …/git-upload-pack, …/git-receive-pack              (write = receive-pack)
    POST …/info/lfs/objects/batch, PUT/GET …/info/lfs/objects/<oid>, POST …/info/lfs/locks/verify

Auth: HTTP Basic -> ``authenticate(repo_key, username, password, write) -> Principal | None``.
No/invalid credentials -> 401 with ``WWW-Authenticate: Basic realm="Slipway"``; the callback may
raise ``AccessDenied`` (no access) -> 404, same as an unknown repository.

Bodies are streamed both ways: the request body is copied into ``git http-backend``'s stdin by a
feeder thread in 64 KiB pieces and the response is yielded as it comes out of the process.
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qs

from . import cgi
from . import lfs as lfs_mod
from . import post_receive, push_report, receive_pack
from . import repos
from .hook_listener import Handle, HookListener
from .maintenance import Maintenance
from .node.basic_auth import basic_header  # noqa: F401  (the node program uses it too)

log = logging.getLogger(__name__)

#: git settings for every backend run, above each repository's config (so they hold for
#: repositories made by older versions too). ``receive.unpackLimit`` at git's default: a push's
#: objects arrive loose (``unpack-objects``) instead of as a pack per push (``index-pack``, ~2 ms
#: more, a pack file fsynced), and the pre-receive entrypoint check reads them without git
#: (``objects``); ``maintenance`` packs them in the background. ``receive.autogc`` off: with
#: ``gc.auto=0`` the ``git gc --auto`` that receive-pack starts after every push did nothing but
#: cost a process (~1.6 ms of the push); ``maintenance`` runs it in the background instead.
BACKEND_CONFIG: tuple[tuple[str, str], ...] = (("receive.unpackLimit", "100"),
                                               ("receive.autogc", "false"))
REALM = 'Basic realm="Slipway"'
_PATH_RE = re.compile(
    r"/(?P<team>[a-z0-9][a-z0-9._-]{0,62})/(?P<project>[a-z0-9][a-z0-9._-]{0,62})\.git"
    r"(?P<rest>/[^?]*)")
_PROTO_RE = re.compile(r"[A-Za-z0-9=:._-]{1,100}")
_JOB_USER_RE = re.compile(r"job:\d+")


@dataclass(frozen=True)
class Principal:
    """Who is pushing/pulling. ``name`` becomes SLIPWAY_PUSHER (``job:<id>`` for jobs)."""
    name: str
    is_job: bool = False


class AccessDenied(Exception):
    """Raised by ``authenticate`` when the credentials are valid but give no access (-> 404)."""


Authenticate = Callable[[str, str, str, bool], "Principal | None"]


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic …`` -> (username, password) or None.

    RFC 7617 splits at the first colon. Exception, for the runner's job credentials
    (username ``job:<id>``): ``job:<digits>:<token>`` parses as ("job:<digits>", "<token>").
    """
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    # A client may send the same header twice (git-lfs: http.extraHeader + the action's header);
    # servers join repeated headers with ", " and base64 has no comma: take the first.
    value = value.split(",", 1)[0].strip()
    if scheme.lower() != "basic" or not value:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if ":" not in text:
        return None
    user, _, password = text.partition(":")
    if user == "job":
        head, sep, tail = password.partition(":")
        if sep and head.isdigit() and _JOB_USER_RE.fullmatch(f"job:{head}"):
            user, password = f"job:{head}", tail
    return user, password


def _add_config(env: dict[str, str], key: str, value: str) -> None:
    """One more ``GIT_CONFIG_KEY_n``/``VALUE_n`` pair in a backend environment."""
    n = int(env.get("GIT_CONFIG_COUNT", "0"))
    env[f"GIT_CONFIG_KEY_{n}"], env[f"GIT_CONFIG_VALUE_{n}"] = key, value
    env["GIT_CONFIG_COUNT"] = str(n + 1)


def _simple(start_response, status: str, body: bytes = b"", ctype: str = "text/plain; charset=utf-8",
            extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body))),
               ("Cache-Control", "no-cache")]
    headers.extend(extra or [])
    start_response(status, headers)
    return [body]


class GitHttpApp:
    def __init__(self, repos_root: str | os.PathLike, authenticate: Authenticate,
                 hook_url: str, hook_secret: str, lfs_root: str | os.PathLike, *,
                 max_lfs_object_bytes: int | None = None, git: str = "git",
                 hook_timeout_s: float | None = None, hooks: Handle | None = None,
                 direct_receive_pack: bool = True,
                 gateway_hooks_dir: str | os.PathLike | None = None):
        """``hooks``: the hook callback, called in this process (``hook_listener``: the hooks
        then never wait for a web-server thread); without it the hooks call ``hook_url``.
        ``direct_receive_pack``: pushes run ``git receive-pack`` itself (``receive_pack``);
        False: everything through ``git http-backend``. ``gateway_hooks_dir`` (with ``hooks``):
        the post-receive of those pushes is run here (``push_report``), the pre-receive alone
        installed there; without it the repositories' own hooks run both."""
        self.repos_root = Path(repos_root).resolve()
        self.lfs_root = Path(lfs_root).resolve()
        self.authenticate = authenticate
        self.hook_url = hook_url
        self.hook_secret = hook_secret
        self.git = git
        self.hook_timeout_s = hook_timeout_s
        self.direct_receive_pack = direct_receive_pack
        self.gateway_hooks = post_receive.pre_receive_only(gateway_hooks_dir) \
            if gateway_hooks_dir is not None and hooks is not None else None
        self.hook_listener = HookListener(hooks, hook_secret) if hooks is not None else None
        self.maintenance = Maintenance(git, umask=repos.PRIVATE_UMASK)
        self.lfs = lfs_mod.LfsApi(lfs_mod.LfsStore(self.lfs_root),
                                  max_object_bytes=max_lfs_object_bytes)

    def close(self) -> None:
        """Stop the hook listener (when there is one) and the repositories' upkeep."""
        if self.hook_listener is not None:
            self.hook_listener.close()
        self.maintenance.close()

    # ---------------------------------------------------------------- routing
    def _route(self, path: str):
        for candidate in (path, path[4:] if path.startswith("/git/") else None):
            if candidate is None:
                continue
            m = _PATH_RE.fullmatch(candidate)
            if m:
                try:
                    repos.validate_name(m["team"], "team")
                    repos.validate_name(m["project"], "project")
                except repos.InvalidName:
                    continue
                return m["team"], m["project"], m["rest"]
        return None

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        method = environ.get("REQUEST_METHOD", "GET").upper()
        routed = self._route(path)
        if routed is None:
            return _simple(start_response, "404 Not Found", b"not found\n")
        team, project, rest = routed
        key = f"{team}/{project}"

        is_lfs = rest.startswith("/info/lfs/")
        if is_lfs:
            op = self.lfs.classify(method, rest[len("/info/lfs"):])
            if op is None:
                return self.lfs.error(start_response, "404 Not Found", "not found")
            write = op.write
        else:
            service = self._git_service(method, rest, environ.get("QUERY_STRING", ""))
            if service is None:
                return _simple(start_response, "404 Not Found", b"not found\n")
            write = service == "git-receive-pack"

        creds = parse_basic(environ.get("HTTP_AUTHORIZATION"))
        if creds is None:
            return self._challenge(start_response, is_lfs)
        if is_lfs and op.needs_body_for_write:
            # The batch operation (upload/download) decides read vs write: read the small JSON
            # body first (bounded), then authenticate with the right flag.
            try:
                body = self.lfs.read_json_body(environ)
            except lfs_mod.LfsError as e:
                return self.lfs.error(start_response, e.status, e.message)
            op = op.with_body(body)
            write = op.write
        try:
            principal = self.authenticate(key, creds[0], creds[1], write)
        except AccessDenied:
            principal = False
        except Exception:  # the portal's store is down: say so, don't leak details
            log.exception("authenticate callback failed for %s", key)
            return _simple(start_response, "503 Service Unavailable",
                           b"authentication is unavailable, try again\n")
        if principal is None:
            return self._challenge(start_response, is_lfs)
        if principal is False or not repos.repo_exists(self.repos_root, team, project):
            if is_lfs:
                return self.lfs.error(start_response, "404 Not Found", "Repository not found")
            return _simple(start_response, "404 Not Found", b"Repository not found\n")

        if is_lfs:
            return self.lfs.handle(environ, start_response, team, project, op,
                                   authorization=environ.get("HTTP_AUTHORIZATION", ""))
        return self._run_backend(environ, start_response, team, project, rest, principal)

    @staticmethod
    def _git_service(method: str, rest: str, query: str) -> str | None:
        if rest == "/info/refs" and method in ("GET", "HEAD"):
            svc = parse_qs(query).get("service", [None])[0]
            return svc if svc in ("git-upload-pack", "git-receive-pack") else None
        if method == "POST" and rest in ("/git-upload-pack", "/git-receive-pack"):
            return rest[1:]
        return None

    def _challenge(self, start_response, is_lfs: bool):
        extra = [("WWW-Authenticate", REALM)]
        if is_lfs:
            extra.append(("LFS-Authenticate", REALM))
            return self.lfs.error(start_response, "401 Unauthorized", "Credentials needed",
                                  extra=extra)
        return _simple(start_response, "401 Unauthorized", b"authentication required\n",
                       extra=extra)

    # ------------------------------------------------------------ http-backend
    def backend_env(self, environ, team: str, project: str, rest: str,
                    principal: Principal) -> dict[str, str]:
        name, is_job = principal.name, principal.is_job
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "LANG": "C.UTF-8",
            "GIT_PROJECT_ROOT": str(self.repos_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{team}/{project}.git{rest}",
            "REQUEST_METHOD": environ.get("REQUEST_METHOD", "GET"),
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "REMOTE_USER": name.replace("\0", ""),
            "REMOTE_ADDR": environ.get("REMOTE_ADDR", ""),
            "SERVER_PROTOCOL": environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            "GIT_TERMINAL_PROMPT": "0",
            "SLIPWAY_HOOK_URL": (self.hook_listener.url if self.hook_listener is not None
                                 else self.hook_url or ""),
            "SLIPWAY_HOOK_SECRET": self.hook_secret or "",
            "SLIPWAY_REPO": f"{team}/{project}",
            "SLIPWAY_PUSHER": name.replace("\0", ""),
            "SLIPWAY_PUSHER_IS_JOB": "1" if is_job else "0",
            # what every git run here uses, over each repository's own config (BACKEND_CONFIG)
            "GIT_CONFIG_COUNT": str(len(BACKEND_CONFIG)),
            **{f"GIT_CONFIG_{kind}_{i}": v for i, kv in enumerate(BACKEND_CONFIG)
               for kind, v in zip(("KEY", "VALUE"), kv)},
        }
        if self.hook_timeout_s is not None:
            env["SLIPWAY_HOOK_TIMEOUT"] = str(self.hook_timeout_s)
        cl = environ.get("CONTENT_LENGTH", "")
        if cl and cl.isdigit():
            env["CONTENT_LENGTH"] = cl
        enc = environ.get("HTTP_CONTENT_ENCODING", "")
        if enc:
            env["HTTP_CONTENT_ENCODING"] = enc
        proto = environ.get("HTTP_GIT_PROTOCOL", "")
        if proto and _PROTO_RE.fullmatch(proto):
            env["GIT_PROTOCOL"] = proto
            env["HTTP_GIT_PROTOCOL"] = proto
        return env

    def _run_backend(self, environ, start_response, team, project, rest, principal):
        env = self.backend_env(environ, team, project, rest, principal)
        has_body = environ.get("REQUEST_METHOD", "GET").upper() == "POST"
        direct = self.direct_receive_pack and receive_pack.applies(environ, rest, env)
        argv, cwd = [self.git, "http-backend"], None
        if direct:
            argv, cwd = receive_pack.argv(self.git, env, advertise=not has_body), \
                repos.repo_path(self.repos_root, team, project)
        prefix, commands = b"", None
        if direct and has_body and self.gateway_hooks is not None:
            try:   # the push's command list: the post-receive is then run here (push_report)
                commands = push_report.read_commands(environ["wsgi.input"].read)
                prefix = commands.consumed
            except push_report.NotAPush as exc:
                prefix = exc.args[1]   # what was read goes on to receive-pack
            if commands is not None and commands.sideband and commands.reported:
                _add_config(env, "core.hooksPath", str(self.gateway_hooks))
                if not principal.is_job:   # the pre-receive's checks, while git unpacks
                    threading.Thread(target=self._pre_check, name="git-pre-check", daemon=True,
                                     args=(f"{team}/{project}", principal, commands)).start()
            else:
                commands = None
        proc = subprocess.Popen(argv, env=env, cwd=cwd,
                                stdin=subprocess.PIPE if has_body else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                                umask=repos.PRIVATE_UMASK)  # pushed objects: the server's alone
        threads = []
        if has_body:
            t = threading.Thread(target=cgi.feed, name="git-http-feed", daemon=True,
                                 args=(environ["wsgi.input"], proc.stdin,
                                       cgi.content_length(environ), prefix))
            t.start()
            threads.append(t)
        t = threading.Thread(target=cgi.drain_stderr, name="git-http-stderr", daemon=True,
                             args=(proc.stderr, f"{team}/{project}"))
        t.start()
        threads.append(t)
        pushed = repos.repo_path(self.repos_root, team, project) \
            if rest == "/git-receive-pack" else None
        upkeep = (lambda: self.maintenance.after_push(pushed)) if pushed is not None else None
        if commands is not None:
            body = post_receive.PostReceiveBody(proc, threads, on_done=upkeep, after=lambda refs: (
                self._post_receive(f"{team}/{project}", principal, commands, refs)))
        else:
            body = cgi.CgiBody(proc, threads, on_done=upkeep)
        if direct:
            body.leftover = b"" if has_body else receive_pack.ADVERTISEMENT_HEAD
            start_response("200 OK", receive_pack.headers(advertise=not has_body))
            return body
        try:
            status, headers, leftover = cgi.read_cgi_headers(proc.stdout)
        except Exception as e:
            body.close()
            log.error("git http-backend failed for %s%s: %s", team, project, e)
            return _simple(start_response, "502 Bad Gateway", b"git backend failed\n")
        body.leftover = leftover
        start_response(status, headers)
        return body

    def _post_receive(self, repo: str, principal: Principal, commands, refs: list[str]
                      ) -> list[str]:
        """The post-receive of a push, in this process: the hook callback's own payload for the
        commands whose refs the report says moved; its messages for the client."""
        moved = set(refs)
        payload = {"phase": "post-receive", "repo": repo, "pusher": principal.name,
                   "pusher_is_job": principal.is_job, "push_options": [],
                   "updates": [{"old": old, "new": new, "ref": ref}
                               for old, new, ref in commands.updates if ref in moved]}
        _ok, messages, _status = self.hook_listener.handle(payload)
        return messages

    def _pre_check(self, repo: str, principal: Principal, commands) -> None:
        """Ask for the pre-receive's checks ahead (the dispatcher's ``pre-check`` phase), with
        what the pre-receive hook will send for this push."""
        try:
            self.hook_listener.handle({
                "phase": "pre-check", "repo": repo, "pusher": principal.name,
                "pusher_is_job": principal.is_job, "push_options": list(commands.options),
                "updates": [{"old": o, "new": n, "ref": r} for o, n, r in commands.updates]})
        except Exception:  # noqa: BLE001 — only a head start: the pre-receive checks anyway
            log.exception("pre-check failed")
