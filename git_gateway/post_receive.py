"""The gateway's own post-receive (``push_report`` says why and how): the hooks directory its
``receive-pack`` runs with (the pre-receive alone) and the response body that holds back the
answer's final flush until the post-receive has run and its messages are sent."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from . import hook_native, hooks
from .cgi import CgiBody
from .push_report import ReportReader

log = logging.getLogger(__name__)

#: ``after(updated refs) -> messages``: the post-receive for the refs the report says moved
After = Callable[[list[str]], list[str]]


def pre_receive_only(hooks_dir: str | os.PathLike) -> Path:
    """``hooks_dir`` (0700) holding Slipway's pre-receive and no post-receive, (re)written when
    not current; receive-pack is pointed at it with ``core.hooksPath``. The hooks hold no
    repository's data (everything comes from the environment), so one directory serves all."""
    d = Path(hooks_dir)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    if not (hooks.current(d, python=sys.executable, only=("pre-receive",), native=True)):
        hooks.install(d, python=sys.executable, native=True)   # compiled where cc is found
        (d / "post-receive").unlink(missing_ok=True)
        (d / ("post-receive" + hook_native.STAMP_SUFFIX)).unlink(missing_ok=True)
    return d


class PostReceiveBody(CgiBody):
    """receive-pack's answer, streamed, with the post-receive run before its final flush.

    The post-receive runs once: when the answer ends (its messages then reach the client), or
    from ``close`` when the client went away first (receive-pack is left to finish its push, so
    refs it updated still get their jobs; the messages then have nobody to go to)."""

    def __init__(self, proc: subprocess.Popen, threads: list[threading.Thread], after: After,
                 on_done: Callable[[], None] | None = None):
        super().__init__(proc, threads, on_done=on_done)
        self.after = after
        self.reader = ReportReader()
        self._ran = False
        self._lock = threading.Lock()

    def __iter__(self):
        for data in self.chunks():
            out = self.reader.feed(data)
            if out:
                yield out
        if self.reader.broken or not self.reader.ended:
            return                      # not the answer expected: passed on untouched
        yield self.reader.ending(self._run())

    def _run(self) -> list[str]:
        with self._lock:
            if self._ran:
                return []
            self._ran = True
        if not self.reader.report_done or not self.reader.updated:
            return []
        try:
            return list(self.after(list(self.reader.updated)))
        except Exception:  # noqa: BLE001 — a post-receive bug must not break the push's answer
            log.exception("post-receive failed")
            return ["slipway: internal error in Slipway"]

    def close(self) -> None:
        if not self._eof and not self._closed:
            # the client left mid-answer: let receive-pack finish what it started, then run
            # the post-receive for what it did (nothing is sent any more)
            try:
                for chunk in self.chunks():
                    self.reader.feed(chunk)
            except (OSError, ValueError):
                pass
        if self._eof and not self.reader.broken:
            self._run()
        super().close()
