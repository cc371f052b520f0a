"""Engine, sessions and migrations.

``Database(url)`` owns one engine and two session factories:

* ``db.session()`` — ordinary session (reads; SQLite ``BEGIN`` deferred);
* ``db.transaction()`` — context manager for a write transaction that commits on exit. On
  SQLite it begins with ``BEGIN IMMEDIATE`` so concurrent writers (web threads, reconciler, CLI)
  queue on ``busy_timeout`` instead of failing with "database is locked" when a read turns into
  a write. SQLite runs in WAL mode so readers never block.

  On PostgreSQL (``postgresql+psycopg://…``) the same guarantee comes from a transaction-level
  advisory lock (``pg_advisory_xact_lock``) taken as the first statement of every write
  transaction: write transactions run one at a time (what BEGIN IMMEDIATE gives on SQLite, so
  read-then-write code such as "is the job still queued? then move it" needs no row locks),
  while reads (``db.session()``) never wait. ``lock_timeout`` (30 s, like ``busy_timeout``)
  bounds the wait. Each statement sees every write committed before it (READ COMMITTED).

``upgrade(url)`` runs the Alembic migrations in ``portal/migrations`` (the schema is only ever
created through them, tests included).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ..private_files import secure_sqlite, sqlite_path

from .models import (  # noqa: F401  (re-exported)
    ACTIVE_STATES,
    AccessToken,
    Base,
    Job,
    LedgerEntry,
    Membership,
    Project,
    ReconcilerState,
    Team,
    TeamBalance,
    User,
    from_micros,
    to_micros,
    utcnow,
)
from .data_models import (  # noqa: F401  (re-exported)
    DATA_KINDS,
    DataFile,
    DataRepo,
    DataShare,
    DataUpload,
    DataVersion,
    JobInput,
    WorkspacePolicy,
)

from .parts_models import PART_KINDS, PART_STATES, JobPart  # noqa: F401,E402  (re-exported)
from . import alarm_models, monitoring_models, notify_models, usage_models  # noqa: F401,E402
from .attempt_models import JobAttempt  # noqa: F401,E402  (re-exported; docs/FAULTS.md §1)
from .session_models import WebSession  # noqa: F401,E402  (re-exported)
from .funds_models import FUND_REQUEST_STATES, FundRequest  # noqa: F401,E402  (re-exported)
from .policy_models import (  # noqa: F401,E402  (re-exported)
    ComputeType,
    EmergencyGrant,
    PolicyEvent,
    Quota,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# PostgreSQL: the advisory lock key serialising Database.transaction() ("slipwrit"), and its wait.
PG_WRITE_LOCK_KEY = 0x736C_6970_7772_6974
PG_LOCK_TIMEOUT = "30s"


def make_engine(url: str, **kwargs) -> Engine:
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        kwargs.setdefault("connect_args", {}).setdefault("check_same_thread", False)
        kwargs["connect_args"].setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        path = sqlite_path(url)
        if path is not None:
            # created 0600 before SQLite opens it: its -wal/-shm/-journal take the file's mode
            secure_sqlite(path)
    if url.startswith("postgresql"):
        # a connection per waitress thread (16) plus the reconciler and CLI-in-process callers
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if is_sqlite:
        _sqlite_setup(engine)
    elif engine.dialect.name == "postgresql":
        _postgresql_setup(engine)
    return engine


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # take transaction control away from pysqlite so we can BEGIN IMMEDIATE
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _postgresql_setup(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("sqlite_begin") == "IMMEDIATE":  # a write transaction
            conn.exec_driver_sql(f"SELECT set_config('lock_timeout', '{PG_LOCK_TIMEOUT}', true)")
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK_KEY})")


class Database:
    def __init__(self, url: str, *, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = sessionmaker(
            self.engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction: commits on success, rolls back on error."""
        with self._writers() as s:
            with s.begin():
                yield s

    def upgrade(self) -> None:
        upgrade(self.url, engine=self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str):
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head", *, engine: Engine | None = None) -> None:
    """Bring the database at ``url`` to ``revision`` (default: latest)."""
    from alembic import command

    cfg = alembic_config(url)
    own = engine is None
    engine = engine or make_engine(url)
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
    finally:
        if own:
            engine.dispose()
