"""The leader lease: exactly one reconciler (and so one biller) of a Slipway is active at a time,
however many servers share its database and data directory (docs/FAULTS.md §4).

One interface (``Lease``), two implementations, chosen from the database URL (``make_lease``):

* PostgreSQL — ``PgAdvisoryLease``: a session-level ``pg_try_advisory_lock(key)`` taken on a
  connection of its own, held for as long as this process leads. The lock belongs to the
  server-side session: when the process dies (``kill -9``, a power loss) the kernel closes its
  socket, PostgreSQL ends the session and the lock is free at once; a network cut ends it when TCP
  keepalives give up (about 15 s). ``holds()`` asks, before every tick, whether the session is
  alive and still holds the lock; a leader that lost it steps down before touching anything.
* SQLite — ``FileLease``: an exclusive ``flock`` on ``<data_dir>/reconciler.lock`` held for as
  long as this process leads; the kernel releases it when the process dies, however it dies.

A lease is never waited for while leading and never renewed: it lasts exactly as long as the
process (PostgreSQL: its session) lives, so there is no expiry to tune and no clock to trust. A
follower asks for it every tick interval (``try_acquire``), so after the leader dies the next
attempt wins: the other server ticks within two tick intervals. A one-off tick (``slipway
reconcile --once``, tests) waits for the lease (``acquire``), ticks and lets it go.
"""
from __future__ import annotations

import fcntl
import hashlib
import threading
import time
from pathlib import Path
from typing import IO, Protocol

from ...private_files import opener as private_opener
from ...services import Services, log

LOCK_FILE = "reconciler.lock"
POLL_S = 0.1   # how often a waiting acquire asks again
# libpq: a dead peer is noticed within ~15 s (keepalives) and a write unacknowledged for 10 s fails
PG_CONNECT_ARGS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5,
                   "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 10_000,
                   "application_name": "slipway-reconciler-lease"}


class Lease(Protocol):
    """What the reconciler needs of a leader lease."""

    description: str     # how it is held, in words ("PostgreSQL advisory lock 123")

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it, without waiting; True when this process holds it
        (taken now, or still held and alive)."""

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: as long as it takes) for the lease."""

    def holds(self) -> bool:
        """True when this process holds the lease and it is still valid (checked, not assumed)."""

    def release(self) -> None:
        """Let the lease go (nothing when not held)."""


def lock_key(cluster: str) -> int:
    """The advisory lock key of ``cluster``'s reconciler: a stable signed 64-bit number (the
    same on every server; another cluster's Slipway in the same database gets another)."""
    digest = hashlib.sha256(f"slipway reconciler leader:{cluster}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def make_lease(svc: Services) -> Lease:
    """PostgreSQL database → its advisory lock; anything else (SQLite) → the data dir's lock file."""
    url = svc.db.engine.url
    if url.get_backend_name() == "postgresql":
        return PgAdvisoryLease(url, lock_key(svc.config.cluster_name))
    return FileLease(Path(svc.config.data_dir) / LOCK_FILE)


def _wait(try_once, timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    while True:
        if try_once():
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic())))


class FileLease:
    """An exclusive flock on one file, held while this object holds it (one open file of its own:
    two leases on the same file, in one process or two, exclude each other)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.description = f"file lock {self.path}"
        self._fh: IO | None = None
        self._mutex = threading.Lock()

    def try_acquire(self) -> bool:
        return self._take(blocking=False)

    def acquire(self, timeout: float | None = None) -> bool:
        if timeout is None:   # the kernel queues us: taken the moment the holder lets go
            return self._take(blocking=True)
        return _wait(self.try_acquire, timeout)

    def _take(self, *, blocking: bool) -> bool:
        if self._fh is not None:
            return True
        fh = open(self.path, "a", opener=private_opener)   # 0600: Slipway's alone
        try:   # never waits holding the mutex: release() from another thread stays possible
            fcntl.flock(fh, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        except BaseException:
            fh.close()
            raise
        with self._mutex:
            if self._fh is None:
                self._fh = fh
                return True
        fh.close()   # another thread of this object took it meanwhile (flocks of one process
        return True  # on two open files exclude each other, so this cannot happen; be safe)

    def holds(self) -> bool:
        return self._fh is not None   # the kernel keeps an flock for as long as the file is open

    def release(self) -> None:
        with self._mutex:
            fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fcntl.flock(fh, fcntl.LOCK_UN)
            finally:
                fh.close()


class PgAdvisoryLease:
    """A session-level PostgreSQL advisory lock on a dedicated connection (autocommit: never idle
    in a transaction), held for as long as that connection lives."""

    def __init__(self, url, key: int):
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.key = key
        self.description = f"PostgreSQL advisory lock {key}"
        self._engine = create_engine(url, poolclass=NullPool, connect_args=dict(PG_CONNECT_ARGS),
                                     isolation_level="AUTOCOMMIT")
        self._conn = None
        self._mutex = threading.Lock()

    def try_acquire(self) -> bool:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        with self._mutex:
            if self._conn is not None:
                if self._alive_and_held():
                    return True
                self._drop()
            try:
                conn = self._engine.connect()
            except SQLAlchemyError as exc:
                log.warning("reconciler lease: cannot reach PostgreSQL: %s", _short(exc))
                return False
            try:
                got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                        {"k": self.key}).scalar())
            except SQLAlchemyError as exc:
                log.warning("reconciler lease: pg_try_advisory_lock failed: %s", _short(exc))
                got = False
            if not got:
                conn.close()
                return False
            self._conn = conn
            return True

    def acquire(self, timeout: float | None = None) -> bool:
        return _wait(self.try_acquire, timeout)

    def holds(self) -> bool:
        with self._mutex:
            if self._conn is None:
                return False
            if self._alive_and_held():
                return True
            self._drop()
            return False

    def _alive_and_held(self) -> bool:
        """One round trip on the lease's own connection: the session is alive and its lock is
        granted (pg_locks: an int8 advisory key is classid = high 32 bits, objid = low 32 bits,
        objsubid = 1)."""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        unsigned = self.key & 0xFFFF_FFFF_FFFF_FFFF
        try:
            n = self._conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid() AND database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database()) AND classid::text::bigint = :hi"
                " AND objid::text::bigint = :lo AND objsubid = 1"),
                {"hi": unsigned >> 32, "lo": unsigned & 0xFFFF_FFFF}).scalar()
        except SQLAlchemyError as exc:
            log.warning("reconciler lease: its PostgreSQL session is gone: %s", _short(exc))
            return False
        return n == 1

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()   # never back to a pool: the session (and any lock) ends
            except Exception:  # noqa: BLE001 — a dead connection may fail to close, and that is fine
                pass

    def release(self) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        with self._mutex:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                conn.close()
            except SQLAlchemyError:
                conn.invalidate()

    def dispose(self) -> None:
        self.release()
        self._engine.dispose()


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
