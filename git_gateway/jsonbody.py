"""Parse a JSON request body with bounds (standard library only; the portal uses it too).

``json.loads`` recurses once per nesting level, so ``[[[[…]]]]`` 100,000 deep raises
RecursionError (an HTTP 500) and a huge body costs memory. ``loads_bounded`` checks the size,
then scans the raw text for the nesting depth (skipping string literals and their escapes) and
refuses anything deeper than ``max_depth`` before the parser runs. ``NaN``/``Infinity`` are not
JSON and are refused too. Every refusal is a ``JsonBodyError`` (a ValueError) whose message can be
shown to the client as it is.
"""
from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
MAX_BYTES = 1024 * 1024

# a whole string literal (escapes included) or one bracket; anything else is skipped
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JsonBodyError(ValueError):
    """The body is not acceptable JSON; ``str(exc)`` says why."""


def nesting_depth(text: str, limit: int | None = None) -> int:
    """The deepest ``[``/``{`` nesting in ``text`` (string contents ignored); stops counting as
    soon as ``limit`` is exceeded and returns ``limit + 1``."""
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    return deepest
        elif tok in ("]", "}"):
            depth -= 1
    return deepest


def _no_constants(name: str):
    raise JsonBodyError(f"{name} is not a JSON number")


def loads_bounded(data: bytes | str, *, max_depth: int = MAX_DEPTH,
                  max_bytes: int | None = MAX_BYTES) -> Any:
    """``json.loads`` that refuses oversized, too deeply nested or invalid input with a
    ``JsonBodyError`` (never RecursionError)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise JsonBodyError(f"the JSON body is larger than {max_bytes} bytes")
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise JsonBodyError("the JSON body is not UTF-8") from None
    else:
        text = data
    if nesting_depth(text, max_depth) > max_depth:
        raise JsonBodyError(f"the JSON body is nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_no_constants)
    except JsonBodyError:
        raise
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces
        raise JsonBodyError(f"the body is not valid JSON ({exc})") from None
