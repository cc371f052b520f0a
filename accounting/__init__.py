"""Slipway accounting: money, rates, the ledger, GPU/storage billing and balance gates.

Plain Python (no Flask, no database, no subprocess): records come in as values, decisions and
ledger entries go out. The portal implements :class:`LedgerStore` with its database.
"""
from .biller import Biller, TickResult
from .billing import (
    AttemptRecord, BillingError, SacctLike, cumulative_amount, plan_attempt, plan_gpu_charges,
    target_minutes,
)
from .entries import Adjustment, Deposit, Entry, GpuCharge, GpuLine, StorageCharge
from .gates import (
    MIN_START_BALANCE, Decision, affordable_minutes, can_start, cut_off_message, format_balance,
    hold_message, must_cut_off, must_hold,
)
from .ledger import InMemoryLedgerStore, LedgerStore, balance
from .money import (
    CENT, MICRO, MoneyError, format_usd, parse_amount, parse_deposit, to_cents, to_micro,
)
from .rates import Rates, RatesError, UnknownGpuType
from .slurm_mirror import (
    MirrorError, grp_tres_billing_minutes, parse_tres_billing_weights, sacctmgr_limit,
)
from .storage import (
    BYTES_PER_GB, MINUTES_PER_MONTH, STORAGE_UNITS_PER_MICRO, StorageBilled, StorageSample,
    carried_amount, epoch_minute, plan_storage_charge, plan_storage_charges, storage_amount,
)

from types import ModuleType as _ModuleType

__all__ = sorted(
    name for name, value in globals().items()
    if not name.startswith("_") and not isinstance(value, _ModuleType)
)
