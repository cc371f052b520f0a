"""Pushes served by ``git receive-pack --stateless-rpc`` itself, without ``git http-backend``.

``git http-backend`` is a CGI that, for a push, only writes the HTTP headers (and, for the ref
advertisement, one pkt-line naming the service) and then runs ``git receive-pack``: on the way
the ``git`` wrapper starts the dashed ``git-http-backend`` program, which starts ``git`` again.
The gateway has authenticated the request and found the repository already, so it writes those
few bytes itself and starts ``receive-pack`` directly: two process starts fewer on each of a
push's two requests (issue 17, docs/SPEED.md §1). What ``http-backend`` would add is kept: the
committer identity of the reflog entries (``REMOTE_USER`` at ``http.REMOTE_ADDR``), the
``GIT_PROTOCOL`` hand-over, the no-cache headers, the request content type check.

Anything else takes the ``http-backend`` path as before: fetches and clones (upload-pack,
protocol v2), a gzip-encoded request body, an unexpected content type, a client asking for
protocol v2 on a push (git never does; ``http-backend`` would then leave out the service line).
"""
from __future__ import annotations

from urllib.parse import parse_qs

SERVICE = "git-receive-pack"
REQUEST_TYPE = "application/x-git-receive-pack-request"
#: the advertisement's first pkt-line ("# service=git-receive-pack\n", 31 bytes) and a flush,
#: as ``http-backend`` writes it for protocol v0/v1
ADVERTISEMENT_HEAD = b"001f# service=git-receive-pack\n0000"
NO_CACHE = [("Expires", "Fri, 01 Jan 1980 00:00:00 GMT"), ("Pragma", "no-cache"),
            ("Cache-Control", "no-cache, max-age=0, must-revalidate")]


def applies(environ, rest: str, env: dict[str, str]) -> bool:
    """Is this request a push step the direct path serves exactly as ``http-backend`` would?"""
    if "version=2" in env.get("GIT_PROTOCOL", ""):
        return False
    method = environ.get("REQUEST_METHOD", "GET").upper()
    if rest == "/info/refs" and method in ("GET", "HEAD"):
        return parse_qs(environ.get("QUERY_STRING", "")).get("service", [None])[0] == SERVICE
    if rest == "/" + SERVICE and method == "POST":
        return (environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip() == REQUEST_TYPE
                and not environ.get("HTTP_CONTENT_ENCODING", "").strip())
    return False


def argv(git: str, env: dict[str, str], *, advertise: bool) -> list[str]:
    """``git receive-pack --stateless-rpc [--advertise-refs] .`` (run in the repository), with
    the reflog identity ``http-backend`` gives it set in ``env``."""
    user = env.get("REMOTE_USER") or "anonymous"
    host = env.get("REMOTE_ADDR") or "(none)"
    env.setdefault("GIT_COMMITTER_NAME", user)
    env.setdefault("GIT_COMMITTER_EMAIL", f"{user}@http.{host}")
    return [git, "receive-pack", "--stateless-rpc", *(["--advertise-refs"] if advertise else []),
            "."]


def headers(*, advertise: bool) -> list[tuple[str, str]]:
    kind = "advertisement" if advertise else "result"
    return [("Content-Type", f"application/x-{SERVICE}-{kind}"), *NO_CACHE]
