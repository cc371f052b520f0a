"""Name rules shared by login and LDAP sync.

* Personal team of a user: ``personal_team_name`` (lower-case, ``@`` and ``.`` → ``-``) — the one
  rule, used by the CLI, login and LDAP sync, never copied.
* Team of an LDAP group: the group's ``cn`` through the same rule, then every character a team name
  may not hold (``git_gateway.repos.validate_name``: ``[a-z0-9][a-z0-9._-]{0,62}``) becomes ``-``;
  ``None`` if nothing usable is left.
* Unix account names are checked before they reach Slurm/sbatch.
"""
from __future__ import annotations

import re

from .. import integrations as ig

_NOT_TEAM_CHAR = re.compile(r"[^a-z0-9._-]+")
UNIX_USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
# Login names reaching the directory: printable, bounded (escaping handles the rest).
MAX_USERNAME = 128


def personal_team_name(user_name: str) -> str:
    return user_name.lower().replace("@", "-").replace(".", "-")


def team_name_for_group(cn: str) -> str | None:
    """The team name an LDAP group ``cn`` maps to (``"NLP Team"`` → ``nlp-team``)."""
    name = _NOT_TEAM_CHAR.sub("-", personal_team_name(cn or "").strip())
    name = name.strip("-._")[:63].rstrip("-._")
    name = re.sub(r"\.{2,}", "-", name)
    if name.endswith(".git") or name.endswith(".lock"):
        name = name.rsplit(".", 1)[0] + "-" + name.rsplit(".", 1)[1]
    try:
        return ig.validate_name(name, "team")
    except ValueError:
        return None


def personal_team_for(user_name: str) -> str | None:
    """The personal team name of ``user_name``, or None when the rule yields no valid team name."""
    try:
        return ig.validate_name(personal_team_name(user_name), "personal team")
    except ValueError:
        return None


def valid_unix_user(name: str | None) -> bool:
    return bool(name) and UNIX_USER_RE.fullmatch(name) is not None


def valid_login_name(name: str | None) -> bool:
    """Cheap gate before any lookup: non-empty, bounded, no control characters."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_USERNAME
            and not any(ord(c) < 32 or ord(c) == 127 for c in name))


_DN_SEP = re.compile(r"\s*(?<!\\)([,=+])\s*")


def norm_dn(dn: str | None) -> str:
    """A DN in a form fit for comparing (case and spaces around separators ignored)."""
    return _DN_SEP.sub(r"\1", (dn or "").strip()).lower()
