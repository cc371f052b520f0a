"""Prices: an hourly rate per GPU type, a rate per core-hour for CPU-only jobs and a storage
rate per GB-month.

Configuration is a plain mapping (from the portal's config file or environment)::

    {"gpu_hourly": {"a4000": "1.20", "a6000": "2.50"}, "cpu_hourly": "0.02",
     "storage_gb_month": "0.10"}

A CPU-only job (no GPU in its allocation) is billed per core at ``cpu_hourly``: billing calls its
allocation the pseudo GPU type ``cpu`` (:data:`CPU`), which :meth:`Rates.gpu_rate` prices at
``cpu_hourly``; ``cpu`` (and ``none``) can therefore never be a GPU type.

Rates are written as strings (or ints), never floats, with at most 6 decimals; a rate of 0 is
allowed (a free GPU type). GPU type names are lower-case Slurm GRES type names (``a4000``,
``shard``). A GPU type missing from the rates cannot be billed: :meth:`Rates.gpu_rate` raises
:class:`UnknownGpuType` rather than charging nothing silently.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from .money import MoneyError, parse_amount

DEFAULT_STORAGE_GB_MONTH = Decimal("0.10")
DEFAULT_CPU_HOURLY = Decimal("0.02")
CPU = "cpu"            # the billing type of a CPU-only job's cores (slurm_bridge.request.CPU)
RESERVED_TYPES = frozenset({CPU, "none"})
RATE_PLACES = 6
_GPU_TYPE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")


class RatesError(ValueError):
    """Rates configuration is invalid; the message names the offending key."""


class UnknownGpuType(RatesError, KeyError):
    """A GPU type has no configured rate."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def _rate(value: object, what: str) -> Decimal:
    try:
        return parse_amount(value, what=what, max_places=RATE_PLACES, allow_zero=True)
    except MoneyError as exc:
        raise RatesError(str(exc)) from None


@dataclass(frozen=True)
class Rates:
    """Hourly dollars per GPU of each type, per core of a CPU-only job, and dollars per GB-month
    of storage."""

    gpu_hourly: Mapping[str, Decimal]
    storage_gb_month: Decimal = field(default=DEFAULT_STORAGE_GB_MONTH)
    cpu_hourly: Decimal = field(default=DEFAULT_CPU_HOURLY)

    def __post_init__(self) -> None:
        checked: dict[str, Decimal] = {}
        if not isinstance(self.gpu_hourly, Mapping):
            raise RatesError("gpu_hourly must be a mapping of GPU type to hourly rate")
        for gpu_type, value in self.gpu_hourly.items():
            if not isinstance(gpu_type, str) or not _GPU_TYPE.fullmatch(gpu_type):
                raise RatesError(
                    f"GPU type {gpu_type!r} is not a valid name (lower-case letters, digits, "
                    "'_', '.', '-'; e.g. a4000)"
                )
            if gpu_type in RESERVED_TYPES:
                raise RatesError(f"{gpu_type!r} cannot be a GPU type: CPU-only jobs are billed "
                                 "per core-hour at cpu_hourly")
            checked[gpu_type] = _rate(value, f"gpu_hourly[{gpu_type}]")
        object.__setattr__(self, "gpu_hourly", MappingProxyType(checked))
        object.__setattr__(
            self, "storage_gb_month", _rate(self.storage_gb_month, "storage_gb_month")
        )
        object.__setattr__(self, "cpu_hourly", _rate(self.cpu_hourly, "cpu_hourly"))

    def gpu_rate(self, gpu_type: str) -> Decimal:
        """Hourly rate for one GPU of ``gpu_type`` (one core for ``cpu``); raises
        :class:`UnknownGpuType`."""
        if gpu_type == CPU:
            return self.cpu_hourly
        try:
            return self.gpu_hourly[gpu_type]
        except KeyError:
            known = ", ".join(sorted(self.gpu_hourly)) or "none"
            raise UnknownGpuType(
                f"no hourly rate configured for GPU type {gpu_type!r} (configured: {known})"
            ) from None

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> "Rates":
        """Build from ``{"gpu_hourly": {...}, "cpu_hourly": "0.02", "storage_gb_month": "0.10"}``;
        unknown keys refused."""
        if not isinstance(config, Mapping):
            raise RatesError("rates configuration must be a mapping")
        unknown = set(config) - {"gpu_hourly", "storage_gb_month", "cpu_hourly"}
        if unknown:
            raise RatesError(f"unknown rates setting(s): {', '.join(sorted(map(str, unknown)))}")
        if "gpu_hourly" not in config:
            raise RatesError("rates configuration needs gpu_hourly, e.g. {\"a4000\": \"1.20\"}")
        gpu_hourly = config["gpu_hourly"]
        if not isinstance(gpu_hourly, Mapping):
            raise RatesError("gpu_hourly must be a mapping of GPU type to hourly rate")
        storage = config.get("storage_gb_month", DEFAULT_STORAGE_GB_MONTH)
        cpu = config.get("cpu_hourly", DEFAULT_CPU_HOURLY)
        return cls(gpu_hourly=dict(gpu_hourly), storage_gb_month=storage,  # type: ignore[arg-type]
                   cpu_hourly=cpu)  # type: ignore[arg-type]
