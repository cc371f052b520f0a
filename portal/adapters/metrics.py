"""The ``Metrics`` port in process: counters and gauges kept in memory (thread-safe), rendered
in Prometheus' text exposition format (version 0.0.4) for a ``/metrics`` endpoint to serve."""
from __future__ import annotations

import re
import threading
from typing import Mapping

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
LabelKey = tuple[tuple[str, str], ...]


def _labels(labels: Mapping[str, str] | None) -> LabelKey:
    items = tuple(sorted((str(k), str(v)) for k, v in (labels or {}).items()))
    for k, _ in items:
        if not _LABEL.match(k) or k.startswith("__"):
            raise ValueError(f"invalid metric label name {k!r}")
    return items


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class MetricsRegistry:
    """Counters (``inc``: only ever go up) and gauges (``set``) by name and labels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kinds: dict[str, str] = {}
        self._values: dict[str, dict[LabelKey, float]] = {}

    def _slot(self, name: str, kind: str) -> dict[LabelKey, float]:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        have = self._kinds.setdefault(name, kind)
        if have != kind:
            raise ValueError(f"metric {name!r} is a {have}, not a {kind}")
        return self._values.setdefault(name, {})

    def inc(self, name: str, amount: float = 1.0, labels: Mapping[str, str] | None = None) -> None:
        if amount < 0:
            raise ValueError(f"counter {name!r} cannot go down ({amount})")
        key = _labels(labels)
        with self._lock:
            slot = self._slot(name, "counter")
            slot[key] = slot.get(key, 0.0) + amount

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        key = _labels(labels)
        with self._lock:
            self._slot(name, "gauge")[key] = float(value)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        with self._lock:
            return self._values.get(name, {}).get(_labels(labels))

    def render(self) -> str:
        lines = []
        with self._lock:
            for name in sorted(self._values):
                lines.append(f"# TYPE {name} {self._kinds[name]}")
                for key, v in sorted(self._values[name].items()):
                    label_text = ",".join(f'{k}="{_escape(val)}"' for k, val in key)
                    lines.append(f"{name}{{{label_text}}} {_number(v)}" if key else f"{name} {_number(v)}")
        return "\n".join(lines) + ("\n" if lines else "")
