"""The ledger: entries, the balance rule and the store seam.

Rule: a team's balance is ``sum(entry.delta for entry in its entries)`` — there is no separate
balance column that could drift. A store may cache the sum, but only as a function of the
entries it accepted (the in-memory store does so under the same lock as the append).

:class:`LedgerStore` is the seam the portal implements with its database: a ``UNIQUE`` constraint
on ``key`` makes :meth:`~LedgerStore.append_if_absent` atomic (insert; on a duplicate-key error
return ``False``). :class:`InMemoryLedgerStore` is the thread-safe reference implementation used
by tests and the benchmark.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Protocol, runtime_checkable

from .entries import Adjustment, Deposit, Entry, GpuCharge, GpuLine, StorageCharge
from .money import ZERO
from .storage import StorageBilled

__all__ = [
    "Adjustment", "Deposit", "Entry", "GpuCharge", "GpuLine", "StorageCharge",
    "balance", "LedgerStore", "InMemoryLedgerStore",
]


def balance(entries: Iterable[Entry]) -> Decimal:
    """The balance of a set of entries: the exact Decimal sum of their deltas."""
    return sum((entry.delta for entry in entries), ZERO)


@runtime_checkable
class LedgerStore(Protocol):
    """Where entries live. Implementations must make ``append_if_absent`` atomic per key."""

    def append_if_absent(self, entry: Entry) -> bool:
        """Store ``entry`` unless an entry with the same ``key`` exists; True if it was stored.

        A second entry with an existing key is dropped even if its other fields differ (two
        billers that planned the same minutes at different times): the first one wins.
        """

    def entries(self, team: str) -> Sequence[Entry]:
        """The team's entries in the order they were accepted."""

    def billed_minutes(self, cluster_job_id: str, attempt: int) -> int:
        """Highest ``to_minute`` over the attempt's GPU charges; 0 when none."""

    def storage_billed_until(self, resource: str) -> int | None:
        """Highest ``to_minute_epoch`` over the resource's storage charges; None when none."""

    def storage_billed(self, resource: str) -> StorageBilled | None:
        """The resource's latest storage charge: its ``to_minute_epoch`` and ``carry``; None when
        none."""

    def balance(self, team: str) -> Decimal:
        """Sum of the team's entries' deltas."""


class InMemoryLedgerStore:
    """A thread-safe in-memory :class:`LedgerStore` (one lock; indexes updated with the append)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: set[str] = set()
        self._by_team: dict[str, list[Entry]] = {}
        self._balances: dict[str, Decimal] = {}
        self._gpu_billed: dict[tuple[str, int], int] = {}
        self._storage_billed: dict[str, StorageBilled] = {}

    def append_if_absent(self, entry: Entry) -> bool:
        with self._lock:
            if entry.key in self._keys:
                return False
            self._keys.add(entry.key)
            self._by_team.setdefault(entry.team, []).append(entry)
            self._balances[entry.team] = self._balances.get(entry.team, ZERO) + entry.delta
            if isinstance(entry, GpuCharge):
                job = (entry.cluster_job_id, entry.attempt)
                self._gpu_billed[job] = max(self._gpu_billed.get(job, 0), entry.to_minute)
            elif isinstance(entry, StorageCharge):
                previous = self._storage_billed.get(entry.resource)
                if previous is None or entry.to_minute_epoch > previous.until:
                    self._storage_billed[entry.resource] = StorageBilled(entry.to_minute_epoch,
                                                                         entry.carry)
            return True

    def entries(self, team: str) -> Sequence[Entry]:
        with self._lock:
            return tuple(self._by_team.get(team, ()))

    def all_entries(self) -> Sequence[Entry]:
        """Every entry of every team (tests and reports)."""
        with self._lock:
            return tuple(e for entries in self._by_team.values() for e in entries)

    def billed_minutes(self, cluster_job_id: str, attempt: int) -> int:
        with self._lock:
            return self._gpu_billed.get((str(cluster_job_id), attempt), 0)

    def storage_billed_until(self, resource: str) -> int | None:
        with self._lock:
            state = self._storage_billed.get(resource)
            return None if state is None else state.until

    def storage_billed(self, resource: str) -> StorageBilled | None:
        with self._lock:
            return self._storage_billed.get(resource)

    def balance(self, team: str) -> Decimal:
        with self._lock:
            return self._balances.get(team, ZERO)
