"""Loose input is refused, not guessed: JSON type checks shared by the front doors."""
from __future__ import annotations


def _json_type_problems(fields: dict) -> list[str]:
    """JSON values are taken as sent, never guessed: text fields must be JSON strings, the GPU
    count a JSON integer (not ``true``, ``1.9`` or ``"2"``), the time a JSON integer (minutes) or
    a string (``"2h"``)."""
    problems = []
    for name in ("gpus", "gpu_type", "image"):
        v = fields[name]
        if v is not None and not isinstance(v, str):
            problems.append(f"{name} must be a JSON string, got {json_type(v)} {v!r:.40}")
    v = fields["gpu_count"]
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        problems.append(f"gpu_count must be a JSON integer (e.g. 2), got {json_type(v)} {v!r:.40}")
    v = fields["time"]
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, str))):
        problems.append(f"time must be a JSON integer (minutes) or a string like \"2h\", "
                        f"got {json_type(v)} {v!r:.40}")
    return problems


def json_type(v) -> str:
    """The JSON name of a parsed JSON value's type, for messages."""
    return {bool: "boolean", int: "integer", float: "number with a fraction", str: "string",
            list: "array", dict: "object", type(None): "null"}.get(type(v), type(v).__name__)
