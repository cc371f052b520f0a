"""First come, first served for short requests: at most ``slots`` of them run at once.

Pages, the API and static files are short and CPU-bound. On a few cores under the GIL, letting
every server thread work on one at the same time shares the CPU out evenly, so each page takes as
long as *all* the requests in flight together, and the interpreter spends its time switching
threads. Admitting a few at a time, in arrival order, lets each one finish in its own CPU time:
with 20 clients on 2 cores it halved page p95 and cut server CPU by a quarter (bench/RESULTS.md).

Long requests are not admitted through the gate, so they can never hold the short ones up:
git pushes and clones (``/git`` is mounted outside this middleware), the hooks and runner events
(``/internal``: a push waits on them), the job proxy, and streamed bodies (CSV exports), whose
slot is given back as soon as the view has returned, before the body is streamed.
"""
from __future__ import annotations

import os
import re
import threading
from collections import deque
from typing import Callable, Iterable

BYPASS = re.compile(r"^/(internal/|healthz$|jobs/\d+/proxy(/|$))")


def default_slots() -> int:
    return max(2, 2 * (os.cpu_count() or 1))


class FifoGate:
    """A counting semaphore that wakes waiters strictly in arrival order."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self._free = slots
        self._lock = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self) -> None:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            me = threading.Lock()
            me.acquire()
            self._waiters.append(me)
        me.acquire()  # released by the release() that hands its slot to us

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()  # the slot passes straight to the oldest waiter
            else:
                self._free += 1

    @property
    def waiting(self) -> int:
        return len(self._waiters)


class AdmissionMiddleware:
    """WSGI middleware: short requests pass ``gate`` one by one; long ones go straight through."""

    def __init__(self, app: Callable, slots: int | None = None):
        self.app = app
        self.gate = FifoGate(slots or default_slots())

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        if BYPASS.match(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        self.gate.acquire()
        try:
            return self.app(environ, start_response)
        finally:
            self.gate.release()
