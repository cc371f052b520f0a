"""``backup(config, DIR)``: a consistent backup of a running Slipway into a new directory.

Order matters: the database first (one consistent state, ``database.snapshot``), with the
counts and data manifests read from that same state; then the repositories (every commit and
LFS object the database names was pushed before the database copy, so the later bundles hold
it); then the jobs' logs and the secrets; the manifest with every file's sha256 last. DIR is
0700, every file 0600. A failure removes everything written: a directory without
``manifest.json`` is never left looking like a backup.
"""
from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from ..config import Config
from ..private_files import PRIVATE_DIR
from . import archive, checks, data_manifests, database, repositories, server_files
from .errors import BackupError
from .files import is_empty_dir, private_dir, remove_tree


def _slipway_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("slipway")
    except metadata.PackageNotFoundError:
        return "unknown"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _prepare(dest: Path, config: Config) -> bool:
    """Refuse a DIR that is a file, not empty, or inside the data directory; make it 0700.
    Returns True when this call created it."""
    if _inside(dest.resolve(), Path(config.data_dir).resolve()):
        raise BackupError(f"{dest} is inside the data directory {config.data_dir}: a backup "
                          "must live elsewhere (it is lost with the data directory otherwise)")
    if os.path.lexists(dest):
        if not dest.is_dir() or dest.is_symlink():
            raise BackupError(f"{dest} exists and is not a directory: name a new directory")
        if not is_empty_dir(dest):
            raise BackupError(f"{dest} exists and is not empty: name a new (or empty) directory; "
                              "a backup never overwrites another")
        os.chmod(dest, PRIVATE_DIR)
        return False
    private_dir(dest)
    return True


def backup(config: Config, dest: Path, *, now: datetime | None = None) -> dict:
    """Back up the Slipway described by ``config`` into ``dest``; returns its manifest."""
    dest = Path(dest).absolute()
    created = _prepare(dest, config)
    started = time.monotonic()
    try:
        with database.snapshot(config.database_url, dest) as (conn, dump):
            meta = {"schema_revision": checks.revision(conn), "counts": checks.counts(conn),
                    "balances": checks.balances(conn),
                    "data_versions": data_manifests.back_up(conn, dest),
                    "database": {"engine": database.engine_name(config.database_url),
                                 "dump": dump}}
        meta["repos"] = repositories.back_up(Path(config.repos_root), Path(config.lfs_root), dest)
        meta["job_logs"] = server_files.back_up_logs(Path(config.jobs_dir), dest)
        meta["secrets"] = server_files.back_up_secrets(Path(config.data_dir), dest)
        meta.update(created_at=(now or datetime.now(timezone.utc)).isoformat(),
                    host=socket.gethostname(), slipway_version=_slipway_version(),
                    data_dir=str(config.data_dir),
                    seconds=round(time.monotonic() - started, 3))
        return archive.write_manifest(dest, meta)
    except BaseException as exc:
        if created:
            remove_tree(dest)
        else:
            for child in list(dest.iterdir()):
                remove_tree(child)
        if isinstance(exc, Exception) and not isinstance(exc, BackupError):
            raise BackupError(f"backup failed, nothing kept: {exc}") from exc
        raise
