"""Slipway's git hook program (pre-receive and post-receive). STANDARD LIBRARY ONLY.

This file's source is copied into ``<repo>.git/hooks/pre-receive`` and ``post-receive`` with the
absolute path of the installing Python in the shebang (see git_gateway.hooks.install), so it must
not import anything from Slipway. The phase is the hook's file name.

It reads ``<old> <new> <ref>`` lines from stdin and the push options from
GIT_PUSH_OPTION_COUNT / GIT_PUSH_OPTION_<n>, POSTs the JSON of docs/ARCHITECTURE.md
("Hook callback") to $SLIPWAY_HOOK_URL with header X-Slipway-Hook-Secret, prints each returned
message to stderr (git shows them as ``remote: ...``) and exits 0 when the reply says ok, else 1.

Extra (additive) field in the payload: ``"quarantine"`` = $GIT_QUARANTINE_PATH during
pre-receive (the directory holding the pushed objects until the hook accepts them; pass it to
git_gateway.repos.tree_entry/read_file/check_entrypoint to look inside the pushed commit).
"""
import os
import sys

import _socket  # not ``socket``: its enum/selectors imports would double the hook's start-up time

UNAVAILABLE = "slipway: the Slipway server is unavailable, try again"
ZERO = "0" * 40


def _say(msg):
    data = (str(msg).rstrip("\n") + "\n").encode("utf-8", "replace")
    try:
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()
    except Exception:
        pass


def _clean(value):
    """A str from the environment (maybe undecodable bytes) as valid Unicode."""
    return os.fsencode(value).decode("utf-8", "replace")


def parse_updates(data):
    """``old new ref`` lines (bytes) -> (updates, problems)."""
    updates, problems = [], []
    for raw in data.split(b"\n"):
        raw = raw.rstrip(b"\r")
        if not raw:
            continue
        parts = raw.split(b" ", 2)
        if len(parts) != 3:
            problems.append("slipway: malformed hook input line")
            continue
        old, new, ref = parts
        try:
            ref_s = ref.decode("utf-8")
        except UnicodeDecodeError:
            problems.append("slipway: ref names must be valid UTF-8: %r" % ref)
            continue
        updates.append({"ref": ref_s, "old": old.decode("ascii", "replace"),
                        "new": new.decode("ascii", "replace")})
    return updates, problems


def push_options(environ):
    try:
        count = int(environ.get("GIT_PUSH_OPTION_COUNT", "0") or 0)
    except ValueError:
        count = 0
    return [_clean(environ.get("GIT_PUSH_OPTION_%d" % i, "")) for i in range(count)]


def build_payload(phase, updates, environ):
    payload = {
        "phase": phase,
        "repo": _clean(environ.get("SLIPWAY_REPO", "")),
        "pusher": _clean(environ.get("SLIPWAY_PUSHER", "")),
        "pusher_is_job": environ.get("SLIPWAY_PUSHER_IS_JOB", "0") == "1",
        "updates": updates,
        "push_options": push_options(environ),
    }
    if phase == "pre-receive" and environ.get("GIT_QUARANTINE_PATH"):
        payload["quarantine"] = _clean(environ["GIT_QUARANTINE_PATH"])
    return payload


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def to_json(value):
    """JSON text of dicts, lists, str, bool and None (``json`` alone is ~5 ms to import)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in _ESCAPES:
                out.append(_ESCAPES[ch])
            elif ch < " " or "\ud800" <= ch <= "\udfff" or ch == "\u2028" or ch == "\u2029":
                out.append("\\u%04x" % ord(ch))
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(value, dict):
        return "{" + ", ".join("%s: %s" % (to_json(str(k)), to_json(v)) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    raise TypeError("cannot encode %r" % type(value))


def _connect(host, port, timeout):
    err = OSError("cannot resolve %s" % host)
    try:  # an ASCII name as bytes: a str would load the idna codec (and re, enum: ~8 ms)
        name = host.encode("ascii")
    except UnicodeEncodeError:
        name = host
    for family, kind, proto, _name, addr in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(addr)
            return sock
        except OSError as e:
            sock.close()
            err = e
    raise err


def _split_url(url):
    """``http(s)://host[:port]/path`` -> (scheme, host, port, path)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError("SLIPWAY_HOOK_URL must be an http(s) URL")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
    if not host:
        host, port = hostport, ""
    return scheme, host.strip("[]"), int(port or (443 if scheme == "https" else 80)), "/" + path


def _post(url, body, headers, timeout):
    """POST ``body``; return (status, response body). Plain sockets for http (the usual
    loopback callback): a hook runs on every push, and urllib alone costs ~50 ms to import."""
    scheme, host, port, path = _split_url(url)
    if scheme == "https":
        import http.client  # noqa: PLC0415 — only for https callbacks

        conn = http.client.HTTPSConnection(host, port, timeout=timeout)
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(1 << 20)
    head = "POST %s HTTP/1.0\r\nHost: %s:%d\r\nContent-Length: %d\r\n" % (path, host, port, len(body))
    head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
    sock = _connect(host, port, timeout)
    try:
        sock.sendall(head.encode("latin-1") + body)
        chunks, size = [], 0
        while size < (2 << 20):
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        sock.close()
    raw = b"".join(chunks)
    header, sep, payload = raw.partition(b"\r\n\r\n")
    status_line = header.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError("the Slipway server sent a malformed HTTP reply")
    return int(status_line[1]), payload


def call(url, secret, payload, timeout):
    """POST the payload; return (ok, messages) or raise OSError when unreachable/garbled.

    The reply is asked for as text: ``ok`` or ``refused`` on the first line, then one message
    per line (a JSON reply ``{"ok": ..., "messages": [...]}`` is understood too).
    """
    body = to_json(payload).encode("utf-8")
    status, raw = _post(url, body, {
        "Content-Type": "application/json",
        "Accept": "text/plain",
        "X-Slipway-Hook-Secret": secret,
        "User-Agent": "slipway-hook",
        "Connection": "close",
    }, timeout)
    text = raw.decode("utf-8", "replace")
    first, _, rest = text.partition("\n")
    if first in ("ok", "refused"):
        return first == "ok" and status < 400, [m for m in rest.split("\n") if m]
    import json  # noqa: PLC0415 — only for a server that answers in JSON

    try:
        reply = json.loads(text)
    except Exception:
        raise OSError("HTTP %s from the Slipway server" % status if status >= 400
                      else "the Slipway server sent a reply that is neither text nor JSON")
    if not isinstance(reply, dict) or (status >= 400 and "ok" not in reply):
        raise OSError("HTTP %s from the Slipway server" % status if status >= 400
                      else "the Slipway server sent an unexpected reply")
    msgs = reply.get("messages") or []
    if not isinstance(msgs, list):
        msgs = [msgs]
    # A refusal may come with a JSON body and a 4xx status.
    return bool(reply.get("ok")) and status < 400, [str(m) for m in msgs]


def _shown_url(url):
    """The callback URL as the user may see it (no user:password@ part)."""
    scheme, sep, rest = _clean(url).partition("://")
    hostport, slash, path = rest.partition("/")
    return scheme + sep + hostport.rpartition("@")[2] + slash + path


def _reason(exc):
    """Why the callback failed, in words (``[Errno 111] Connection refused`` -> the strerror)."""
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason) or exc.__class__.__name__


def main(argv=None, environ=None, stdin=None):
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    phase = os.path.basename(argv[0])
    if phase not in ("pre-receive", "post-receive"):
        phase = argv[1] if len(argv) > 1 else phase
    data = (stdin if stdin is not None else sys.stdin.buffer).read()
    updates, problems = parse_updates(data)
    if problems and phase == "pre-receive":
        for p in problems:
            _say(p)
        return 1
    url = environ.get("SLIPWAY_HOOK_URL", "")
    if not url:
        # Not a push through the Slipway gateway (someone with filesystem access): nothing to do.
        return 0
    secret = environ.get("SLIPWAY_HOOK_SECRET", "")
    try:
        timeout = float(environ.get("SLIPWAY_HOOK_TIMEOUT", "") or 60)
    except ValueError:
        timeout = 60.0
    payload = build_payload(phase, updates, environ)
    try:
        ok, messages = call(url, secret, payload, timeout)
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections are OSErrors
        if phase == "pre-receive":
            # name the URL tried: a server on another port than the one it announces (its
            # base_url) is the usual cause, and the only one the user can see from here
            _say("%s (tried %s: %s)" % (UNAVAILABLE, _shown_url(url), _reason(e)))
            return 1
        _say("slipway: the push was stored but the Slipway server at %s could not be told (%s); "
             "no job was started yet; a job this push reserved starts within a minute (slipway job list)"
             % (_shown_url(url), _reason(e)))
        return 0
    for m in messages:
        _say(m)
    if phase == "pre-receive":
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
