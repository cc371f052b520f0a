"""Bare repositories on disk: create, configure, delete, measure, read files.

Layout (fixed by docs/ARCHITECTURE.md):
    <repos_root>/<team>/<project>.git          the bare repository
    <lfs_root>/<team>/<project>/<oid[0:2]>/<oid[2:4]>/<oid>   its LFS objects

Everything here takes plain values, runs ``git`` as a subprocess with an argv list (never a
shell) and returns plain values.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import hooks, objects

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
SHA_RE = re.compile(r"(?:[0-9a-f]{40}|[0-9a-f]{64})")
ENTRYPOINT = "slipway-entrypoint.sh"
#: git runs under this umask: repositories are the server's alone (served over HTTP by it).
PRIVATE_UMASK = 0o077

# Settings applied to every bare repository (see BRIEF §4 for why).
REPO_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.bigFileThreshold", "16m"),
    ("http.receivepack", "true"),
    ("http.uploadpack", "true"),
    ("receive.advertisePushOptions", "true"),
    ("uploadpack.allowReachableSHA1InWant", "true"),
    ("uploadpack.allowTipSHA1InWant", "true"),
    ("uploadpack.allowFilter", "true"),
    ("core.logAllRefUpdates", "true"),
    ("gc.auto", "0"),
)


class InvalidName(ValueError):
    """A team or project name that may not become a path."""


class RepoExists(Exception):
    pass


class RepoNotFound(Exception):
    pass


@dataclass(frozen=True)
class RepoUsage:
    git_bytes: int
    lfs_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.git_bytes + self.lfs_bytes


@dataclass(frozen=True)
class TreeEntry:
    """One path at one commit, as ``git ls-tree`` reports it."""
    path: str
    mode: str          # "100644", "100755", "120000" (symlink), "040000" (tree), "160000" (submodule)
    type: str          # "blob" | "tree" | "commit"
    object_id: str
    size: int | None   # blobs only

    @property
    def is_regular_file(self) -> bool:
        return self.type == "blob" and self.mode in ("100644", "100755")

    @property
    def is_executable(self) -> bool:
        return self.mode == "100755"


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a safe team/project name, else raise InvalidName."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid {what} {name!r}: use 1-63 characters a-z 0-9 . _ -, starting with a letter or digit")
    if ".." in name:
        raise InvalidName(f"invalid {what} {name!r}: '..' is not allowed")
    if name.endswith(".git") or name.endswith(".lock"):
        raise InvalidName(f"invalid {what} {name!r}: may not end in .git or .lock")
    return name


def repo_key(team: str, project: str) -> str:
    return f"{validate_name(team, 'team')}/{validate_name(project, 'project')}"


def parse_repo_key(key: str) -> tuple[str, str]:
    parts = key.split("/")
    if len(parts) != 2:
        raise InvalidName(f"invalid repository key {key!r}: expected team/project")
    return validate_name(parts[0], "team"), validate_name(parts[1], "project")


def repo_path(repos_root: str | os.PathLike, team: str, project: str) -> Path:
    return Path(repos_root) / validate_name(team, "team") / f"{validate_name(project, 'project')}.git"


def lfs_path(lfs_root: str | os.PathLike, team: str, project: str) -> Path:
    return Path(lfs_root) / validate_name(team, "team") / validate_name(project, "project")


def repo_exists(repos_root: str | os.PathLike, team: str, project: str) -> bool:
    p = repo_path(repos_root, team, project)
    return (p / "HEAD").is_file() and (p / "objects").is_dir()


def _git(args: list[str], *, cwd: str | os.PathLike | None = None, env: dict | None = None,
         check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    if env:
        full_env.update(env)
    # umask 077: what git creates (a new repository, objects, refs) is the server's alone,
    # whatever the calling process's umask
    return subprocess.run(["git", *args], cwd=cwd, env=full_env, input=input,
                          capture_output=True, check=check, umask=PRIVATE_UMASK)


def configure_repo(path: str | os.PathLike) -> None:
    """(Re-)apply Slipway's settings to an existing bare repository."""
    for key, value in REPO_CONFIG:
        _git(["--git-dir", str(path), "config", key, value])


def install_hooks(path: str | os.PathLike, python: str | None = None) -> None:
    """Install (or refresh) Slipway's pre-receive and post-receive hooks."""
    hooks.install(Path(path) / "hooks", python=python or sys.executable)


def refresh_hooks(repos_root: str | os.PathLike, python: str | None = None) -> int:
    """Re-install the hooks of every repository under ``repos_root`` whose hooks are not what
    this version installs (an upgrade: e.g. the Python hooks before the bash ones); returns how
    many were refreshed. Only ``<team>/<project>.git`` directories with a ``hooks`` folder."""
    python = python or sys.executable
    refreshed = 0
    for hooks_dir in sorted(Path(repos_root).glob("*/*.git/hooks")):
        if hooks_dir.is_dir() and not hooks.current(hooks_dir, python=python):
            hooks.install(hooks_dir, python=python)
            refreshed += 1
    return refreshed


def create_repo(repos_root: str | os.PathLike, team: str, project: str, *,
                default_branch: str = "main", python: str | None = None,
                exist_ok: bool = False) -> Path:
    """Create ``<repos_root>/<team>/<project>.git`` with config and hooks; return its path.

    With ``exist_ok`` an existing repository is re-configured and its hooks refreshed
    (idempotent); otherwise RepoExists is raised.
    """
    path = repo_path(repos_root, team, project)
    if path.exists():
        if not exist_ok:
            raise RepoExists(str(path))
    else:
        private_dirs(path.parent)
        tmp = path.parent / f".{path.name}.creating-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        _git(["init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(tmp)])
        # Drop git's sample hooks: only ours live there.
        for sample in (tmp / "hooks").glob("*.sample"):
            sample.unlink()
        configure_repo(tmp)
        install_hooks(tmp, python)
        try:
            os.rename(tmp, path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not exist_ok:
                raise RepoExists(str(path))
        return path
    configure_repo(path)
    install_hooks(path, python)
    return path


def delete_repo(repos_root: str | os.PathLike, team: str, project: str,
                lfs_root: str | os.PathLike | None = None) -> bool:
    """Remove the repository and its LFS objects irrecoverably. True if anything was removed."""
    removed = False
    path = repo_path(repos_root, team, project)
    if path.exists():
        # Rename first so a concurrent request never sees a half-deleted repository.
        trash = path.parent / f".{path.name}.deleting-{os.getpid()}"
        os.rename(path, trash)
        shutil.rmtree(trash)
        removed = True
        _rmdir_if_empty(path.parent)
    if lfs_root is not None:
        lp = lfs_path(lfs_root, team, project)
        if lp.exists():
            shutil.rmtree(lp)
            removed = True
            _rmdir_if_empty(lp.parent)
    return removed


def private_dirs(path: str | os.PathLike) -> None:
    """Create ``path`` and its missing parents 0700 (mkdir's mode: private from the start,
    whatever the umask). Repositories and LFS objects are read by the server process only."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass


def _rmdir_if_empty(p: Path) -> None:
    try:
        p.rmdir()
    except OSError:
        pass


def _tree_bytes(root: Path) -> int:
    total = 0
    if not root.exists():
        return 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for fn in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, fn))
            except FileNotFoundError:
                continue  # removed while walking (gc, tmp files)
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def disk_usage(repos_root: str | os.PathLike, team: str, project: str,
               lfs_root: str | os.PathLike | None = None) -> RepoUsage:
    """Bytes on disk (apparent file sizes) of the bare repository and of its LFS objects."""
    git_bytes = _tree_bytes(repo_path(repos_root, team, project))
    lfs_bytes = _tree_bytes(lfs_path(lfs_root, team, project)) if lfs_root is not None else 0
    return RepoUsage(git_bytes=git_bytes, lfs_bytes=lfs_bytes)


def _object_env(path: Path, quarantine: str | None) -> dict[str, str]:
    """Environment that lets git see objects still in a pre-receive quarantine.

    During pre-receive the pushed objects live in ``objects/tmp_objdir-incoming-XXXX`` and are invisible to
    other processes; the hook sends that directory as ``quarantine`` in its callback.
    """
    env = {"GIT_LITERAL_PATHSPECS": "1"}
    if quarantine:
        q, objects = _object_dirs(path, quarantine)
        env["GIT_OBJECT_DIRECTORY"] = str(q)
        env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = str(objects)
    return env


def _object_dirs(path: Path, quarantine: str | None) -> list[Path]:
    """Where the objects a push can see live: its quarantine (checked to be one of this
    repository's) first, then the repository's object store."""
    objects = (path / "objects").resolve()
    if not quarantine:
        return [objects]
    q = Path(quarantine).resolve()
    if (q.parent != objects or not q.is_dir()
            or not (q.name.startswith("tmp_objdir-incoming-") or q.name.startswith("incoming-"))):
        raise ValueError(f"quarantine {quarantine!r} is not a quarantine of {path}")
    return [q, objects]


def tree_entry(repos_root: str | os.PathLike, team: str, project: str, sha: str, file_path: str,
               *, quarantine: str | None = None) -> TreeEntry | None:
    """What ``file_path`` is at commit ``sha`` (None when absent or the commit is unknown)."""
    path = repo_path(repos_root, team, project)
    if not SHA_RE.fullmatch(sha or ""):
        raise ValueError(f"not a full commit id: {sha!r}")
    if not file_path or file_path.startswith("/") or "\0" in file_path:
        raise ValueError(f"bad path {file_path!r}")
    env = _object_env(path, quarantine)
    r = _git(["--git-dir", str(path), "ls-tree", "-z", "--long", "--full-tree",
              f"{sha}^{{commit}}", "--", file_path], env=env, check=False)
    if r.returncode != 0:
        return None
    for rec in r.stdout.split(b"\0"):
        if not rec:
            continue
        meta, _, name = rec.partition(b"\t")
        if name.decode("utf-8", "surrogateescape") != file_path:
            continue
        mode, typ, oid, size = meta.decode().split()
        return TreeEntry(path=file_path, mode=mode, type=typ, object_id=oid,
                         size=int(size) if size != "-" else None)
    return None


def read_file(repos_root: str | os.PathLike, team: str, project: str, sha: str, file_path: str,
              *, max_bytes: int = 1 << 20, quarantine: str | None = None) -> bytes | None:
    """Content of a regular file at commit ``sha``; None when absent or not a regular file.

    Raises ValueError when the file is larger than ``max_bytes``.
    """
    entry = tree_entry(repos_root, team, project, sha, file_path, quarantine=quarantine)
    if entry is None or not entry.is_regular_file:
        return None
    if entry.size is not None and entry.size > max_bytes:
        raise ValueError(f"{file_path} is {entry.size} bytes (limit {max_bytes})")
    path = repo_path(repos_root, team, project)
    r = _git(["--git-dir", str(path), "cat-file", "blob", entry.object_id],
             env=_object_env(path, quarantine))
    return r.stdout


def check_entrypoint(repos_root: str | os.PathLike, team: str, project: str, sha: str,
                     *, quarantine: str | None = None) -> str | None:
    """None when ``slipway-entrypoint.sh`` is a regular file at ``sha``, else a user message.
    Read from the loose objects when they are all there (``objects``), else by ``git``."""
    path = repo_path(repos_root, team, project)
    if not SHA_RE.fullmatch(sha or ""):
        raise ValueError(f"not a full commit id: {sha!r}")
    found = objects.root_entry(_object_dirs(path, quarantine), sha, ENTRYPOINT)
    if found is objects.UNKNOWN:
        entry = tree_entry(repos_root, team, project, sha, ENTRYPOINT, quarantine=quarantine)
    else:
        entry = None if found is None else TreeEntry(ENTRYPOINT, *found, size=None)
    if entry is None:
        return f"slipway: {ENTRYPOINT} is missing at the repository root of {sha[:12]}"
    if not entry.is_regular_file:
        kind = {"120000": "a symlink", "040000": "a directory", "160000": "a submodule"}.get(
            entry.mode, f"not a regular file (mode {entry.mode})")
        return f"slipway: {ENTRYPOINT} at {sha[:12]} is {kind}; it must be a regular file"
    return None


def resolve_ref(repos_root: str | os.PathLike, team: str, project: str, ref: str) -> str | None:
    """The object id a ref points at, or None."""
    path = repo_path(repos_root, team, project)
    r = _git(["--git-dir", str(path), "rev-parse", "--verify", "--quiet", "--end-of-options",
              f"{ref}^{{commit}}"], check=False)
    return r.stdout.decode().strip() if r.returncode == 0 else None


def delete_ref(repos_root: str | os.PathLike, team: str, project: str, ref: str) -> bool:
    """Delete one ref (and its reflog) from the bare repository; True if it existed. Only full
    names under ``refs/`` that git accepts; a missing ref (or repository) is not an error."""
    if not isinstance(ref, str) or not ref.startswith("refs/") or "\0" in ref:
        raise ValueError(f"not a full ref name: {ref!r}")
    if _git(["check-ref-format", ref], check=False).returncode != 0:
        raise ValueError(f"not a valid ref name: {ref!r}")
    path = repo_path(repos_root, team, project)
    if not (path / "HEAD").is_file():
        return False
    old = _git(["--git-dir", str(path), "rev-parse", "--verify", "--quiet", "--end-of-options", ref],
               check=False)
    if old.returncode != 0:
        return False
    r = _git(["--git-dir", str(path), "update-ref", "--no-deref", "-d", ref, old.stdout.decode().strip()],
             check=False)
    if r.returncode != 0:
        raise RuntimeError(f"git update-ref -d {ref} failed: {r.stderr.decode(errors='replace').strip()}")
    return True
