"""accounting.storage: $/GB-month prorated by the minute (GB = 1e9 bytes, month = 30 days)."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from accounting.biller import Biller
from accounting.ledger import InMemoryLedgerStore
from accounting.rates import Rates
from accounting.storage import (
    MINUTES_PER_MONTH, StorageSample, epoch_minute, plan_storage_charge, storage_amount,
)

RATES = Rates({"a4000": Decimal("1")})
CREATED = datetime(2024, 5, 1, 12, 0, 30, tzinfo=timezone.utc)


def sample(size=10**9, resource="repo:nlp/proj"):
    return StorageSample("nlp", resource, size, CREATED)


def test_units():
    assert MINUTES_PER_MONTH == 43_200
    assert storage_amount(10**9, MINUTES_PER_MONTH, Decimal("0.10")) == Decimal("0.10")
    assert storage_amount(10**9, 1, Decimal("0.10")) == Decimal("0.000002")  # 2.3148e-6 rounded
    assert storage_amount(250 * 10**9, 60, Decimal("0.10")) == Decimal("0.034722")
    assert storage_amount(0, 60, Decimal("0.10")) == 0
    assert storage_amount(1, 43_200, Decimal("0.10")) == 0  # one byte for a month


def test_epoch_minute():
    assert epoch_minute(datetime(1970, 1, 1, 0, 1, 59, tzinfo=timezone.utc)) == 1
    assert epoch_minute(datetime(1969, 12, 31, 23, 59, 30, tzinfo=timezone.utc)) == -1
    with pytest.raises(ValueError, match="timezone-aware"):
        epoch_minute(datetime(2024, 1, 1))


def test_first_charge_starts_at_creation_minute_then_follows_watermark():
    first = plan_storage_charge(sample(), None, CREATED + timedelta(minutes=90), RATES)
    assert first.from_minute_epoch == epoch_minute(CREATED)
    assert first.minutes == 90 and first.key == f"storage:repo:nlp/proj:{epoch_minute(CREATED)}"
    assert first.amount == storage_amount(10**9, 90, Decimal("0.10"))
    nxt = plan_storage_charge(sample(2 * 10**9), first.to_minute_epoch, CREATED + timedelta(minutes=150), RATES)
    assert (nxt.from_minute_epoch, nxt.minutes, nxt.size_bytes) == (first.to_minute_epoch, 60, 2 * 10**9)
    # same minute, or a clock gone backwards: nothing
    assert plan_storage_charge(sample(), first.to_minute_epoch, CREATED + timedelta(minutes=90, seconds=20), RATES) is None
    assert plan_storage_charge(sample(), first.to_minute_epoch, CREATED, RATES) is None


def test_empty_resource_still_advances_the_watermark():
    charge = plan_storage_charge(sample(0), None, CREATED + timedelta(hours=1), RATES)
    assert charge is not None and charge.amount == 0


def test_biller_storage_ticks_are_idempotent_and_sum_to_the_month():
    store = InMemoryLedgerStore()
    biller = Biller(store, RATES)
    samples = [sample(), sample(5 * 10**9, "dataset:nlp/wiki@1")]
    for hour in [1, 3, 2, 3, 720]:  # out of order and repeated
        biller.tick_storage(samples, CREATED + timedelta(hours=hour))
    charges = store.entries("nlp")
    assert sum(c.minutes for c in charges if c.resource == "repo:nlp/proj") == MINUTES_PER_MONTH
    # 1 GB + 5 GB for a month at $0.10: $0.60, within rounding of one micro-dollar per charge
    assert abs(-store.balance("nlp") - Decimal("0.60")) <= Decimal("0.000001") * len(charges)
    assert biller.tick_storage(samples, CREATED + timedelta(hours=720)).appended == []
