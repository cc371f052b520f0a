"""The data directory's own files in a backup: the secrets Slipway needs to run on after a
restore, and the jobs' logs.

* ``secrets/``: ``hook_secret`` (signs the git hooks' and the running jobs' calls: jobs queued
  or running when the backup was made still carry it), ``secret_key`` (sessions, workspace
  credentials) and ``served_base_url``; 0600 in the backup and after the restore.
* ``jobs/<id>/*.log``: what each job's page shows as its log (``output.log``, a sweep's
  ``task-N.log``), copied up to their size when the backup reached them, with the job
  directory's owner (the job's Unix user) recorded and given back when restoring as root.
  A job's live ``/output`` and spec are not copied (kept outputs are datastore files).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..private_files import PRIVATE_DIR, TRAVERSE_ONLY, make_dir
from .files import copy_file

SECRETS = ("hook_secret", "secret_key", "served_base_url")


def back_up_secrets(data_dir: Path, dest: Path) -> list[str]:
    saved = []
    for name in SECRETS:
        src = Path(data_dir) / name
        if src.is_file():
            copy_file(src, Path(dest) / "secrets" / name)
            saved.append(name)
    return saved


def restore_secrets(backup_dir: Path, names: list[str], data_dir: Path) -> None:
    for name in names:
        if name not in SECRETS:
            continue
        copy_file(Path(backup_dir) / "secrets" / name, Path(data_dir) / name)


def back_up_logs(jobs_dir: Path, dest: Path) -> dict[str, dict]:
    """job id -> {owner: [uid, gid], logs: [names]} for every job directory with a log."""
    out: dict[str, dict] = {}
    root = Path(jobs_dir)
    if not root.is_dir():
        return out
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.name.isdigit() or not entry.is_dir(follow_symlinks=False):
            continue
        logs = []
        for f in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if f.name.endswith(".log") and f.is_file(follow_symlinks=False):
                size = f.stat(follow_symlinks=False).st_size
                copy_file(Path(f.path), Path(dest) / "jobs" / entry.name / f.name, limit=size)
                logs.append(f.name)
        if logs:
            st = entry.stat(follow_symlinks=False)
            out[entry.name] = {"owner": [st.st_uid, st.st_gid], "logs": logs}
    return out


def restore_logs(backup_dir: Path, saved: dict[str, dict], jobs_dir: Path) -> int:
    """Put the logs back (each job directory 0700, given to its recorded owner when root);
    returns the number of log files."""
    make_dir(Path(jobs_dir), TRAVERSE_ONLY)
    n = 0
    as_root = os.geteuid() == 0
    for job_id, info in sorted(saved.items()):
        if not job_id.isdigit():
            continue
        job_dir = Path(jobs_dir) / job_id
        os.mkdir(job_dir, PRIVATE_DIR)
        uid, gid = (info.get("owner") or [None, None])[:2]
        for name in info.get("logs") or []:
            if "/" in name or not name.endswith(".log"):
                continue
            target = job_dir / name
            copy_file(Path(backup_dir) / "jobs" / job_id / name, target)
            if as_root and isinstance(uid, int) and isinstance(gid, int):
                os.chown(target, uid, gid)
            n += 1
        if as_root and isinstance(uid, int) and isinstance(gid, int):
            os.chown(job_dir, uid, gid)
    return n
