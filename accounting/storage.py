"""Storage billing: $ per GB-month, prorated by the minute.

Units (fixed): **1 GB = 10**9 bytes**; **1 month = 30 days = 43,200 minutes**. At the default
$0.10/GB-month, 1 GB for one minute costs 0.10 / 43,200 = $0.0000023148..., so a charge is
``to_micro(size_bytes / 10**9 * rate * minutes / 43_200)`` (exact Decimal, rounded half-even
to micro-dollars) for one isolated charge.

Rounding across ticks (the remainder is carried, never dropped): each charge records ``carry``,
what was left after rounding it to micro-dollars, as an integer in units of
``1 / STORAGE_UNITS_PER_MICRO`` micro-dollar (one byte-minute at $0.000001/GB-month). A charge
bills ``round(exact + carry_in)`` and passes the new remainder on, so the sum of a resource's
charges is always within half a micro-dollar of the exact total, however the minutes were split
over ticks (a 10 MB repository ticked every 10 minutes is billed, not $0 forever).

Sampling rule: the portal measures a resource's size at each storage tick; the size measured at
a tick is charged for the whole interval since the last billed minute (minutes are whole minutes
since the Unix epoch, UTC: ``[billed_until, floor(now))``). A resource never billed starts at the
minute it was created (``floor(created_at)``); a resource whose watermark is older than its
``created_at`` (a project deleted and created again under the same name) starts at its creation
minute with no carry, so the time it did not exist is never billed. Zero-byte resources still get a (zero) charge so
the watermark advances and a later, larger sample is not applied to the past. Tick storage about
hourly: each tick adds one entry per resource.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from .entries import StorageCharge
from .money import MICRO, to_micro
from .rates import Rates

BYTES_PER_GB = 10**9
MINUTES_PER_MONTH = 30 * 24 * 60
STORAGE_UNITS_PER_MICRO = BYTES_PER_GB * MINUTES_PER_MONTH
"""``bytes * minutes * rate_in_micro_dollars / STORAGE_UNITS_PER_MICRO`` = micro-dollars."""
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class StorageSample:
    """A resource's size measured at a tick. ``created_at`` bounds the first charge."""

    team: str
    resource: str
    size_bytes: int
    created_at: datetime


@dataclass(frozen=True)
class StorageBilled:
    """Where a resource's billing stands: the last billed minute (epoch) and the remainder
    carried by its last charge (see the module doc)."""

    until: int
    carry: int = 0


def epoch_minute(when: datetime) -> int:
    """Whole minutes since 1970-01-01T00:00Z (floor); ``when`` must be timezone-aware."""
    if when.tzinfo is None:
        raise ValueError("storage times must be timezone-aware")
    return (when - _EPOCH) // timedelta(minutes=1)


def storage_amount(size_bytes: int, minutes: int, rate_gb_month: Decimal) -> Decimal:
    """Dollars for ``size_bytes`` stored ``minutes`` at ``rate_gb_month`` (micro-dollar exact)."""
    gb = Decimal(size_bytes).scaleb(-9)
    return to_micro(gb * rate_gb_month * minutes / MINUTES_PER_MONTH)


def rate_micros(rate_gb_month: Decimal) -> int:
    """A storage rate (at most 6 decimals, see accounting.rates) as integer micro-dollars."""
    micros = rate_gb_month * 1_000_000
    if micros != micros.to_integral_value():
        raise ValueError(f"storage rate {rate_gb_month} has more than 6 decimals")
    return int(micros)


def carried_amount(size_bytes: int, minutes: int, rate_gb_month: Decimal,
                   carry: int = 0) -> tuple[Decimal, int]:
    """``(amount, carry_out)``: the exact cost of ``size_bytes`` for ``minutes`` plus the
    ``carry`` left by the previous charge, rounded half-even to micro-dollars, and what is left.

    Integer arithmetic throughout: ``units = size * minutes * rate_micros + carry``;
    ``micros = round(units / STORAGE_UNITS_PER_MICRO)``; ``carry_out = units - micros * U``, so
    ``|carry_out| <= U / 2`` and a charge is never negative.
    """
    units = size_bytes * minutes * rate_micros(rate_gb_month) + carry
    micros, rest = divmod(units, STORAGE_UNITS_PER_MICRO)
    twice = 2 * rest
    if twice > STORAGE_UNITS_PER_MICRO or (twice == STORAGE_UNITS_PER_MICRO and micros % 2):
        micros += 1
    carry_out = units - micros * STORAGE_UNITS_PER_MICRO
    return (Decimal(micros) * MICRO), carry_out


def _billed(value: StorageBilled | int | None) -> StorageBilled | None:
    if value is None or isinstance(value, StorageBilled):
        return value
    return StorageBilled(until=int(value))


def plan_storage_charge(
    sample: StorageSample,
    billed: StorageBilled | int | None,
    now: datetime,
    rates: Rates,
) -> StorageCharge | None:
    """The charge for ``sample.resource`` from its watermark up to ``floor(now)``, or None.

    ``billed`` is the store's :class:`StorageBilled` (a bare watermark int means no carry);
    None: never billed. The start is ``max(watermark, floor(created_at))``: a watermark left by
    an earlier resource of the same name (deleted, then created again) is not inherited, nor is
    its carry.
    """
    state = _billed(billed)
    created = epoch_minute(sample.created_at)
    if state is None or state.until < created:
        start, carry = created, 0
    else:
        start, carry = state.until, state.carry
    end = epoch_minute(now)
    if end <= start:
        return None
    amount, carry_out = carried_amount(sample.size_bytes, end - start, rates.storage_gb_month, carry)
    return StorageCharge(
        team=sample.team,
        resource=sample.resource,
        size_bytes=sample.size_bytes,
        from_minute_epoch=start,
        to_minute_epoch=end,
        rate_gb_month=rates.storage_gb_month,
        amount=amount,
        carry=carry_out,
    )


def plan_storage_charges(
    samples: Iterable[StorageSample],
    billed: Callable[[str], StorageBilled | int | None],
    now: datetime,
    rates: Rates,
) -> list[StorageCharge]:
    """One charge per sampled resource with unbilled minutes; ``billed`` is e.g.
    ``store.storage_billed`` (or ``store.storage_billed_until``: no carry)."""
    charges = []
    for sample in samples:
        charge = plan_storage_charge(sample, billed(sample.resource), now, rates)
        if charge is not None:
            charges.append(charge)
    return charges
