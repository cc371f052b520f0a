"""A push's post-receive done by the gateway itself, around ``git receive-pack``.

Why: the post-receive hook was a process (bash, ~2.5 ms) and a loopback call on every push, for
work the gateway's own process does (issue 17, docs/SPEED.md §1). ``receive-pack`` updates the
refs, writes its report (which refs moved) in side-band 1 and ends its answer with a flush
packet. The gateway reads that answer as it streams it to the client, holds back the final
flush, runs the post-receive with the refs the report says were updated, and sends its messages
as side-band 2 packets (git prints them as ``remote: ...``, exactly as a hook's output) before
the flush. The client sees the same bytes a hook would have produced.

Git's formats (Documentation/gitprotocol-pack.txt, gitprotocol-common.txt): a pkt-line is four
hex digits of length (itself included) and the data; ``0000`` is a flush. The request starts with
``<old> <new> <ref>`` commands, the first carrying ``\\0<capabilities>``, ending in a flush. With
``side-band``/``side-band-64k`` every answer packet starts with its band (1 data, 2 messages,
3 error) and the answer ends with a flush; the report (``report-status``, ``-v2``) is pkt-lines
inside band 1: ``unpack ok``, then ``ok <ref>`` or ``ng <ref> <why>`` per command (v2 may add
``option`` lines), then a flush.

``read_commands`` reads the command list from the request body; ``ReportReader`` follows the
answer. Anything unexpected (no side-band, no report, a malformed stream) turns the gateway's
post-receive off for that push: the repository's hook then does it, or, when the stream is
already running, the reconciler's lost-post-receive recovery (jobs.recovery, 30 s).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_COMMANDS_BYTES = 4 << 20
FLUSH = b"0000"
_CMD = re.compile(rb"([0-9a-f]{40}|[0-9a-f]{64}) ([0-9a-f]{40}|[0-9a-f]{64}) (refs/[^\0\n ]+)")
MAX_BAND = 65520 - 5          # side-band-64k's largest payload (the band byte aside)


class NotAPush(ValueError):
    """The request's command list could not be read; ``args[1]``: the bytes read meanwhile
    (receive-pack gets them all the same, and gives its own answer)."""


@dataclass(frozen=True)
class Commands:
    updates: tuple[tuple[str, str, str], ...]     # (old, new, ref) in the client's order
    capabilities: frozenset[str]
    consumed: bytes                                # the bytes read (to send on to receive-pack)
    options: tuple[str, ...] = ()                  # push options (``git push -o``), in order

    @property
    def sideband(self) -> bool:
        return bool({"side-band-64k", "side-band"} & self.capabilities)

    @property
    def reported(self) -> bool:
        return bool({"report-status", "report-status-v2"} & self.capabilities)


def read_commands(read) -> Commands:
    """Read the command list (up to and including its flush) with ``read(n)``; raises NotAPush
    when it is malformed or larger than MAX_COMMANDS_BYTES. ``consumed`` holds every byte read."""
    got = bytearray()
    updates, caps = [], frozenset()

    def fail(why: str):
        return NotAPush(why, bytes(got))

    def take(n: int) -> bytes:
        data = b""
        while len(data) < n:
            part = read(n - len(data))
            if not part:
                got.extend(data)
                raise fail("the request ended inside its command list")
            data += part
        got.extend(data)
        return data

    def lines(what: str):
        """The pkt-lines up to the next flush, each without its header."""
        while True:
            try:
                size = int(take(4), 16)
            except ValueError:
                raise fail("not a pkt-line") from None
            if size == 0:
                return
            if size < 4 or len(got) + size > MAX_COMMANDS_BYTES:
                raise fail(f"{what} of a bad size")
            yield take(size - 4)

    for line in lines("a command line"):
        text, _, cap_text = line.rstrip(b"\n").partition(b"\0")
        m = _CMD.fullmatch(text)
        if m is None:
            raise fail("not a ref update command")
        if not updates:
            caps = frozenset(c.decode("ascii", "replace") for c in cap_text.split())
        updates.append(tuple(x.decode("utf-8", "surrogateescape") for x in m.groups()))
    if not updates:
        raise fail("no commands")
    options = []
    if "push-options" in caps:    # then the options, one pkt-line each, and a flush
        options = [o.removesuffix(b"\n").decode("utf-8", "surrogateescape")
                   for o in lines("a push option")]
    return Commands(tuple(updates), caps, bytes(got), tuple(options))


@dataclass
class ReportReader:
    """Follows receive-pack's side-band answer: ``feed(chunk)`` returns the bytes to send on now
    (everything but the final flush, once seen); ``updated`` lists the refs reported ``ok``."""
    buf: bytearray = field(default_factory=bytearray)
    band1: bytearray = field(default_factory=bytearray)
    updated: list[str] = field(default_factory=list)
    report_done: bool = False
    ended: bool = False           # the final flush was read (and is held back)
    broken: bool = False          # not the stream expected: pass everything through untouched

    def feed(self, chunk: bytes) -> bytes:
        if self.broken:
            return chunk
        self.buf += chunk
        out = bytearray()
        while len(self.buf) >= 4 and not self.ended:
            try:
                size = int(self.buf[:4], 16)
            except ValueError:
                return self._break(out)
            if size == 0:
                del self.buf[:4]
                self.ended = True
                break
            if size < 5:
                return self._break(out)
            if len(self.buf) < size:
                break
            pkt = bytes(self.buf[:size])
            del self.buf[:size]
            out += pkt
            if pkt[4] == 1:
                self._band1(pkt[5:])
        if self.ended and self.buf:           # bytes after the final flush: not ours to judge
            return self._break(out)
        return bytes(out)

    def _break(self, out: bytearray) -> bytes:
        self.broken = True
        rest = bytes(self.buf)
        self.buf.clear()
        return bytes(out) + (FLUSH if self.ended else b"") + rest

    def _band1(self, data: bytes) -> None:
        self.band1 += data
        while not self.report_done and len(self.band1) >= 4:
            try:
                size = int(self.band1[:4], 16)
            except ValueError:
                self.report_done = True
                self.updated.clear()         # not a report we understand: trust none of it
                return
            if size == 0:
                del self.band1[:4]
                self.report_done = True
                return
            if len(self.band1) < size:
                return
            line = bytes(self.band1[4:size]).rstrip(b"\n").decode("utf-8", "surrogateescape")
            del self.band1[:size]
            if line.startswith("ok "):
                self.updated.append(line[3:].split(" ", 1)[0])

    def ending(self, messages: list[str]) -> bytes:
        """``messages`` as side-band 2 packets, then the final flush held back."""
        out = bytearray()
        for message in messages:
            for line in str(message).splitlines():
                data = b"\2" + (line + "\n").encode("utf-8", "replace")[:MAX_BAND]
                out += b"%04x" % (len(data) + 4) + data
        return bytes(out) + FLUSH
