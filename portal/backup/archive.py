"""The backup's own manifest, ``DIR/manifest.json`` (0600), written last: a directory without it
is no backup. It holds the format version, when and from what it was made (Slipway's schema
revision, the database engine), the counts a restore checks (jobs, ledger entries, balances,
repositories, data versions) and the sha256 and size of every other file in DIR.

``verify(dir)`` refuses a backup whose manifest is missing or unreadable, whose format is not
one this Slipway reads, or whose files do not match it (a missing, changed or unlisted file).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..private_files import PRIVATE_FILE
from .errors import BackupError
from .files import sha256_of

MANIFEST = "manifest.json"
FORMAT = "slipway-backup"
FORMAT_VERSION = 1


def list_files(root: Path) -> list[str]:
    """Every regular file under ``root`` as a '/'-separated relative path, sorted (symlinks and
    other special files are refused: a backup holds only plain files)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                raise BackupError(f"{full} is not a plain file: a backup holds only plain files")
            out.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return sorted(p for p in out if p != MANIFEST)


def write_manifest(root: Path, meta: dict) -> dict:
    """Hash every file under ``root`` and write manifest.json (through a temp file and a rename:
    the manifest appears whole or not at all); returns the manifest."""
    files = {}
    for rel in list_files(root):
        sha, size = sha256_of(root / rel)
        files[rel] = {"sha256": sha, "size": size}
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, **meta, "files": files,
                "total_bytes": sum(f["size"] for f in files.values())}
    tmp = root / f".{MANIFEST}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)
    return manifest


def read_manifest(root: Path) -> dict:
    root = Path(root)
    if not root.exists():
        raise BackupError(f"{root} does not exist: name the directory `slipway backup` wrote")
    if not root.is_dir():
        raise BackupError(f"{root} is not a directory: name the directory `slipway backup` wrote")
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{root} holds no {MANIFEST}: not a Slipway backup, or one that did "
                          "not finish") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not a Slipway backup manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise BackupError(f"{path} has backup format version {manifest.get('version')!r}; this "
                          f"Slipway reads version {FORMAT_VERSION}: restore it with the Slipway "
                          "that made it")
    if not isinstance(manifest.get("files"), dict):
        raise BackupError(f"{path} lists no files")
    return manifest


def verify(root: Path) -> dict:
    """The manifest of the backup at ``root`` once every file matches it (else BackupError
    naming the first few that do not)."""
    root = Path(root)
    manifest = read_manifest(root)
    listed = manifest["files"]
    present = set(list_files(root))
    problems = [f"{rel}: missing" for rel in sorted(set(listed) - present)]
    problems += [f"{rel}: not in the manifest" for rel in sorted(present - set(listed))]
    for rel in sorted(present & set(listed)):
        sha, size = sha256_of(root / rel)
        want = listed[rel]
        if not isinstance(want, dict) or want.get("sha256") != sha or want.get("size") != size:
            problems.append(f"{rel}: sha256 or size differs from the manifest")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise BackupError(f"the backup at {root} does not verify ({len(problems)} problem(s)): "
                          f"{shown}. Nothing was restored")
    return manifest
