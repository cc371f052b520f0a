"""accounting.storage: $/GB-month prorated by the minute (GB = 1e9 bytes, month = 30 days)."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from accounting.biller import Biller
from accounting.entries import StorageCharge
from accounting.ledger import InMemoryLedgerStore
from accounting.rates import Rates
from accounting.storage import (
    MINUTES_PER_MONTH, STORAGE_UNITS_PER_MICRO, StorageBilled, StorageSample, carried_amount,
    epoch_minute, plan_storage_charge, plan_storage_charges, storage_amount,
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


# ------------------------------------------------------------ the remainder is carried, never lost


def exact_micros(pieces, rate=Decimal("0.10")) -> Decimal:
    """The exact (unrounded) cost in micro-dollars of (size_bytes, minutes) pieces."""
    return sum((Decimal(size) * minutes * rate * 10**6 / STORAGE_UNITS_PER_MICRO
                for size, minutes in pieces), Decimal(0))


def bill_ticks(store, biller, sizes_at, minutes_list, resource="repo:nlp/proj"):
    """Tick at CREATED + the running sum of ``minutes_list``, sampling ``sizes_at(i)``."""
    t = CREATED
    for i, minutes in enumerate(minutes_list):
        t += timedelta(minutes=minutes)
        biller.tick_storage([StorageSample("nlp", resource, sizes_at(i), CREATED)], t)
    return [e for e in store.entries("nlp") if e.resource == resource]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * 10**12), st.integers(1, 2000)), min_size=1, max_size=40),
       st.sampled_from([Decimal("0.10"), Decimal("0.000001"), Decimal("0.123457"), Decimal("7")]))
def test_any_split_of_ticks_sums_to_the_exact_total_within_a_micro_dollar(pieces, rate):
    """Sizes change between ticks and ticks fall anywhere: the charges always add up to the exact
    cost of what was stored, within one micro-dollar (half of one, in fact)."""
    store = InMemoryLedgerStore()
    biller = Biller(store, Rates({"a4000": Decimal("1")}, storage_gb_month=rate))
    charges = bill_ticks(store, biller, lambda i: pieces[i][0], [m for _, m in pieces])
    assert [c.minutes for c in charges] == [m for _, m in pieces]
    billed = sum(c.amount for c in charges) * 10**6
    assert abs(billed - exact_micros([(c.size_bytes, c.minutes) for c in charges], rate)) <= Decimal("0.5")
    assert all(c.amount >= 0 and 2 * abs(c.carry) <= STORAGE_UNITS_PER_MICRO for c in charges)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**12), st.lists(st.integers(1, 3000), min_size=1, max_size=30))
def test_one_size_costs_the_same_however_the_minutes_are_split(size, splits):
    store = InMemoryLedgerStore()
    charges = bill_ticks(store, Biller(store, RATES), lambda i: size, splits)
    whole, _ = carried_amount(size, sum(splits), Decimal("0.10"))
    assert abs(sum(c.amount for c in charges) - whole) <= Decimal("0.000001")


def test_small_repositories_are_billed_and_100_mb_is_not_under_billed():
    # 10 MB ticked every 10 minutes for a month: each tick is $0.0000002 (rounds to 0 alone)
    for size in (10 * 10**6, 100 * 10**6):
        store = InMemoryLedgerStore()
        charges = bill_ticks(store, Biller(store, RATES), lambda i: size, [10] * (MINUTES_PER_MONTH // 10))
        month = Decimal(size) / 10**9 * Decimal("0.10")  # $0.001 and $0.01
        assert abs(sum(c.amount for c in charges) - month) <= Decimal("0.000001"), size


def test_carry_is_exact_integer_rounding_half_even():
    u = STORAGE_UNITS_PER_MICRO
    # 1 GB for 1 minute at $0.10: 10**9 * 1 * 100000 units = 2.3148... micro-dollars
    assert carried_amount(10**9, 1, Decimal("0.10")) == (Decimal("0.000002"), 10**14 - 2 * u)
    half = u // 2  # exactly half a micro-dollar carried in, nothing new: rounds to even (0)
    assert carried_amount(0, 5, Decimal("0.10"), half) == (Decimal(0), half)
    assert carried_amount(0, 5, Decimal("0.10"), half + 1)[0] == Decimal("0.000001")
    with pytest.raises(ValueError, match="carry"):
        StorageCharge(team="t", resource="r", size_bytes=1, from_minute_epoch=0, to_minute_epoch=1,
                      rate_gb_month=Decimal("0.1"), amount=Decimal(0), carry=u)


def test_recreated_resource_does_not_inherit_the_old_watermark_or_carry():
    """A project deleted and created again under the same name: its first charge starts when the
    new one was created, not where the old one's billing stopped."""
    old_until = epoch_minute(CREATED) + 60
    recreated = StorageSample("nlp", "repo:nlp/proj", 10**9, CREATED + timedelta(days=3))
    charge = plan_storage_charge(recreated, StorageBilled(old_until, carry=10**13),
                                 CREATED + timedelta(days=3, minutes=30), RATES)
    assert charge.from_minute_epoch == epoch_minute(recreated.created_at) and charge.minutes == 30
    assert (charge.amount, charge.carry) == carried_amount(10**9, 30, Decimal("0.10"))
    # the same resource billed continuously keeps its watermark and carry
    same = plan_storage_charge(sample(), StorageBilled(old_until, carry=10**13),
                               CREATED + timedelta(minutes=90), RATES)
    assert same.from_minute_epoch == old_until
    assert (same.amount, same.carry) == carried_amount(10**9, same.minutes, Decimal("0.10"), 10**13)
    # a bare int watermark (no carry) is still accepted
    assert plan_storage_charges([sample()], lambda r: old_until, CREATED + timedelta(minutes=90),
                                RATES)[0].from_minute_epoch == old_until


def test_in_memory_store_reports_watermark_and_carry():
    store = InMemoryLedgerStore()
    biller = Biller(store, RATES)
    assert store.storage_billed("repo:nlp/proj") is None
    biller.tick_storage([sample()], CREATED + timedelta(minutes=7))
    (charge,) = store.entries("nlp")
    assert store.storage_billed("repo:nlp/proj") == StorageBilled(charge.to_minute_epoch, charge.carry)
    assert charge.carry != 0  # 7 GB-minutes is not a whole number of micro-dollars
