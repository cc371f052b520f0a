"""Money as :class:`decimal.Decimal` dollars.

Rules
-----
* Never a float. Every amount is a finite ``Decimal``; parsing refuses floats outright
  (``0.1 + 0.2`` is not money) and accepts only ``str``, ``int`` or ``Decimal`` input.
* Charges are kept exact to one micro-dollar (``1e-6``): :func:`to_micro` rounds half-even once,
  at the point a charge amount is made; balances are plain sums of entries and are not rounded.
* Display is to cents: :func:`format_usd` rounds half-even by default; balances shown next to a
  threshold use ``ROUND_FLOOR`` (see :mod:`accounting.gates`) so a display never overstates funds.
* Deposits are typed by people: ``"25.00"`` or ``"25"``; at most two decimals, positive, below
  :data:`MAX_DEPOSIT`. ``"1e3"``, ``"NaN"``, ``"+5"``, ``".5"``, ``"5,00"`` are refused with a
  message that says what to type instead.
"""
from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

ZERO = Decimal("0")
MICRO = Decimal("0.000001")
CENT = Decimal("0.01")
MAX_DEPOSIT = Decimal("1000000.00")

_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class MoneyError(ValueError):
    """An amount that is not acceptable as money; the message says why and what to type."""


def require_money(value: object, what: str = "amount") -> Decimal:
    """Return ``value`` if it is a finite Decimal (internal invariant check, not user parsing)."""
    if not isinstance(value, Decimal):
        raise MoneyError(f"{what} must be a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise MoneyError(f"{what} must be a finite number, got {value}")
    return value


def to_micro(amount: Decimal) -> Decimal:
    """Round an amount to whole micro-dollars (half-even): the precision every charge keeps."""
    return require_money(amount).quantize(MICRO, rounding=ROUND_HALF_EVEN)


def to_cents(amount: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """Round an amount to cents for display."""
    return require_money(amount).quantize(CENT, rounding=rounding)


def format_usd(amount: Decimal, rounding: str = ROUND_HALF_EVEN) -> str:
    """``Decimal("1234.5")`` -> ``"$1,234.50"``; negative amounts as ``"-$3.20"``."""
    cents = to_cents(amount, rounding)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"


def parse_amount(
    value: object,
    *,
    what: str = "amount",
    max_places: int = 2,
    allow_negative: bool = False,
    allow_zero: bool = False,
    maximum: Decimal | None = None,
) -> Decimal:
    """Parse a user- or config-supplied amount strictly; return it quantized to ``max_places``.

    Accepts ``str`` (``"25"``, ``"25.00"``, ``"-3.5"`` when negatives are allowed), ``int`` and
    finite ``Decimal``. Refuses floats, bools, NaN/Infinity, exponent notation, more than
    ``max_places`` significant decimals, negatives/zero unless allowed, and values over ``maximum``.
    """
    example = "25.00" if max_places >= 2 else "25"
    if isinstance(value, bool) or isinstance(value, float):
        raise MoneyError(
            f"{what} must be written as a string such as \"{example}\", not a "
            f"{type(value).__name__} ({value!r}); floats cannot represent cents exactly"
        )
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise MoneyError(f"{what} must be a number such as {example}, got {value}")
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not _PLAIN_NUMBER.fullmatch(text):
            raise MoneyError(
                f"{what} {value!r} is not a plain amount; write digits with an optional "
                f"decimal point, e.g. {example}"
            )
        number = Decimal(text)
    else:
        raise MoneyError(f"{what} must be a string such as \"{example}\", got {type(value).__name__}")

    number = number + ZERO  # turns -0 into 0
    if number < 0 and not allow_negative:
        raise MoneyError(f"{what} must not be negative, got {value}")
    if number == 0 and not allow_zero:
        raise MoneyError(f"{what} must be more than zero, got {value}")
    if maximum is not None and abs(number) > maximum:
        raise MoneyError(f"{what} {value} is over the limit of {format_usd(maximum)}")
    quantum = Decimal(1).scaleb(-max_places)
    try:
        quantized = number.quantize(quantum)
    except InvalidOperation:
        raise MoneyError(f"{what} {value} is too large") from None
    if quantized != number:
        raise MoneyError(f"{what} {value} has more than {max_places} decimal places")
    return quantized


def parse_deposit(value: object) -> Decimal:
    """Parse a deposit typed by an administrator: positive, at most 2 decimals, <= MAX_DEPOSIT."""
    return parse_amount(value, what="deposit", max_places=2, maximum=MAX_DEPOSIT)
