"""Storage billing: $ per GB-month, prorated by the minute.

Units (fixed): **1 GB = 10**9 bytes**; **1 month = 30 days = 43,200 minutes**. At the default
$0.10/GB-month, 1 GB for one minute costs 0.10 / 43,200 = $0.0000023148..., so a charge is
``to_micro(size_bytes / 10**9 * rate * minutes / 43_200)`` (exact Decimal, rounded half-even
to micro-dollars once per charge).

Sampling rule: the portal measures a resource's size at each storage tick; the size measured at
a tick is charged for the whole interval since the last billed minute (minutes are whole minutes
since the Unix epoch, UTC: ``[billed_until, floor(now))``). A resource never billed starts at the
minute it was created (``floor(created_at)``). Zero-byte resources still get a (zero) charge so
the watermark advances and a later, larger sample is not applied to the past. Tick storage about
hourly: each tick adds one entry per resource.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from .entries import StorageCharge
from .money import to_micro
from .rates import Rates

BYTES_PER_GB = 10**9
MINUTES_PER_MONTH = 30 * 24 * 60
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class StorageSample:
    """A resource's size measured at a tick. ``created_at`` bounds the first charge."""

    team: str
    resource: str
    size_bytes: int
    created_at: datetime


def epoch_minute(when: datetime) -> int:
    """Whole minutes since 1970-01-01T00:00Z (floor); ``when`` must be timezone-aware."""
    if when.tzinfo is None:
        raise ValueError("storage times must be timezone-aware")
    return (when - _EPOCH) // timedelta(minutes=1)


def storage_amount(size_bytes: int, minutes: int, rate_gb_month: Decimal) -> Decimal:
    """Dollars for ``size_bytes`` stored ``minutes`` at ``rate_gb_month`` (micro-dollar exact)."""
    gb = Decimal(size_bytes).scaleb(-9)
    return to_micro(gb * rate_gb_month * minutes / MINUTES_PER_MONTH)


def plan_storage_charge(
    sample: StorageSample,
    billed_until: int | None,
    now: datetime,
    rates: Rates,
) -> StorageCharge | None:
    """The charge for ``sample.resource`` from its watermark up to ``floor(now)``, or None."""
    start = billed_until if billed_until is not None else epoch_minute(sample.created_at)
    end = epoch_minute(now)
    if end <= start:
        return None
    return StorageCharge(
        team=sample.team,
        resource=sample.resource,
        size_bytes=sample.size_bytes,
        from_minute_epoch=start,
        to_minute_epoch=end,
        rate_gb_month=rates.storage_gb_month,
        amount=storage_amount(sample.size_bytes, end - start, rates.storage_gb_month),
    )


def plan_storage_charges(
    samples: Iterable[StorageSample],
    billed_until: Callable[[str], int | None],
    now: datetime,
    rates: Rates,
) -> list[StorageCharge]:
    """One charge per sampled resource with unbilled minutes; ``billed_until`` is e.g.
    ``store.storage_billed_until``."""
    charges = []
    for sample in samples:
        charge = plan_storage_charge(sample, billed_until(sample.resource), now, rates)
        if charge is not None:
            charges.append(charge)
    return charges
