"""accounting.money: strict parsing, micro-dollar charges, cent display."""
from decimal import Decimal

import pytest

from accounting.money import (
    MoneyError, format_usd, parse_amount, parse_deposit, require_money, to_cents, to_micro,
)


@pytest.mark.parametrize("text, expected", [
    ("25.00", Decimal("25.00")), ("25", Decimal("25.00")), (" 7.5 ", Decimal("7.50")),
    ("0.01", Decimal("0.01")), ("25.000", Decimal("25.00")), (25, Decimal("25.00")),
    (Decimal("3.10"), Decimal("3.10")), ("1000000", Decimal("1000000.00")),
])
def test_parse_deposit_accepts_plain_amounts(text, expected):
    value = parse_deposit(text)
    assert value == expected and value.as_tuple().exponent == -2


@pytest.mark.parametrize("value, words", [
    (25.0, "float"), (0.1, "float"), (True, "bool"), ("NaN", "not a plain amount"),
    ("Infinity", "not a plain amount"), (Decimal("NaN"), "number"), (Decimal("-Infinity"), "number"),
    ("1e3", "not a plain amount"), ("+5", "not a plain amount"), (".5", "not a plain amount"),
    ("5.", "not a plain amount"), ("5,00", "not a plain amount"), ("$5", "not a plain amount"),
    ("", "not a plain amount"), ("25.001", "more than 2 decimal places"),
    ("-5.00", "must not be negative"), ("0", "more than zero"), ("0.00", "more than zero"),
    ("-0", "more than zero"), ("1000000.01", "over the limit"), (None, "NoneType"),
    ("٣", "not a plain amount"),  # non-ASCII digits are not money
])
def test_parse_deposit_rejects_with_clear_message(value, words):
    with pytest.raises(MoneyError, match=words):
        parse_deposit(value)


def test_float_message_says_what_to_type():
    with pytest.raises(MoneyError, match='"25.00"'):
        parse_deposit(25.5)


def test_parse_amount_options():
    assert parse_amount("-3.5", allow_negative=True) == Decimal("-3.50")
    assert parse_amount("0", allow_zero=True) == 0
    assert parse_amount("1.234567", max_places=6) == Decimal("1.234567")
    with pytest.raises(MoneyError, match="more than 6"):
        parse_amount("1.2345678", max_places=6)
    with pytest.raises(MoneyError, match="too large"):
        parse_amount("9" * 40)


def test_to_micro_rounds_half_even_and_to_cents():
    assert to_micro(Decimal("0.0000005")) == Decimal("0.000000")
    assert to_micro(Decimal("0.0000015")) == Decimal("0.000002")
    assert to_micro(Decimal("2.5") / 60) == Decimal("0.041667")
    assert to_cents(Decimal("0.125")) == Decimal("0.12")


def test_require_money_refuses_floats():
    with pytest.raises(MoneyError):
        to_micro(0.5)  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        require_money(Decimal("NaN"))


@pytest.mark.parametrize("amount, shown", [
    (Decimal("1234.5"), "$1,234.50"), (Decimal("0"), "$0.00"), (Decimal("-3.2"), "-$3.20"),
    (Decimal("0.004"), "$0.00"), (Decimal("-0.004"), "$0.00"),
])
def test_format_usd(amount, shown):
    assert format_usd(amount) == shown
