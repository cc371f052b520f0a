"""Ledger entry kinds. Every entry says what it is for and carries an idempotency ``key``.

A team's balance is the sum of :attr:`delta` over its entries, nothing else.

=================  =====================================================  =================
kind               what it records                                        key
=================  =====================================================  =================
``Deposit``        funds added: who, when, note                           caller-chosen,
                                                                          ``deposit:<id>``
``GpuCharge``      GPU minutes ``[from_minute, to_minute)`` of one        ``gpu:<job>:<attempt>:<from_minute>``
                   attempt of one Slurm job; GPU type(s), count, rate
                   (a CPU-only job: type ``cpu``, count = cores, rate
                   per core-hour)
``StorageCharge``  storage of one repository/dataset over minutes         ``storage:<resource>:<from_minute_epoch>``
                   ``[from, to)`` since the Unix epoch, size in GB, rate
``Adjustment``     a signed correction by an administrator (refund...)    caller-chosen
=================  =====================================================  =================

Amounts are non-negative Decimals; charges subtract (``delta = -amount``), deposits add,
an adjustment's ``amount`` is signed and is its delta. GPU and storage keys are derived from the
fields, so the same minutes planned twice produce the same key and a store with a unique
constraint on ``key`` accepts them once.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Union

from .money import ZERO, format_usd, require_money


_STORAGE_UNITS_PER_MICRO = 10**9 * 43_200  # accounting.storage.STORAGE_UNITS_PER_MICRO


def _nonempty(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")


def _when(value: object, what: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")


def _non_negative(amount: Decimal, what: str) -> None:
    if require_money(amount, what) < 0:
        raise ValueError(f"{what} must not be negative, got {amount}")


@dataclass(frozen=True, kw_only=True)
class Deposit:
    """Funds added to a team by ``by`` at ``at``."""

    team: str
    amount: Decimal
    by: str
    at: datetime
    note: str = ""
    key: str = field(default_factory=lambda: f"deposit:{uuid.uuid4().hex}")

    def __post_init__(self) -> None:
        _nonempty(self.team, "team")
        _nonempty(self.by, "by")
        _nonempty(self.key, "key")
        _when(self.at, "at")
        if require_money(self.amount, "deposit amount") <= 0:
            raise ValueError(f"deposit amount must be positive, got {self.amount}")

    @property
    def delta(self) -> Decimal:
        return self.amount

    def describe(self) -> str:
        note = f": {self.note}" if self.note else ""
        return f"deposit {format_usd(self.amount)} by {self.by}{note}"


CPU = "cpu"  # accounting.rates.CPU: a CPU-only job's cores


@dataclass(frozen=True)
class GpuLine:
    """``count`` GPUs of ``gpu_type`` billed at ``hourly_rate`` dollars per GPU-hour; for
    ``gpu_type`` ``cpu`` (a CPU-only job), ``count`` cores at dollars per core-hour."""

    gpu_type: str
    count: int
    hourly_rate: Decimal

    def __post_init__(self) -> None:
        _nonempty(self.gpu_type, "gpu_type")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"GPU count must be a positive int, got {self.count!r}")
        _non_negative(self.hourly_rate, "hourly_rate")

    @property
    def is_cpu(self) -> bool:
        return self.gpu_type == CPU

    def describe(self) -> str:
        """``2x a4000 @ $0.50/h`` or ``4 cores @ $0.02/core-hour``."""
        if self.is_cpu:
            unit = "core" if self.count == 1 else "cores"
            return f"{self.count} {unit} @ {format_usd(self.hourly_rate)}/core-hour"
        return f"{self.count}x {self.gpu_type} @ {format_usd(self.hourly_rate)}/h"


@dataclass(frozen=True, kw_only=True)
class GpuCharge:
    """GPU minutes ``[from_minute, to_minute)`` of one job attempt.

    Minutes count from the attempt's start (minute 0 is the first started minute). ``gpus`` has
    one line per GPU type in the attempt's AllocTRES (almost always exactly one); a CPU-only
    attempt has one ``cpu`` line (its cores).
    """

    team: str
    cluster_job_id: str
    attempt: int
    attempt_start: datetime | None
    from_minute: int
    to_minute: int
    gpus: tuple[GpuLine, ...]
    amount: Decimal

    def __post_init__(self) -> None:
        _nonempty(self.team, "team")
        _nonempty(self.cluster_job_id, "cluster_job_id")
        if not isinstance(self.attempt, int) or self.attempt < 0:
            raise ValueError(f"attempt must be an int >= 0, got {self.attempt!r}")
        if not 0 <= self.from_minute < self.to_minute:
            raise ValueError(
                f"minute range [{self.from_minute}, {self.to_minute}) must be non-empty, from >= 0"
            )
        if not self.gpus:
            raise ValueError("a GPU charge needs at least one GPU line")
        _non_negative(self.amount, "amount")

    @property
    def key(self) -> str:
        return f"gpu:{self.cluster_job_id}:{self.attempt}:{self.from_minute}"

    @property
    def delta(self) -> Decimal:
        return -self.amount

    @property
    def minutes(self) -> int:
        return self.to_minute - self.from_minute

    @property
    def gpu_type(self) -> str:
        """The GPU type, or types joined by ``+`` for a (rare) mixed allocation."""
        return "+".join(line.gpu_type for line in self.gpus)

    @property
    def gpu_count(self) -> int:
        return sum(line.count for line in self.gpus)

    @property
    def cpu_only(self) -> bool:
        """A CPU-only attempt's cores (billed per core-hour), not GPUs."""
        return all(line.is_cpu for line in self.gpus)

    def describe(self) -> str:
        lines = ", ".join(line.describe() for line in self.gpus)
        if self.cpu_only:
            lines = f"CPU only, {lines}"
        return (
            f"job {self.cluster_job_id} attempt {self.attempt}: minutes "
            f"{self.from_minute}-{self.to_minute} ({self.minutes} min), {lines}"
        )


@dataclass(frozen=True, kw_only=True)
class StorageCharge:
    """Storage of ``resource`` (e.g. ``repo:nlp/proj``, ``dataset:nlp/wiki@3``) over the minutes
    ``[from_minute_epoch, to_minute_epoch)`` counted since 1970-01-01T00:00Z.

    ``carry``: the rounding remainder this charge passes to the resource's next one, in units of
    1 / (10**9 * 43,200) micro-dollar (accounting.storage), at most half a micro-dollar.
    """

    team: str
    resource: str
    size_bytes: int
    from_minute_epoch: int
    to_minute_epoch: int
    rate_gb_month: Decimal
    amount: Decimal
    carry: int = 0

    def __post_init__(self) -> None:
        _nonempty(self.team, "team")
        _nonempty(self.resource, "resource")
        if isinstance(self.size_bytes, bool) or not isinstance(self.size_bytes, int) or self.size_bytes < 0:
            raise ValueError(f"size_bytes must be an int >= 0, got {self.size_bytes!r}")
        if not 0 <= self.from_minute_epoch < self.to_minute_epoch:
            raise ValueError("storage minute range must be non-empty")
        _non_negative(self.rate_gb_month, "rate_gb_month")
        _non_negative(self.amount, "amount")
        if (isinstance(self.carry, bool) or not isinstance(self.carry, int)
                or 2 * abs(self.carry) > _STORAGE_UNITS_PER_MICRO):
            raise ValueError(f"storage carry must be an int within half a micro-dollar, got {self.carry!r}")

    @property
    def key(self) -> str:
        return f"storage:{self.resource}:{self.from_minute_epoch}"

    @property
    def delta(self) -> Decimal:
        return -self.amount

    @property
    def minutes(self) -> int:
        return self.to_minute_epoch - self.from_minute_epoch

    @property
    def gb(self) -> Decimal:
        """Size in GB, where 1 GB = 10**9 bytes (exact)."""
        return Decimal(self.size_bytes).scaleb(-9)

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.from_minute_epoch * 60, timezone.utc)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(self.to_minute_epoch * 60, timezone.utc)

    def describe(self) -> str:
        return (
            f"storage {self.resource}: {self.gb.normalize():f} GB for {self.minutes} min "
            f"@ {format_usd(self.rate_gb_month)}/GB-month"
        )


@dataclass(frozen=True, kw_only=True)
class Adjustment:
    """A signed correction (``amount`` > 0 credits the team, < 0 debits it), with a reason."""

    team: str
    amount: Decimal
    by: str
    at: datetime
    reason: str
    key: str = field(default_factory=lambda: f"adjustment:{uuid.uuid4().hex}")

    def __post_init__(self) -> None:
        _nonempty(self.team, "team")
        _nonempty(self.by, "by")
        _nonempty(self.reason, "reason")
        _nonempty(self.key, "key")
        _when(self.at, "at")
        if require_money(self.amount, "adjustment amount") == ZERO:
            raise ValueError("an adjustment must not be zero")

    @property
    def delta(self) -> Decimal:
        return self.amount

    def describe(self) -> str:
        return f"adjustment {format_usd(self.amount)} by {self.by}: {self.reason}"


Entry = Union[Deposit, GpuCharge, StorageCharge, Adjustment]
