"""The text form of the hook callback (sent by ``hook_script.sh``), read into the same payload
dict as the JSON form (``hook_program.build_payload``). STANDARD LIBRARY ONLY.

    slipway-hook 1
    phase pre-receive|post-receive
    repo TEAM/PROJECT
    pusher NAME
    pusher-is-job 0|1
    quarantine PATH            optional, pre-receive only
    option VALUE               0..n, in order
    update OLD NEW REF         0..n, in order (the hook's input lines)

Every single-valued key must appear exactly once (``quarantine`` at most once), so a value can
never smuggle in a second ``repo`` or ``pusher``; unknown keys are refused. Malformed ``update``
lines and ref names that are not UTF-8 come back as ``problems`` (the words the Python hook
prints for them): pre-receive refuses the push with them, post-receive ignores those lines.
"""
from __future__ import annotations

from . import hook_program

MEDIA_TYPE = "text/x-slipway-hook"
MAGIC = b"slipway-hook 1"
_SINGLE = ("phase", "repo", "pusher", "pusher-is-job")


class HookWireError(ValueError):
    """The body is not a hook callback in the text form (the message says why)."""


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def parse(data: bytes) -> tuple[dict, list[str]]:
    """``(payload, problems)`` from a text callback body; raises HookWireError when malformed."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines or lines[0] != MAGIC:
        raise HookWireError("not a Slipway hook callback (first line must be 'slipway-hook 1')")
    single: dict[str, bytes] = {}
    options: list[str] = []
    updates: list[dict] = []
    problems: list[str] = []
    for raw in lines[1:]:
        key, sep, value = raw.partition(b" ")
        name = key.decode("ascii", "replace")
        if not sep:
            raise HookWireError(f"line without a value: {name[:40]!r}")
        if name in _SINGLE or name == "quarantine":
            if name in single:
                raise HookWireError(f"{name!r} given twice")
            single[name] = value
        elif name == "option":
            options.append(_text(value))
        elif name == "update":   # one hook input line, read as the Python hook reads it
            got, bad = hook_program.parse_updates(value)
            updates += got
            problems += bad
        else:
            raise HookWireError(f"unknown key {name[:40]!r}")
    missing = [k for k in _SINGLE if k not in single]
    if missing:
        raise HookWireError(f"missing {', '.join(missing)}")
    phase = _text(single["phase"])
    payload = {
        "phase": phase,
        "repo": _text(single["repo"]),
        "pusher": _text(single["pusher"]),
        "pusher_is_job": single["pusher-is-job"] == b"1",
        "updates": updates,
        "push_options": options,
    }
    if phase == "pre-receive" and single.get("quarantine"):
        payload["quarantine"] = _text(single["quarantine"])
    return payload, problems
