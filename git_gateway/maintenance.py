"""Repository upkeep after pushes, off the push's clock.

Slipway's repositories set ``gc.auto=0`` so that ``receive-pack`` never runs ``git gc --auto``
inside a push (a repack there would land in the pusher's wait). Pushes arrive as loose objects
(``receive.unpackLimit`` at git's default), so without upkeep a busy repository would gather
loose objects and packs without end and every git command on it would slow down.

``Maintenance.after_push(path)`` queues the repository; one background thread runs
``git gc --auto`` with git's own thresholds (6,700 loose objects, 50 packs) at most once per
``interval_s`` per repository. ``gc --auto`` is a quick count when there is nothing to do, and
git's gc is safe beside concurrent pushes and fetches (objects younger than two weeks are never
pruned). A failure is logged, never raised: upkeep must not fail a push.
"""
from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

GC_ARGS = ("-c", "gc.auto=6700", "-c", "gc.autoPackLimit=50", "-c", "gc.autoDetach=false",
           "gc", "--auto", "--quiet")


class Maintenance:
    def __init__(self, git: str = "git", *, interval_s: float = 60.0, umask: int = 0o077):
        self.git, self.interval_s, self.umask = git, interval_s, umask
        self._due: dict[Path, float] = {}      # queued repositories -> when they may run
        self._last: dict[Path, float] = {}     # when each last ran
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.runs = 0                          # gc runs done (for tests and the log)

    def after_push(self, path: str | os.PathLike) -> None:
        """Queue ``path`` (a bare repository) for ``git gc --auto``; cheap, never blocks."""
        p = Path(path)
        with self._cond:
            if self._stopped or p in self._due:
                return
            self._due[p] = self._last.get(p, -self.interval_s) + self.interval_s
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="git-maintenance",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _next(self) -> Path | None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                ready = [p for p, at in self._due.items() if at <= now]
                if ready:
                    p = ready[0]
                    del self._due[p]
                    self._last[p] = now
                    return p
                wait = min(self._due.values()) - now if self._due else None
                self._cond.wait(wait)
            return None

    def _run(self) -> None:
        while (path := self._next()) is not None:
            if not (path / "HEAD").is_file():
                continue            # deleted meanwhile
            try:
                r = subprocess.run([self.git, "--git-dir", str(path), *GC_ARGS],
                                   capture_output=True, timeout=3600, umask=self.umask,
                                   env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
                self.runs += 1
                if r.returncode != 0:
                    log.warning("git gc --auto in %s failed: %s", path,
                                r.stderr.decode("utf-8", "replace").strip()[:500])
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("git gc --auto in %s failed: %s", path, exc)
