"""The database in a backup: a consistent copy taken while Slipway runs, and its load.

* SQLite: the online backup API (``sqlite3.Connection.backup``), never a file copy: the copy is
  one consistent state even while the server and the reconciler write (WAL included). The copy
  is switched to journal_mode=DELETE so reading it leaves no -wal/-shm files behind.
* PostgreSQL: ``pg_dump --format=custom`` run on a snapshot exported from a REPEATABLE READ
  transaction (``pg_export_snapshot()``, ``pg_dump --snapshot``): the counts and data manifests
  written next to the dump are read in that same transaction, so they describe exactly the
  dump. Loaded with ``pg_restore --single-transaction --exit-on-error``: all or nothing.

``snapshot(url, dest)`` yields a SQLAlchemy connection on the state that was dumped.
"""
from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.request import pathname2url

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection, make_url

from ..private_files import create_private_file, sqlite_path
from .errors import BackupError
from .files import private_dir

SQLITE_FILE = "database/slipway.sqlite3"
PG_FILE = "database/slipway.pgdump"


def engine_name(url: str) -> str:
    if url.startswith("sqlite"):
        return "sqlite"
    if url.startswith("postgresql"):
        return "postgresql"
    raise BackupError(f"database {make_url(url).render_as_string(hide_password=True)}: only "
                      "SQLite and PostgreSQL databases can be backed up")


def _sqlite_file(url: str) -> Path:
    path = sqlite_path(url)
    if path is None:
        raise BackupError("an in-memory SQLite database has nothing to back up or restore into")
    return path


def pg_tool(name: str) -> str:
    """pg_dump / pg_restore: on $PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parent.parent.name)
                        if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise BackupError(f"{name} not found: install the PostgreSQL client tools (Debian package "
                      "postgresql-client, the server's major version or newer)")


def pg_target(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password (the password goes in PGPASSWORD, never in argv)."""
    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    plain = u.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise BackupError(f"{what} failed (exit {r.returncode}): "
                          f"{(r.stderr or r.stdout).strip()[-2000:]}")


@contextmanager
def snapshot(url: str, dest: Path) -> Iterator[tuple[Connection, str]]:
    """Dump the database at ``url`` into ``dest`` (the backup directory); yields (a connection
    on exactly the dumped state, the dump's path relative to ``dest``)."""
    if engine_name(url) == "sqlite":
        src = _sqlite_file(url)
        if not src.is_file():
            raise BackupError(f"there is no database at {src}: is this the server's "
                              "configuration (SLIPWAY_DATA_DIR, SLIPWAY_DATABASE_URL)?")
        out = dest / SQLITE_FILE
        private_dir(out.parent)
        create_private_file(out)
        source = sqlite3.connect(f"file:{pathname2url(str(src))}?mode=ro", uri=True, timeout=30)
        try:
            copy = sqlite3.connect(out)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")
            finally:
                copy.close()
        finally:
            source.close()
        engine = create_engine(f"sqlite:///{out}")
        try:
            with engine.connect() as conn:
                yield conn, SQLITE_FILE
        finally:
            engine.dispose()
        return
    out = dest / PG_FILE
    private_dir(out.parent)
    engine = create_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            with conn.begin():
                snap = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
                target, env = pg_target(url)
                _run([pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                      f"--snapshot={snap}", f"--file={out}", f"--dbname={target}"], env, "pg_dump")
                os.chmod(out, 0o600)
                yield conn, PG_FILE
    finally:
        engine.dispose()


def existing_tables(url: str) -> list[str]:
    """The tables the database at ``url`` already has ([] for a missing SQLite file)."""
    if engine_name(url) == "sqlite" and not _sqlite_file(url).exists():
        return []
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(inspect(conn).get_table_names())
    except Exception as exc:  # noqa: BLE001  (any driver's "cannot connect")
        raise BackupError(f"cannot open the target database: {exc}") from None
    finally:
        engine.dispose()


def load(url: str, backup_dir: Path, dump: str, sqlite_dest: Path | None) -> None:
    """Load the dump into the (empty) database at ``url``; a SQLite copy goes to
    ``sqlite_dest`` (the staged file that becomes the database when the restore is complete)."""
    src = Path(backup_dir) / dump
    if engine_name(url) == "sqlite":
        if dump != SQLITE_FILE:
            raise BackupError(f"this backup holds a {dump} dump; it cannot be restored into "
                              "SQLite (configure the same kind of database it was made from)")
        from .files import copy_file
        copy_file(src, sqlite_dest)
        return
    if dump != PG_FILE:
        raise BackupError(f"this backup holds a {dump} copy; it cannot be restored into "
                          "PostgreSQL (configure the same kind of database it was made from)")
    target, env = pg_target(url)
    _run([pg_tool("pg_restore"), "--single-transaction", "--exit-on-error", "--no-owner",
          "--no-privileges", f"--dbname={target}", str(src)], env, "pg_restore")


def drop_restored(url: str) -> None:
    """Undo a PostgreSQL load (the restore failed after it): drop every table and sequence of
    the current schema, which was empty before the load."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in inspect(conn).get_table_names():
                conn.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
            for seq in inspect(conn).get_sequence_names():
                conn.execute(text(f'DROP SEQUENCE IF EXISTS "{seq}" CASCADE'))
            # the triggers' functions (team balances): only those the dump brought
            for (fn,) in conn.execute(text(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n "
                    "ON n.oid = p.pronamespace WHERE n.nspname = current_schema()")):
                conn.execute(text(f"DROP FUNCTION IF EXISTS {fn} CASCADE"))
    finally:
        engine.dispose()
