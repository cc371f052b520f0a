"""GPU billing: sacct-like records -> GPU charges with idempotency keys.

Proration rule (per attempt of a Slurm job; a requeued job's attempts are billed separately,
exactly as sacct reports each one):

* **Ended attempt** (``end`` is set, or the state is terminal): target = ``ceil(elapsed_s / 60)``
  started minutes. ``elapsed_s`` is Slurm's ElapsedRaw (it excludes suspended time); when it is
  None or negative, ``end - start`` is used; when that is unknown or negative too, 0.
  So 0 s costs nothing, 1 s costs one minute, 60 s one minute, 61 s two minutes.
* **Running attempt** (no end, started): target = ``floor((now - start) / 60)`` completed minutes;
  the partial minute is billed when the attempt ends. ``now`` before ``start`` (clock skew) -> 0.
* **Not started** (no start): 0.

Charge = minutes ``[billed, target)`` where ``billed`` is what the ledger already holds for the
attempt; nothing when ``target <= billed`` (a clock going backwards never refunds or re-bills).

Amount: with ``C(m) = to_micro(m * sum(count * hourly_rate) / 60)`` the charge for ``[a, b)`` is
``C(b) - C(a)``. The rounding telescopes, so the total billed for an attempt is ``C(target)``
however the minutes were split over ticks; every charge is exact to 1e-6 dollars.

Shards (``gres/shard``, a slice of a GPU) are billed like a GPU type named ``shard`` when the
record has ``shards`` > 0 and the rates price ``shard``.

CPU-only attempts (no GPU and no shard in the allocation, ``cpus`` > 0: AllocTRES ``cpu=N``) are
billed per core-hour: one line of type ``cpu`` (``rates.CPU``), count = cores, at
``Rates.cpu_hourly``, prorated by the minute exactly like GPUs. A GPU attempt's cores are part of
its GPU price and never billed on their own.

Times: ``start``/``end``/``now`` must all be timezone-aware or all naive (sacct prints naive local
times; the caller decides). Records are values with the attributes of :class:`SacctLike`.
"""
from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from .entries import GpuCharge, GpuLine
from .money import ZERO, to_micro
from .rates import CPU, Rates, RatesError

TERMINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "REQUEUED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT",
})
_MICROSECOND = timedelta(microseconds=1)
_MINUTE_US = 60_000_000

BilledMinutes = Callable[[str, int], int]
"""``billed(cluster_job_id, attempt) -> minutes already charged`` (e.g. ``store.billed_minutes``)."""


class BillingError(ValueError):
    """A record that cannot be billed (unknown GPU type, mixed naive/aware times...)."""


class SacctLike(Protocol):
    """The record fields billing reads (slurm_bridge's SacctRecord has these attributes)."""

    job_id: int | str
    attempt: int
    state: str
    start: datetime | None
    end: datetime | None
    elapsed_s: int | float | None
    gpus: Mapping[str, int]
    account: str


@dataclass(frozen=True)
class AttemptRecord:
    """A plain :class:`SacctLike` value, for tests, the benchmark and callers without a bridge."""

    job_id: int | str
    attempt: int
    state: str
    start: datetime | None
    end: datetime | None
    elapsed_s: int | float | None
    gpus: Mapping[str, int] = field(default_factory=dict)
    account: str = ""
    shards: int = 0
    cpus: int = 0


def allocation(record: SacctLike) -> Mapping[str, int]:
    """GPU type -> count billed for a record: ``gpus`` plus ``{"shard": n}`` when the record has
    a ``shards`` attribute > 0 (slurm_bridge keeps shards apart from GPUs). Shards need a
    ``shard`` rate like any GPU type. With neither, a record with a ``cpus`` attribute > 0 is a
    CPU-only attempt: ``{"cpu": cores}``."""
    shards = getattr(record, "shards", 0) or 0
    gpus = record.gpus or {}
    if shards:
        return {**gpus, "shard": shards}
    if any(gpus.values()):
        return gpus
    cpus = getattr(record, "cpus", 0) or 0
    if isinstance(cpus, int) and not isinstance(cpus, bool) and cpus > 0:
        return {CPU: cpus}
    return gpus


def _ceil_minutes(delta: timedelta) -> int:
    micros = delta // _MICROSECOND
    return max(0, -(-micros // _MINUTE_US))


def _floor_minutes(delta: timedelta) -> int:
    return max(0, (delta // _MICROSECOND) // _MINUTE_US)


def _is_ended(record: SacctLike) -> bool:
    state = (record.state or "").split(" ")[0].upper()
    return record.end is not None or state in TERMINAL_STATES


def target_minutes(record: SacctLike, now: datetime) -> int:
    """Minutes an attempt should have been charged for by ``now`` (the proration rule above)."""
    try:
        if _is_ended(record):
            elapsed = record.elapsed_s
            if isinstance(elapsed, int) and not isinstance(elapsed, bool) and elapsed >= 0:
                return -(-elapsed // 60)
            if isinstance(elapsed, float) and elapsed >= 0:  # NaN fails the comparison
                return _ceil_minutes(timedelta(seconds=elapsed))
            if record.start is not None and record.end is not None:
                return _ceil_minutes(record.end - record.start)
            return 0
        if record.start is None:
            return 0
        return _floor_minutes(now - record.start)
    except TypeError as exc:
        raise BillingError(
            f"job {record.job_id}: start/end/now must all be timezone-aware or all naive ({exc})"
        ) from None


def gpu_lines(gpus: Mapping[str, int], rates: Rates) -> tuple[GpuLine, ...]:
    """Priced lines for an allocation, sorted by type; types with count 0 are dropped."""
    try:
        return tuple(
            GpuLine(gpu_type, count, rates.gpu_rate(gpu_type))
            for gpu_type, count in sorted(gpus.items())
            if count
        )
    except RatesError as exc:
        raise BillingError(str(exc)) from None
    except ValueError as exc:
        raise BillingError(f"bad GPU allocation {dict(gpus)!r}: {exc}") from None


def cumulative_amount(minutes: int, lines: Iterable[GpuLine]) -> Decimal:
    """``C(m)``: the dollars for the first ``minutes`` of an attempt, rounded to micro-dollars."""
    per_hour = sum((line.count * line.hourly_rate for line in lines), ZERO)
    return to_micro(minutes * per_hour / 60)


def plan_attempt(
    record: SacctLike,
    billed: int,
    rates: Rates,
    now: datetime,
    team: str | None = None,
) -> GpuCharge | None:
    """The charge for one attempt given ``billed`` minutes already charged, or None."""
    if not any(allocation(record).values()):
        return None
    return _charge(record, billed, target_minutes(record, now), rates, team)


def _charge(record: SacctLike, billed: int, target: int, rates: Rates,
            team: str | None, lines_cache: dict | None = None) -> GpuCharge | None:
    gpus = allocation(record)
    if target <= billed or not any(gpus.values()):
        return None
    if lines_cache is None:
        lines = gpu_lines(gpus, rates)
    else:  # GpuLines are immutable: records with the same allocation share them
        key = tuple(sorted(gpus.items()))
        lines = lines_cache.get(key)
        if lines is None:
            lines = lines_cache[key] = gpu_lines(gpus, rates)
    try:
        return GpuCharge(
            team=team if team is not None else record.account,
            cluster_job_id=str(record.job_id),
            attempt=record.attempt,
            attempt_start=record.start,
            from_minute=billed,
            to_minute=target,
            gpus=lines,
            amount=cumulative_amount(target, lines) - cumulative_amount(billed, lines),
        )
    except ValueError as exc:
        raise BillingError(f"job {record.job_id}: {exc}") from None


def plan_gpu_charges(
    records: Iterable[SacctLike],
    billed: BilledMinutes,
    rates: Rates,
    now: datetime,
    *,
    team_of: Callable[[str], str | None] | None = None,
    errors: list[tuple[SacctLike, BillingError]] | None = None,
) -> list[GpuCharge]:
    """Plan one charge per attempt that has unbilled minutes.

    ``team_of(account)`` maps a Slurm account to the team to charge (default: the account name);
    returning None skips the record (not a Slipway account). When the same attempt appears more
    than once, the record with the most minutes wins. Records that cannot be billed raise
    :class:`BillingError`, or are appended to ``errors`` and skipped when a list is given.
    """
    gc_was_on = gc.isenabled()
    gc.disable()  # speed only: many records and charges; the cyclic collector finds no garbage
    try:
        return _plan(records, billed, rates, now, team_of, errors)
    finally:
        if gc_was_on:
            gc.enable()


def _plan(records, billed, rates, now, team_of, errors) -> list[GpuCharge]:
    best: dict[tuple[str, int], tuple[int, SacctLike, str]] = {}
    for record in records:
        team = team_of(record.account) if team_of is not None else record.account
        if team is None or not any(allocation(record).values()):
            continue
        try:
            target = target_minutes(record, now)
        except BillingError as exc:
            if errors is None:
                raise
            errors.append((record, exc))
            continue
        key = (str(record.job_id), record.attempt)
        if key not in best or target > best[key][0]:
            best[key] = (target, record, team)

    charges: list[GpuCharge] = []
    lines_cache: dict = {}
    for (job_id, attempt), (target, record, team) in best.items():
        try:
            charge = _charge(record, billed(job_id, attempt), target, rates, team, lines_cache)
        except BillingError as exc:
            if errors is None:
                raise
            errors.append((record, exc))
            continue
        if charge is not None:
            charges.append(charge)
    return charges
