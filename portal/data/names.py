"""Names and paths of the data domain: refused when they could be misread, never guessed."""
from __future__ import annotations

import posixpath
import re

from ..teams.access import OpError

REPO_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_PATH = 1024
MAX_FILES = 1_000_000
INPUT_SLOTS = 5
_CTRL = re.compile(r"[\x00-\x1f\x7f]")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_repo_name(name: object) -> str:
    """A repository name: 1-64 of a-z 0-9 . _ - starting with a letter or digit (no '/', no
    shell characters, no '..')."""
    if not isinstance(name, str) or not REPO_NAME_RE.fullmatch(name) or ".." in name:
        raise OpError(f"repository name {str(name)[:80]!r} is not allowed: use 1-64 characters "
                      "a-z 0-9 . _ - starting with a letter or digit (e.g. cifar-100)")
    return name


def check_kind(kind: object) -> str:
    if kind not in ("dataset", "model"):
        raise OpError(f"kind must be dataset or model, not {str(kind)[:40]!r}")
    return kind


def split_ref(text: str, default_team: str | None = None) -> tuple[str, str]:
    """``team/name`` → (team, name); ``name`` → (default_team, name)."""
    text = (text or "").strip()
    if text.count("/") > 1:
        raise OpError(f"{text[:80]!r}: write TEAM/NAME or NAME")
    team, sep, name = text.rpartition("/")
    if not sep:
        if default_team is None:
            raise OpError(f"{text[:80]!r}: write TEAM/NAME (e.g. vision/cifar-100)")
        team = default_team
    if not team:
        raise OpError(f"{text[:80]!r}: the team is missing; write TEAM/NAME")
    return team, check_repo_name(name)


def parse_version(text: object) -> int | None:
    """``3`` → 3, ``latest`` (or empty) → None."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 1:
            raise OpError(f"version numbers start at 1, not {text}")
        return text
    t = str(text if text is not None else "").strip().lower()
    if t in ("", "latest"):
        return None
    if not t.isdigit() or len(t) > 9 or int(t) < 1:
        raise OpError(f"version {str(text)[:40]!r} is not a version number (1, 2, ... or latest)")
    return int(t)


def check_sha256(value: object) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise OpError(f"sha256 {str(value)[:80]!r} must be 64 lower-case hex digits")
    return value


def check_rel_path(path: object) -> str:
    """A file's path inside a version or an output: relative, '/'-separated, normalised, no
    '..', no empty or '.' parts, no control characters, at most 1024 characters."""
    if not isinstance(path, str) or not path:
        raise OpError("a file path is empty")
    if len(path) > MAX_PATH:
        raise OpError(f"file path {path[:60]!r}... is longer than {MAX_PATH} characters")
    if _CTRL.search(path) or "\\" in path:
        raise OpError(f"file path {path[:80]!r} contains a control character or a backslash")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) \
            or posixpath.normpath(path) != path:
        raise OpError(f"file path {path[:80]!r} must be relative and normalised "
                      "(no leading '/', no '.', '..' or empty parts)")
    return path
