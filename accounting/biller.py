"""The billing service: plan from records, append through the store, report teams to cut off.

Idempotency argument: a tick reads the watermark (``billed_minutes`` / ``storage_billed_until``)
from the store, plans charges starting exactly at it, and appends each with
``append_if_absent``. Keys are ``(job, attempt, from_minute)``, so

* a rerun (or a concurrent biller) that read the same watermark produces the same key and is
  refused: no minute is charged twice;
* a crash after k of n appends leaves watermarks that already cover the k stored charges; the
  next tick starts from them: no minute is skipped;
* a tick with an older ``now`` (clock went back) plans nothing for minutes already billed.

The tick holds no state between calls; everything it needs is in the store.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from .billing import BillingError, SacctLike, plan_gpu_charges
from .entries import Entry
from .gates import must_cut_off
from .ledger import LedgerStore
from .rates import Rates
from .storage import StorageSample, plan_storage_charges


@dataclass
class TickResult:
    """What a tick did. ``cut_off`` lists charged teams whose balance is now <= 0."""

    appended: list[Entry] = field(default_factory=list)
    duplicates: int = 0
    errors: list[tuple[SacctLike, BillingError]] = field(default_factory=list)
    cut_off: list[str] = field(default_factory=list)


class Biller:
    """Bills GPU and storage usage into a :class:`LedgerStore`. Safe to run repeatedly."""

    def __init__(
        self,
        store: LedgerStore,
        rates: Rates,
        team_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.store = store
        self.rates = rates
        self.team_of = team_of

    def tick(self, records: Iterable[SacctLike], now: datetime) -> TickResult:
        """Charge every attempt in ``records`` up to ``now``; bad records land in ``errors``."""
        result = TickResult()
        charges = plan_gpu_charges(
            records, self.store.billed_minutes, self.rates, now,
            team_of=self.team_of, errors=result.errors,
        )
        self._append(charges, result)
        return result

    def tick_storage(self, samples: Iterable[StorageSample], now: datetime) -> TickResult:
        """Charge every sampled resource from its watermark up to ``now``."""
        result = TickResult()
        charges = plan_storage_charges(samples, self.store.storage_billed, now, self.rates)
        self._append(charges, result)
        return result

    def _append(self, charges: Iterable[Entry], result: TickResult) -> None:
        teams: list[str] = []
        for charge in charges:
            if self.store.append_if_absent(charge):
                result.appended.append(charge)
                if charge.team not in teams:
                    teams.append(charge.team)
            else:
                result.duplicates += 1
        result.cut_off = [team for team in teams if must_cut_off(self.store.balance(team))]
