"""Running ``git http-backend`` as a CGI under the WSGI gateway (``http.GitHttpApp``): the
request body fed to its stdin by a thread, its headers parsed, its stdout streamed back as the
response, its stderr logged; ``CgiBody.close`` reaps the process."""
from __future__ import annotations

import logging
import subprocess
import threading
from typing import Callable

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


def content_length(environ) -> int | None:
    cl = environ.get("CONTENT_LENGTH", "")
    if cl and cl.strip().isdigit():
        return int(cl)
    return None  # chunked or unknown: read until EOF


def feed(src, dst, length: int | None, prefix: bytes = b"") -> None:
    """Copy the request body into the CGI's stdin without holding more than CHUNK in memory;
    ``prefix``: its first bytes, already read from ``src`` (counted in ``length``)."""
    remaining = None if length is None else length - len(prefix)
    try:
        if prefix:
            dst.write(prefix)
        while remaining is None or remaining > 0:
            n = CHUNK if remaining is None else min(CHUNK, remaining)
            data = src.read(n)
            if not data:
                break
            dst.write(data)
            if remaining is not None:
                remaining -= len(data)
    except (BrokenPipeError, ConnectionResetError, ValueError, OSError):
        pass  # backend exited early (e.g. a refused push): it has its answer
    finally:
        try:
            dst.close()
        except OSError:
            pass


def drain_stderr(stream, key: str) -> None:
    try:
        for line in iter(stream.readline, b""):
            log.warning("git http-backend [%s]: %s", key,
                        line.decode("utf-8", "replace").rstrip())
    except (OSError, ValueError):
        pass


def read_cgi_headers(stdout) -> tuple[str, list[tuple[str, str]], bytes]:
    buf = b""
    while True:
        for sep in (b"\r\n\r\n", b"\n\n"):
            idx = buf.find(sep)
            if idx >= 0:
                head, rest = buf[:idx], buf[idx + len(sep):]
                break
        else:
            if len(buf) > 64 * 1024:
                raise ValueError("CGI headers too long")
            data = stdout.read(CHUNK)
            if not data:
                raise ValueError("git http-backend ended before its headers")
            buf += data
            continue
        break
    status = "200 OK"
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        if not line.strip():
            continue
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            status = value
        elif name.lower() not in ("connection", "transfer-encoding", "keep-alive"):
            headers.append((name, value))
    return status, headers, rest


class CgiBody:
    """WSGI response iterable streaming the CGI's stdout; close() reaps the process."""

    def __init__(self, proc: subprocess.Popen, threads: list[threading.Thread],
                 on_done: Callable[[], None] | None = None):
        self.proc = proc
        self.threads = threads
        self.on_done = on_done        # after a whole answer (a push: the repository's upkeep)
        self.leftover = b""
        self._closed = False
        self._eof = False

    def __iter__(self):
        if self.leftover:
            data, self.leftover = self.leftover, b""
            yield data
        yield from self.chunks()

    def chunks(self):
        """The process's output as it comes, until its end (``_eof``)."""
        read = self.proc.stdout.read
        while True:
            data = read(CHUNK)
            if not data:
                self._eof = True
                return
            yield data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        proc = self.proc
        try:
            if proc.poll() is None:
                if not self._eof:
                    # The client went away mid-response (or headers failed): stop the backend.
                    proc.kill()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            for t in self.threads:
                t.join(timeout=5)
            for s in (proc.stdout, proc.stderr):
                try:
                    s.close()
                except OSError:
                    pass
        if self.on_done is not None and proc.returncode == 0:
            self.on_done()
