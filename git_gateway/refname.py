"""Git's ref-name rules for branch names, as ``git check-ref-format --branch NAME`` applies them
(``man git-check-ref-format``), in plain Python (no git call on the push path).

``branch_problem(name)`` returns None for a name git accepts as a branch, else a sentence naming
the rule it breaks. On top of the rules for ``refs/heads/NAME`` a branch must not begin with
``-`` (it would be read as an option by every command it is passed to) and must not be ``HEAD``.
"""
from __future__ import annotations

_FORBIDDEN_CHARS = {" ": "a space", "~": "'~'", "^": "'^'", ":": "':'", "?": "'?'", "*": "'*'",
                    "[": "'['", "\\": "a backslash"}


def branch_problem(name: str) -> str | None:
    """None if ``name`` is a valid git branch name, else which rule it breaks."""
    if not isinstance(name, str) or name == "":
        return "a branch name cannot be empty"
    if name.startswith("-"):
        return "a branch name cannot begin with '-' (git would read it as an option)"
    if name == "HEAD":
        return "'HEAD' is not a branch name"
    for ch in name:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return "a branch name cannot contain control characters"
        if ch in _FORBIDDEN_CHARS:
            return f"a branch name cannot contain {_FORBIDDEN_CHARS[ch]}"
    if ".." in name:
        return "a branch name cannot contain '..'"
    if "@{" in name:
        return "a branch name cannot contain '@{'"
    if name.startswith("/") or name.endswith("/"):
        return "a branch name cannot begin or end with '/'"
    if "//" in name:
        return "a branch name cannot contain '//'"
    if name.endswith("."):
        return "a branch name cannot end with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return "no part of a branch name (between '/') can begin with '.'"
        if part.endswith(".lock"):
            return "no part of a branch name (between '/') can end with '.lock'"
    return None
