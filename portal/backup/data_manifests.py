"""Data versions' manifests in a backup: ``data/<team>/<repo>/<n>.json`` per version — its
repository's kind, who made it and from what, and every file (path, size, sha256) — read from
the same database state as the dump (so they describe exactly the versions it holds).

The version's *bytes* (``<data_dir>/datastore``) are not in the backup: they are immutable,
content-addressed (a file is named by its sha256) and often terabytes, which a file-system
snapshot or rsync of ``datastore/`` keeps far better than a copy per backup. After a restore,
``check`` compares each manifest with the restored database and says, per version, whether its
files are in the datastore: the list an operator works through when copying ``datastore/`` back.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ..data.store import DataStore
from ..private_files import PRIVATE_FILE
from .errors import BackupError
from .files import private_dir

VERSIONS_SQL = (
    "SELECT v.id, t.name, r.name, r.kind, v.number, v.created_by, v.created_at, v.source, "
    "v.size_bytes, v.file_count, r.id FROM data_versions v JOIN data_repos r ON r.id = v.repo_id "
    "JOIN teams t ON t.id = r.team_id ORDER BY t.name, r.name, v.number")
FILES_SQL = "SELECT path, sha256, size FROM data_files WHERE version_id = :v ORDER BY path"


def versions(conn: Connection) -> list[dict]:
    """Every data version with its files, from ``conn`` (schema-revision tolerant plain SQL)."""
    out = []
    for vid, team, repo, kind, number, by, created, source, size, count, repo_id in \
            conn.execute(text(VERSIONS_SQL)):
        files = [{"path": p, "sha256": sha, "size": int(n)}
                 for p, sha, n in conn.execute(text(FILES_SQL), {"v": vid})]
        out.append({"team": team, "repo": repo, "kind": kind, "number": int(number),
                    "created_by": by, "created_at": str(created), "source": source,
                    "size_bytes": int(size or 0), "file_count": int(count or 0), "files": files,
                    "repo_id": int(repo_id)})
    return out


def rel_path(v: dict) -> str:
    return f"data/{v['team']}/{v['repo']}/{v['number']}.json"


def back_up(conn: Connection, dest: Path) -> list[str]:
    """Write every version's manifest under ``dest``; returns their relative paths."""
    paths = []
    for v in versions(conn):
        rel = rel_path(v)
        target = Path(dest) / rel
        private_dir(target.parent)
        body = {k: val for k, val in v.items() if k != "repo_id"}
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(fd, "w") as f:
            json.dump(body, f, indent=1, sort_keys=True)
            f.write("\n")
        paths.append(rel)
    return paths


def check(conn: Connection, backup_dir: Path, listed: list[str], datastore: Path) -> dict:
    """Compare the backup's manifests with the restored database (a difference is an error);
    returns {versions, with_files, without_files: ["team/repo:n", ...]} for the datastore."""
    restored = {rel_path(v): v for v in versions(conn)}
    if set(restored) != set(listed):
        gone = sorted(set(listed) - set(restored))[:5]
        extra = sorted(set(restored) - set(listed))[:5]
        raise BackupError(f"data versions restored differ from the backup's manifests "
                          f"(missing {gone}, unexpected {extra})")
    store = DataStore(datastore, chown=False)
    without = []
    for rel in listed:
        saved = json.loads((Path(backup_dir) / rel).read_text())
        v = restored[rel]
        if saved["files"] != v["files"]:
            raise BackupError(f"data version {v['team']}/{v['repo']}:{v['number']}: its files "
                              f"in the restored database differ from {rel}")
        if not all(store.has_object(v["repo_id"], f["sha256"]) for f in v["files"]):
            without.append(f"{v['team']}/{v['repo']}:{v['number']}")
    return {"versions": len(listed), "with_files": len(listed) - len(without),
            "without_files": without}
