"""The projects' git repositories and their git-lfs objects in a backup.

Backup, per bare repository ``<repos_root>/<team>/<project>.git``: ``git bundle create --all``
(git-bundle(1): a bundle is a complete, self-contained copy of the refs it names and every object
they reach, made from one reading of the refs; objects are never changed in place and this
Slipway never prunes them (``gc.auto=0``), so a push during the backup is either in it whole or
not at all). Then its LFS objects (``<lfs_root>/<team>/<project>/aa/bb/<oid>``): *after* the
bundle, because git-lfs uploads a file's object before the push that names it, so every LFS
pointer in the bundle has its object copied. Each LFS object's sha256 must equal its oid.

Restore: a fresh repository with Slipway's settings and hooks (``git_gateway.repos.create_repo``),
``git bundle verify``, ``git fetch`` of every ref, HEAD as it was, ``git fsck --full``, and the
refs compared with those the manifest lists. LFS objects are copied back (0400) and re-hashed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from git_gateway import repos

from .errors import BackupError
from .files import copy_file, private_dir

OID_RE = re.compile(r"[0-9a-f]{64}")


def _git(git_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    r = subprocess.run(["git", "--git-dir", str(git_dir), *args], env=env, capture_output=True,
                       text=True, umask=0o077)
    if check and r.returncode != 0:
        raise BackupError(f"git {args[0]} in {git_dir} failed: {(r.stderr or r.stdout).strip()[-1500:]}")
    return r


def find_repos(repos_root: Path) -> list[tuple[str, str]]:
    """(team, project) of every bare repository under ``repos_root`` (temporary names — a
    repository being created or deleted — are skipped)."""
    out = []
    root = Path(repos_root)
    if not root.is_dir():
        return out
    for team_dir in sorted(root.iterdir()):
        if team_dir.name.startswith(".") or not team_dir.is_dir():
            continue
        for path in sorted(team_dir.glob("*.git")):
            project = path.name[:-len(".git")]
            if path.name.startswith(".") or not repos.repo_exists(root, team_dir.name, project):
                continue
            out.append((team_dir.name, project))
    return out


def _refs(lines: str) -> dict[str, str]:
    refs = {}
    for line in lines.splitlines():
        sha, _, name = line.strip().partition(" ")
        if name.startswith("refs/"):
            refs[name] = sha
    return refs


def _lfs_objects(lfs_dir: Path) -> list[Path]:
    if not lfs_dir.is_dir():
        return []
    out = []
    for a in sorted(lfs_dir.iterdir()):
        if len(a.name) != 2 or not a.is_dir():
            continue          # tmp/ holds uploads in progress
        for b in sorted(a.iterdir()):
            for obj in sorted(b.iterdir()) if b.is_dir() else []:
                if OID_RE.fullmatch(obj.name) and obj.name[:2] == a.name and obj.name[2:4] == b.name:
                    out.append(obj)
    return out


def back_up(repos_root: Path, lfs_root: Path, dest: Path) -> dict[str, dict]:
    """Bundle every repository into ``dest/repos/<team>/<project>.bundle`` and copy its LFS
    objects to ``dest/lfs/<team>/<project>/``; returns what the manifest records per repo."""
    out: dict[str, dict] = {}
    for team, project in find_repos(repos_root):
        git_dir = repos.repo_path(repos_root, team, project)
        head = _git(git_dir, "symbolic-ref", "HEAD", check=False).stdout.strip() or "refs/heads/main"
        rel = f"repos/{team}/{project}.bundle"
        bundle = dest / rel
        private_dir(bundle.parent)
        made = _git(git_dir, "bundle", "create", "--quiet", str(bundle), "--all", check=False)
        if made.returncode != 0:
            if _git(git_dir, "for-each-ref", "--count=1").stdout.strip():
                raise BackupError(f"git bundle create for {team}/{project} failed: "
                                  f"{made.stderr.strip()[-1500:]}")
            bundle.unlink(missing_ok=True)      # an empty repository: nothing to bundle
            rel, refs = None, {}
        else:
            os.chmod(bundle, 0o600)
            refs = _refs(_git(git_dir, "bundle", "list-heads", str(bundle)).stdout)
        lfs_count = lfs_bytes = 0
        lfs_dir = repos.lfs_path(lfs_root, team, project)
        for obj in _lfs_objects(lfs_dir):
            target = dest / "lfs" / team / project / obj.relative_to(lfs_dir)
            sha, size = copy_file(obj, target)
            if sha != obj.name:
                raise BackupError(f"LFS object {obj} is damaged: its sha256 is {sha}; restore "
                                  "it from an older backup or have its owner push it again")
            lfs_count += 1
            lfs_bytes += size
        out[f"{team}/{project}"] = {"bundle": rel, "head": head, "refs": refs,
                                    "lfs_objects": lfs_count, "lfs_bytes": lfs_bytes}
    return out


def restore(saved: dict[str, dict], backup_dir: Path, repos_root: Path, lfs_root: Path) -> None:
    """Recreate every repository of ``saved`` (the manifest's ``repos``) under ``repos_root``
    and its LFS objects under ``lfs_root`` (both staged: nothing is live yet)."""
    for key, info in sorted(saved.items()):
        team, project = repos.parse_repo_key(key)
        git_dir = repos.create_repo(repos_root, team, project, python=sys.executable)
        if info.get("bundle"):
            bundle = str(Path(backup_dir) / info["bundle"])
            _git(git_dir, "bundle", "verify", "--quiet", bundle)
            _git(git_dir, "fetch", "--quiet", "--update-head-ok", "--no-write-fetch-head", bundle,
                 "+refs/*:refs/*")
        _git(git_dir, "symbolic-ref", "HEAD", info.get("head") or "refs/heads/main")
        _git(git_dir, "fsck", "--full", "--no-dangling", "--no-progress")
        got = _refs(_git(git_dir, "for-each-ref", "--format=%(objectname) %(refname)").stdout)
        if got != (info.get("refs") or {}):
            missing = sorted(set(info.get("refs") or {}) - set(got))
            raise BackupError(f"repository {key}: restored refs differ from the backup's "
                              f"(missing: {missing[:5]})")
        src = Path(backup_dir) / "lfs" / team / project
        lfs_dir = repos.lfs_path(lfs_root, team, project)
        count = 0
        for obj in _lfs_objects(src):
            target = lfs_dir / obj.relative_to(src)
            sha, _size = copy_file(obj, target, mode=0o400)
            if sha != obj.name:
                raise BackupError(f"LFS object {obj} of {key} does not match its oid")
            count += 1
        if count != info.get("lfs_objects", 0):
            raise BackupError(f"repository {key}: {count} LFS objects in the backup, the "
                              f"manifest lists {info.get('lfs_objects')}")
