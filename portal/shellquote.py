"""Every command Slipway shows (web pages) or prints (CLI, push replies) is quoted for a POSIX
shell here: a branch named ``x;id`` or ``feat/$(touch pwned)`` (both legal git names) must never
run anything when a user copies the suggested command into a terminal.

``quote`` is ``shlex.quote``; ``command`` joins an argv of quoted words; ``branch_arg`` makes a
branch that begins with ``-`` unambiguous to git (``refs/heads/-n``, never an option). Templates
use the ``shell`` filter (registered in ``portal.web``): ``{{ remote|shell }}`` quotes one word,
``{{ ['git', 'pull', 'slipway', job.branch|branch_arg]|shell }}`` a whole command; Jinja then
HTML-escapes the result as usual, and the text a browser shows (and copies) is the quoted command.
git_gateway (no portal imports) uses ``shlex.join`` directly: the same quoting.
"""
from __future__ import annotations

import shlex
from collections.abc import Iterable


def quote(word) -> str:
    """One shell word: ``a'b`` -> ``'a'"'"'b'``; safe words (``exp-1``) stay as they are."""
    return shlex.quote(str(word))


def command(argv: Iterable) -> str:
    """An argv as one line a POSIX shell splits back into exactly these words."""
    return " ".join(quote(a) for a in argv)


def branch_arg(branch: str) -> str:
    """A branch name as a git command-line argument: one beginning with ``-`` becomes its full
    ref name, so git never reads it as an option."""
    branch = str(branch)
    return f"refs/heads/{branch}" if branch.startswith("-") else branch


def shell(value) -> str:
    """The Jinja filter: a list/tuple is a command (argv), anything else one word."""
    if isinstance(value, (list, tuple)):
        return command(value)
    return quote(value)
