"""Balance gates: the $1.00 start rule and the $0 cut-off rule.

* A job may start only when the team's balance is at least :data:`MIN_START_BALANCE` ($1.00).
* When the balance is <= $0, every running job of the team must be cancelled (files still pushed).
* A job already waiting in the queue when the balance drops under $1.00 (a pending or requeued
  job) is held (:func:`must_hold`) and released once the balance is back at $1.00 or more.

Balances shown in these messages are rounded *down* to the cent, so a team with $0.999999 reads
"$0.99" next to "at least $1.00" and the message never contradicts the decision.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from .money import ZERO, format_usd, require_money
from .rates import Rates

MIN_START_BALANCE = Decimal("1.00")


@dataclass(frozen=True)
class Decision:
    """``ok`` plus a message a user can act on. Truthy when ``ok``."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok


def format_balance(balance: Decimal) -> str:
    """A balance for display next to a threshold: floor to the cent."""
    return format_usd(balance, rounding=ROUND_FLOOR)


def can_start(balance: Decimal, team: str | None = None, *,
              minimum: Decimal = MIN_START_BALANCE) -> Decision:
    """May a job of ``team`` start with ``balance``? (balance >= $1.00)."""
    require_money(balance, "balance")
    who = f"Team {team}" if team else "The team"
    shown = format_balance(balance)
    if balance >= minimum:
        return Decision(True, f"{who} has {shown}.")
    how = (f"slipway team request-funds {team} 25.00" if team
           else "slipway team request-funds TEAM 25.00")
    return Decision(
        False,
        f"{who} has {shown}; jobs need at least {format_usd(minimum)} to start. "
        f"Ask a team administrator to request funds: {how}",
    )


def must_hold(balance: Decimal, *, minimum: Decimal = MIN_START_BALANCE) -> bool:
    """True when the team's waiting jobs must be held: they could not start now (balance < $1)."""
    return require_money(balance, "balance") < minimum


def hold_message(balance: Decimal, team: str, *, minimum: Decimal = MIN_START_BALANCE) -> str:
    """The reason shown on a waiting job held by the $1.00 rule."""
    return (f"held: balance {format_balance(balance)} is under {format_usd(minimum)} — request funds "
            f"(slipway team request-funds {team} 25.00); the job is released when team {team} has "
            f"{format_usd(minimum)} again")


def must_cut_off(balance: Decimal) -> bool:
    """True when every running job of the team must be cancelled (balance <= $0)."""
    return require_money(balance, "balance") <= ZERO


def cut_off_message(balance: Decimal, team: str) -> str:
    """The reason shown on jobs cancelled by the $0 rule."""
    return (f"Cancelled: team {team} has {format_balance(balance)}. Results are pushed back; "
            f"ask a team administrator to request funds: slipway team request-funds {team} 25.00")


def affordable_minutes(balance: Decimal, gpu_type: str, count: int, rates: Rates) -> int | None:
    """Whole minutes ``count`` GPUs of ``gpu_type`` can run before the balance reaches $0.

    An estimate for the UI (ignores other running jobs and storage). None when the type is free.
    Raises :class:`~accounting.rates.UnknownGpuType` for an unpriced type.
    """
    require_money(balance, "balance")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"GPU count must be a positive int, got {count!r}")
    per_hour = count * rates.gpu_rate(gpu_type)
    if per_hour == 0:
        return None
    if balance <= 0:
        return 0
    return int((balance * 60) // per_hour)  # exact: no rounded per-minute rate in between
