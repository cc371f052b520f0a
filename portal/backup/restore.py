"""``restore(config, DIR)``: a backup back onto an EMPTY data directory and an empty database.

Refused before anything is touched: a backup that does not verify (manifest, sha256 of every
file), one whose schema revision this Slipway does not know (made by a newer Slipway), a target
data directory (or repositories, LFS or jobs directory configured elsewhere) that is not empty,
a database that already has tables, a database of the other kind.

Nothing half-restored: everything is built in staging directories next to its final place
(``.<name>.restore-<random>``) — the SQLite database (loaded and migrated there), the
repositories (fetched from their bundles, fsck'ed, refs compared), LFS objects, secrets, logs —
and checked (counts, balances = sums of ledgers, data manifests) before it is renamed into
place. PostgreSQL is loaded in one transaction (``pg_restore --single-transaction``) and its
tables dropped again if anything after it fails.
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from sqlalchemy import create_engine

from ..config import Config
from ..db import upgrade
from ..private_files import PRIVATE_DIR, TRAVERSE_ONLY, make_dir, secure_layout, sqlite_path
from . import archive, checks, data_manifests, database, repositories, server_files
from .errors import BackupError
from .files import is_empty_dir, remove_tree


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class Staging:
    """Final directories → their staging twins; ``place()`` renames them in, all or none."""

    def __init__(self, config: Config):
        self.data_dir = Path(config.data_dir)
        tag = secrets.token_hex(4)
        self.roots: list[tuple[Path, Path, int]] = []
        modes = [(self.data_dir, TRAVERSE_ONLY), (Path(config.repos_root), PRIVATE_DIR),
                 (Path(config.lfs_root), PRIVATE_DIR), (Path(config.jobs_dir), TRAVERSE_ONLY)]
        for final, mode in modes:
            if any(_inside(final, r) for r, _s, _m in self.roots):
                continue
            self.roots.append((final, final.parent / f".{final.name}.restore-{tag}", mode))
        self.sqlite = sqlite_path(config.database_url)
        self.sqlite_stage: Path | None = None
        if self.sqlite is not None and not any(_inside(self.sqlite, r) for r, _s, _m in self.roots):
            self.sqlite_stage = self.sqlite.parent / f".{self.sqlite.name}.restore-{tag}"

    def path(self, final: Path) -> Path:
        final = Path(final)
        if self.sqlite is not None and final == self.sqlite and self.sqlite_stage is not None:
            return self.sqlite_stage
        for root, stage, _mode in self.roots:
            if _inside(final, root):
                return stage / final.relative_to(root)
        raise AssertionError(final)

    def refuse_non_empty(self) -> None:
        for root, _stage, _mode in self.roots:
            if os.path.lexists(root) and (not root.is_dir() or not is_empty_dir(root)):
                raise BackupError(f"{root} is not empty: restore only onto an empty data "
                                  "directory (move the old one aside first); nothing was changed")

    def refuse_sqlite_file(self) -> None:
        if self.sqlite_stage is not None and self.sqlite.exists() and self.sqlite.stat().st_size:
            raise BackupError(f"the database file {self.sqlite} exists: restore only into a "
                              "new database; nothing was changed")

    def create(self) -> None:
        for _root, stage, mode in self.roots:
            make_dir(stage, mode)

    def discard(self) -> None:
        for _root, stage, _mode in self.roots:
            remove_tree(stage)
        if self.sqlite_stage is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.sqlite_stage}{suffix}").unlink(missing_ok=True)

    def place(self) -> None:
        moved: list[tuple[Path, Path]] = []
        try:
            if self.sqlite_stage is not None:
                os.replace(self.sqlite_stage, self.sqlite)
                moved.append((self.sqlite, self.sqlite_stage))
            for root, stage, _mode in self.roots:
                if root.is_dir():
                    os.rmdir(root)          # empty (checked): the restored one takes its place
                os.rename(stage, root)
                moved.append((root, stage))
        except OSError as exc:
            for final, stage in reversed(moved):
                os.rename(final, stage)
            raise BackupError(f"could not move the restored files into place: {exc}") from exc


def _check_database(url: str, manifest: dict, backup_dir: Path, datastore: Path) -> dict:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            problems = checks.compare(manifest, conn)
            if problems:
                raise BackupError("the restored database does not match the backup: "
                                  + "; ".join(problems[:5]))
            return data_manifests.check(conn, backup_dir, manifest.get("data_versions") or [],
                                        datastore)
    finally:
        engine.dispose()


def restore(config: Config, src: Path) -> dict:
    """Restore the backup at ``src`` onto the (empty) places ``config`` names; returns a
    summary (what was restored, to which schema revision, what the datastore still lacks)."""
    started = time.monotonic()
    src = Path(src).absolute()
    manifest = archive.verify(src)
    rev = str(manifest.get("schema_revision") or "")
    migrate = checks.check_revision(rev)
    engine = database.engine_name(config.database_url)
    saved_engine = (manifest.get("database") or {}).get("engine")
    if saved_engine != engine:
        raise BackupError(f"this backup holds a {saved_engine} database; the configured database "
                          f"is {engine}: configure a {saved_engine} database to restore it")
    staging = Staging(config)
    staging.refuse_non_empty()
    tables = database.existing_tables(config.database_url)
    if tables:
        raise BackupError(f"the database already has {len(tables)} table(s) ({', '.join(tables[:5])}"
                          f"{', …' if len(tables) > 5 else ''}): restore only into an empty "
                          "database; nothing was changed")
    staging.refuse_sqlite_file()
    loaded = False
    staging.create()
    try:
        url = config.database_url
        if staging.sqlite is not None:
            staged_db = staging.path(staging.sqlite)
            url = f"sqlite:///{staged_db}"
            database.load(config.database_url, src, manifest["database"]["dump"], staged_db)
        else:
            database.load(url, src, manifest["database"]["dump"], None)
        loaded = True
        upgrade(url)
        data_dir = staging.path(staging.data_dir)
        jobs_dir = staging.path(Path(config.jobs_dir))
        repos_root = staging.path(Path(config.repos_root))
        lfs_root = staging.path(Path(config.lfs_root))
        secure_layout(data_dir, jobs_dir, repos_root, lfs_root)
        repositories.restore(manifest.get("repos") or {}, src, repos_root, lfs_root)
        logs = server_files.restore_logs(src, manifest.get("job_logs") or {}, jobs_dir)
        server_files.restore_secrets(src, manifest.get("secrets") or [], data_dir)
        data = _check_database(url, manifest, src, data_dir / "datastore")
        staging.place()
    except BaseException as exc:
        staging.discard()
        if loaded and staging.sqlite is None:
            try:
                database.drop_restored(config.database_url)
            except Exception as drop_exc:  # noqa: BLE001  (say both, the first cause first)
                raise BackupError(f"restore failed: {exc}; and the tables it loaded could not be "
                                  f"dropped ({drop_exc}): drop them by hand before trying "
                                  "again") from exc
        if isinstance(exc, Exception) and not isinstance(exc, BackupError):
            raise BackupError(f"restore failed, nothing restored: {exc}") from exc
        raise
    return {"from": str(src), "made_at": manifest.get("created_at"), "schema_revision": rev,
            "migrated_to": checks.head() if migrate else None,
            "counts": manifest.get("counts") or {}, "repos": len(manifest.get("repos") or {}),
            "lfs_objects": sum(r.get("lfs_objects", 0) for r in (manifest.get("repos") or {}).values()),
            "job_logs": logs, "secrets": manifest.get("secrets") or [], "data": data,
            "data_dir": str(config.data_dir), "seconds": round(time.monotonic() - started, 3)}
