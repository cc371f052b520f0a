"""Backup and restore (issue 16 item 6; docs/FAULTS.md §6): ``slipway backup DIR`` and
``slipway restore DIR``. Flask- and click-free; the CLI is ``portal/cli/backup.py``.

Modules, by what they hold:

* ``make``            backup(config, DIR): the order of a consistent backup, all or nothing
* ``restore``         restore(config, DIR): refusals, staging, checks, the final renames
* ``database``        SQLite online backup API / pg_dump on an exported snapshot; their loads
* ``repositories``    git bundles of every project repository, their LFS objects; fsck on restore
* ``data_manifests``  data versions' manifests (files, sizes, sha256); checked after a restore
* ``server_files``    the secrets Slipway needs after a restore (0600), the jobs' logs
* ``checks``          schema revision (alembic), counts, balances vs ledgers
* ``archive``         DIR/manifest.json: format, counts, sha256 of every file; verify
* ``files``           private dirs/files, hashing copy
"""
from __future__ import annotations

from .errors import BackupError
from .make import backup
from .restore import restore

__all__ = ["BackupError", "backup", "restore"]
