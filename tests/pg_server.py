"""A REAL, throwaway PostgreSQL server for tests (Debian's postgresql 15 binaries, no system cluster).

``start_postgres() -> PgServer`` runs ``initdb -D <tmp> -U slipway --auth=trust`` and
``pg_ctl ... start -w`` on a free port (TCP on 127.0.0.1 and a Unix socket in the temp dir,
``fsync=off``), then creates the database ``slipway``. ``PgServer.stop()`` runs
``pg_ctl stop -m fast`` and removes the directory. About 1–2 s to start.

``initdb``/``postgres`` refuse to run as root: when the tests run as root, every server command
runs as the ``postgres`` Unix user (``runuser -u postgres --``) in a temp dir owned by it.

Fixture (register in tests/conftest.py with ``from tests.pg_server import postgres_url  # noqa``):
``postgres_url`` (session) — starts the server, yields
``postgresql+psycopg://slipway@127.0.0.1:PORT/slipway``, stops it at the end of the session.

``create_database(postgres_url, name)`` creates another empty database on that server and returns
its URL (tests that need a schema of their own). Missing binaries fail the test with a message naming
``slurm_conf/install-deps`` (the tests are meant to run everywhere the project is set up).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "slipway"
PG_DB = "slipway"
RUN_AS = "postgres"  # Unix user that owns the data dir when the tests run as root


def pg_bin_dir() -> Path | None:
    """Directory holding initdb/pg_ctl: $SLIPWAY_PG_BIN, Debian's newest, or $PATH."""
    env = os.environ.get("SLIPWAY_PG_BIN")
    if env:
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    dir: Path
    port: int
    bin: Path
    as_user: str | None

    @property
    def url(self) -> str:
        return self.url_for(PG_DB)

    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def _cmd(self, *argv: str) -> list[str]:
        return (["runuser", "-u", self.as_user, "--"] if self.as_user else []) + list(argv)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run(self._cmd(*argv), capture_output=True, text=True, timeout=timeout,
                           cwd=self.dir)
        if r.returncode != 0:
            log = ""
            try:
                log = (self.dir / "log").read_text()[-3000:]
            except OSError:
                pass
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr or r.stdout}\n{log}")
        return r

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run one statement with psql-free means (psycopg, autocommit); returns nothing useful."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname=dbname,
                             autocommit=True) as conn:
            cur = conn.execute(statement)
            return str(cur.fetchall()) if cur.description else ""

    def new_database(self, name: str) -> str:
        """Create an empty database ``name`` (dropping an old one) and return its URL."""
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{name}" OWNER {PG_USER}')
        return self.url_for(name)

    def stop(self) -> None:
        try:
            self.run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "stop", "-m", "fast", "-w")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def start_postgres(port: int | None = None) -> PgServer:
    """initdb + pg_ctl start on a free port; the caller must ``stop()`` it."""
    bindir = pg_bin_dir()
    if bindir is None or not (bindir / "initdb").exists() or not (bindir / "pg_ctl").exists():
        raise FileNotFoundError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or "
            "$PATH; install them with slurm_conf/install-deps (Debian package 'postgresql') or set "
            "SLIPWAY_PG_BIN")
    as_user = None
    tmp = Path(tempfile.mkdtemp(prefix="slipway-pg-"))
    if os.geteuid() == 0:
        as_user = RUN_AS
        pw = pwd.getpwnam(RUN_AS)
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    os.chmod(tmp, 0o700)
    srv = PgServer(dir=tmp, port=port or _free_port(), bin=bindir, as_user=as_user)
    data = tmp / "data"
    try:
        srv.run(str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "-N", timeout=120)
        opts = (f"-p {srv.port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        srv.run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(tmp / "log"),
                "start", "-w", "-t", "60", timeout=90)
    except BaseException:
        # a half-started server must not outlive us
        if (data / "postmaster.pid").exists():
            try:
                srv.run(str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate", "-w")
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        srv.new_database(PG_DB)
    except BaseException:
        srv.stop()
        raise
    return srv


def create_database(url: str, name: str) -> str:
    """Create an empty database ``name`` (dropping an old one) on the server of ``url`` (the
    ``postgres_url`` fixture) and return its URL; for tests that need a schema of their own."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    import psycopg

    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" OWNER {u.username}')
    return u.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server for the test session (started here, stopped at the end); yields the
    URL of its (empty) database ``slipway``: ``postgresql+psycopg://slipway@127.0.0.1:PORT/slipway``."""
    try:
        srv = start_postgres()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield srv.url
    finally:
        srv.stop()
