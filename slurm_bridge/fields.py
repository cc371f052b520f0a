"""Field readers shared by the record parsers: Slurm's JSON numbers and times, GRES and TRES
strings (``gpu:a4000:4(S:0),shard:8``, ``cpu=1,gres/gpu:a4000=2``)."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Mapping


def _time(value: Any) -> datetime | None:
    """Epoch seconds (0 = unset) -> aware UTC datetime."""
    if isinstance(value, dict):  # newer plugins: {"set": true, "number": N}
        value = value.get("number") if value.get("set", True) else None
    if not value:
        return None
    return datetime.fromtimestamp(int(value), tz=timezone.utc)


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, dict):
        value = value.get("number") if value.get("set", True) else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


NO_VAL = (0xFFFFFFFE, 0xFFFFFFFF)  # Slurm's "not set" numbers (NO_VAL, INFINITE) as uint32


def _opt_int(value: Any) -> int | None:
    """A number that may be unset: None, ``{"set": false}`` or NO_VAL -> None."""
    if isinstance(value, dict):
        value = value.get("number") if value.get("set", True) else None
    if value is None or isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return None if number in NO_VAL else number


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses: ``gpu:a4000:2(IDX:0,2),shard:8`` -> 2 items."""
    items, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip() and i.strip() != "(null)"]


def parse_gres(text: str | None) -> dict[str, int]:
    """``gpu:a4000:4(S:0),shard:8`` -> {"a4000": 4, "shard": 8} (untyped gpu -> "gpu")."""
    out: dict[str, int] = {}
    for item in _split_top(text or ""):
        item = re.sub(r"\(.*\)$", "", item)
        if item.startswith(("gres:", "gres/")):  # squeue tres_per_node: gres:gpu:a4000:2
            item = item[5:]
        parts = item.split(":")
        if parts[0] == "gpu":
            name = parts[1] if len(parts) == 3 else "gpu"
        elif parts[0] == "shard":
            name = "shard"
        else:
            continue
        count = parts[-1]
        if count.isdigit():
            out[name] = out.get(name, 0) + int(count)
    return out


def parse_tres_str(text: str | None) -> dict[str, int]:
    """``cpu=1,mem=1G,gres/gpu:a4000=2,gres/gpu=2,gres/shard=2`` -> {"a4000": 2, "shard": 2}."""
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        key, _, value = item.partition("=")
        if not value.isdigit():
            continue
        if key.startswith("gres/gpu:"):
            out[key[len("gres/gpu:"):]] = int(value)
        elif key == "gres/shard":
            out["shard"] = int(value)
    return out


def tres_cpus(text: str | None) -> int:
    """``cpu=4,mem=16G,node=1`` -> 4 (0 when the string has no ``cpu=``)."""
    m = re.search(r"(?:^|,)cpu=(\d+)(?:,|$)", text or "")
    return int(m.group(1)) if m else 0


def _frozen(d: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(d))
