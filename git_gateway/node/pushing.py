"""Pushing from the node: one ``git push --porcelain`` (``push``), whether a failure is worth
retrying (``is_transient``), and ``push_with_retry`` (standard library only).

Pushes that fail without a definite answer from the server (connection refused, reset, 5xx,
timeout, a hook that could not reach Slipway) are retried with exponential backoff (0.5 s,
1 s, 2 s, ... capped at 15 s) until the deadline has passed; a definite answer (the lease
refused, bad credentials, no such repository) is final.
"""
from __future__ import annotations

import logging
import re
import subprocess
import time
from dataclasses import dataclass

from .gitops import run_git

log = logging.getLogger(__name__)

DEFAULT_PUSH_RETRY_SECONDS = 150.0
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 15.0
PUSH_TIMEOUT = 120.0        # one push, when no deadline is nearer
MIN_PUSH_TIMEOUT = 5.0      # one push, when the deadline has (almost) passed
# stderr of a push that the server answered for good: retrying cannot help
_DEFINITE_STDERR = re.compile(r"Authentication failed|could not read (?:Username|Password)"
                              r"|repository '.*' not found|The requested URL returned error: 40[34]",
                              re.IGNORECASE)


@dataclass(frozen=True)
class PushOutcome:
    ok: bool
    flag: str | None        # porcelain flag: ' ', '+', '*', '=', '!', '-' ; None: no status line
    summary: str            # e.g. "[new branch]", "[rejected] (stale info)"
    returncode: int
    stderr: str

    @property
    def rejected(self) -> bool:
        return self.flag == "!"


def parse_porcelain(stdout: bytes | str) -> list[tuple[str, str, str]]:
    """``git push --porcelain`` -> [(flag, "from:to", summary)]."""
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
    out = []
    for line in text.splitlines():
        if len(line) >= 2 and line[1] == "\t":
            parts = line[2:].split("\t")
            out.append((line[0], parts[0], parts[1] if len(parts) > 1 else ""))
    return out


def push(cwd: str, env: dict[str, str], refspec: str, *, lease: str | None = None,
         remote: str = "origin", timeout: float | None = 120) -> PushOutcome:
    args = ["push", "--porcelain"]
    if lease:
        args.append(f"--force-with-lease={lease}")
    args += [remote, refspec]
    try:
        r = run_git(args, cwd, env, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return PushOutcome(False, None, "timed out", 124, "push timed out")
    status = parse_porcelain(r.stdout)
    stderr = r.stderr.decode("utf-8", "replace")
    if not status:
        return PushOutcome(False, None, "", r.returncode, stderr)
    flag, _ref, summary = status[-1]
    ok = r.returncode == 0 and flag in (" ", "+", "*", "=")
    return PushOutcome(ok, flag, summary, r.returncode, stderr)


def is_transient(out: PushOutcome) -> bool:
    """Whether a failed push may succeed if tried again (the server did not answer for good)."""
    if out.ok:
        return False
    if out.flag is None:            # no status line: connection refused/reset, 5xx, timeout
        return not _DEFINITE_STDERR.search(out.stderr or "")
    # "[remote rejected] (pre-receive hook declined)" when the hook could not reach Slipway,
    # "(failed to update ref)" / "(cannot lock ref ...)" under a concurrent update; but a lease
    # or fast-forward refusal ("[rejected] (stale info)", "(fetch first)") is an answer.
    return out.flag == "!" and out.summary.startswith("[remote rejected]")


def push_timeout(left: float | None) -> float:
    """How long one push may run when ``left`` seconds remain before the retry deadline (None:
    no deadline): PUSH_TIMEOUT at most, never longer than ``left`` (but MIN_PUSH_TIMEOUT at
    least, so a push that is always made gets a chance). After a TERM the deadline sits below the
    portal's hard-cancel grace, so a hung push must end before the job is SIGKILLed."""
    if left is None:
        return PUSH_TIMEOUT
    return max(MIN_PUSH_TIMEOUT, min(PUSH_TIMEOUT, left))


def push_with_retry(cwd: str, env: dict[str, str], refspec: str, *, lease: str | None = None,
                    deadline: float | None = None, max_attempts: int | None = None,
                    sleep=time.sleep, what: str = "push") -> tuple[PushOutcome, int]:
    """``push`` until it succeeds, gets a definite answer, ``max_attempts`` pushes were made or
    the next try would start after ``deadline`` (time.monotonic()). -> (last outcome, pushes).

    Always pushes at least once. Waits 0.5 s, 1 s, 2 s, ... (at most 15 s) between tries. Each
    push is cut off after ``push_timeout`` (the time left before ``deadline``, at most 120 s),
    so with a deadline the whole loop ends by ``deadline + MIN_PUSH_TIMEOUT``.
    """
    delay = RETRY_FIRST_DELAY
    n = 0
    while True:
        n += 1
        left = None if deadline is None else deadline - time.monotonic()
        # a hung push must end before the deadline (after a TERM: before the hard kill)
        out = push(cwd, env, refspec, lease=lease, timeout=push_timeout(left))
        if not is_transient(out):
            return out, n
        if max_attempts is not None and n >= max_attempts:
            return out, n
        if deadline is not None and time.monotonic() + delay > deadline:
            return out, n
        log.warning("%s failed (%s); retrying in %.1f s", what, _reason(out), delay)
        sleep(delay)
        delay = min(delay * 2, RETRY_MAX_DELAY)


def _reason(out: PushOutcome) -> str:
    return out.summary or _last_line(out.stderr) or f"git exited {out.returncode}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""
