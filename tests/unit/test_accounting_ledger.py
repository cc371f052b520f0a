"""accounting.entries / accounting.ledger: entry kinds, keys, balance rule, in-memory store."""
import threading
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from accounting.ledger import (
    Adjustment, Deposit, GpuCharge, GpuLine, InMemoryLedgerStore, LedgerStore, StorageCharge,
    balance,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def gpu(job="42", attempt=0, a=0, b=2, amount="0.08", team="nlp"):
    return GpuCharge(team=team, cluster_job_id=job, attempt=attempt, attempt_start=NOW,
                     from_minute=a, to_minute=b, gpus=(GpuLine("a4000", 2, Decimal("1.20")),),
                     amount=Decimal(amount))


def storage(a=100, b=160, team="nlp"):
    return StorageCharge(team=team, resource="repo:nlp/proj", size_bytes=10**9, from_minute_epoch=a,
                         to_minute_epoch=b, rate_gb_month=Decimal("0.10"), amount=Decimal("0.000139"))


def test_keys_say_what_the_entry_is_for():
    assert gpu().key == "gpu:42:0:0"
    assert gpu(attempt=1, a=5, b=9).key == "gpu:42:1:5"
    assert storage().key == "storage:repo:nlp/proj:100"
    assert Deposit(team="nlp", amount=Decimal("1"), by="ann", at=NOW).key.startswith("deposit:")
    assert Deposit(team="nlp", amount=Decimal("1"), by="ann", at=NOW, key="deposit:req-1").key == "deposit:req-1"


def test_entry_details():
    charge = gpu()
    assert (charge.minutes, charge.gpu_type, charge.gpu_count, charge.delta) == (2, "a4000", 2, Decimal("-0.08"))
    assert "minutes 0-2" in charge.describe() and "2x a4000 @ $1.20/h" in charge.describe()
    mixed = GpuCharge(team="t", cluster_job_id="1", attempt=0, attempt_start=None, from_minute=0,
                      to_minute=1, gpus=(GpuLine("a4000", 1, Decimal(1)), GpuLine("a6000", 2, Decimal(2))),
                      amount=Decimal("0.083333"))
    assert (mixed.gpu_type, mixed.gpu_count) == ("a4000+a6000", 3)
    s = storage()
    assert s.gb == 1 and s.minutes == 60 and s.start == datetime(1970, 1, 1, 1, 40, tzinfo=timezone.utc)
    assert "1 GB for 60 min" in s.describe()
    dep = Deposit(team="nlp", amount=Decimal("25.00"), by="ann", at=NOW, note="grant")
    assert dep.delta == Decimal("25.00") and dep.describe() == "deposit $25.00 by ann: grant"
    adj = Adjustment(team="nlp", amount=Decimal("-1.5"), by="root", at=NOW, reason="correction")
    assert adj.delta == Decimal("-1.5")


@pytest.mark.parametrize("make", [
    lambda: Deposit(team="nlp", amount=Decimal("0"), by="a", at=NOW),
    lambda: Deposit(team="nlp", amount=Decimal("-1"), by="a", at=NOW),
    lambda: Deposit(team="nlp", amount=1.0, by="a", at=NOW),
    lambda: Deposit(team="nlp", amount=Decimal("1"), by="a", at=datetime(2024, 1, 1)),
    lambda: Deposit(team="", amount=Decimal("1"), by="a", at=NOW),
    lambda: Deposit(team="nlp", amount=Decimal("1"), by="", at=NOW),
    lambda: gpu(a=3, b=3),
    lambda: gpu(a=-1, b=3),
    lambda: gpu(amount="-0.01"),
    lambda: gpu(job=""),
    lambda: GpuLine("a4000", 0, Decimal(1)),
    lambda: GpuLine("a4000", True, Decimal(1)),
    lambda: storage(a=5, b=5),
    lambda: Adjustment(team="nlp", amount=Decimal(0), by="a", at=NOW, reason="x"),
    lambda: Adjustment(team="nlp", amount=Decimal(1), by="a", at=NOW, reason=""),
])
def test_invalid_entries_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_balance_is_the_sum_of_entries():
    entries = [Deposit(team="nlp", amount=Decimal("25.00"), by="a", at=NOW), gpu(),
               storage(), Adjustment(team="nlp", amount=Decimal("0.5"), by="a", at=NOW, reason="r")]
    assert balance(entries) == Decimal("25.00") - Decimal("0.08") - Decimal("0.000139") + Decimal("0.5")
    assert balance([]) == 0 and isinstance(balance([]), Decimal)


def test_in_memory_store_append_if_absent_and_indexes():
    store = InMemoryLedgerStore()
    assert isinstance(store, LedgerStore)
    assert store.billed_minutes("42", 0) == 0 and store.storage_billed_until("repo:nlp/proj") is None
    assert store.append_if_absent(gpu(a=0, b=2))
    assert not store.append_if_absent(gpu(a=0, b=5, amount="0.2"))  # same key: first wins
    assert store.append_if_absent(gpu(a=2, b=4))
    assert store.append_if_absent(gpu(attempt=1, a=0, b=1, amount="0.04"))
    assert store.append_if_absent(storage())
    assert store.billed_minutes("42", 0) == 4 and store.billed_minutes(42, 1) == 1
    assert store.storage_billed_until("repo:nlp/proj") == 160
    assert store.balance("nlp") == balance(store.entries("nlp")) == Decimal("-0.200139")
    assert store.entries("other") == () and store.balance("other") == 0
    assert len(store.all_entries()) == 4


def test_parallel_writers_never_lose_an_update():
    """Threads deposit and charge concurrently (with deliberately colliding keys)."""
    store = InMemoryLedgerStore()
    threads_n, per_thread = 8, 250
    barrier = threading.Barrier(threads_n)

    def work(tid: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            store.append_if_absent(Deposit(team="nlp", amount=Decimal("1.00"), by=f"t{tid}", at=NOW,
                                           key=f"deposit:{tid}:{i}"))
            # every thread tries to charge the same minute i of job 7: exactly one wins
            store.append_if_absent(gpu(job="7", a=i, b=i + 1, amount="0.01"))
            store.append_if_absent(gpu(job=f"t{tid}", a=i, b=i + 1, amount="0.001"))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = store.entries("nlp")
    assert len(entries) == threads_n * per_thread * 2 + per_thread
    assert len({e.key for e in entries}) == len(entries)
    expected = threads_n * per_thread * (Decimal("1.00") - Decimal("0.001")) - per_thread * Decimal("0.01")
    assert store.balance("nlp") == balance(entries) == expected
    assert store.billed_minutes("7", 0) == per_thread
