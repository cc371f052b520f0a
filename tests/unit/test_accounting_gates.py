"""accounting.gates: the $1.00 start rule, the $0 cut-off, affordability."""
from decimal import Decimal

import pytest

from accounting.gates import affordable_minutes, can_start, cut_off_message, must_cut_off
from accounting.rates import Rates, UnknownGpuType

RATES = Rates({"a4000": Decimal("1.20"), "a6000": Decimal("2.50"), "shard": Decimal("0")})


def test_cannot_start_under_one_dollar_with_actionable_message():
    decision = can_start(Decimal("0.99"), "nlp")
    assert not decision.ok and not decision
    assert decision.message == ("Team nlp has $0.99; jobs need at least $1.00 to start. "
                                "Ask a team administrator to request funds: slipway team request-funds nlp 25.00")


@pytest.mark.parametrize("balance, ok", [
    ("1.00", True), ("1.000001", True), ("0.999999", False), ("0", False), ("-5", False), ("250", True),
])
def test_start_threshold(balance, ok):
    assert can_start(Decimal(balance), "nlp").ok is ok


def test_displayed_balance_never_overstates():
    assert "has $0.99;" in can_start(Decimal("0.999999"), "nlp").message
    assert "has -$0.01;" in can_start(Decimal("-0.000001"), "nlp").message
    assert can_start(Decimal("12.5"), "nlp").message == "Team nlp has $12.50."
    assert "request-funds TEAM" in can_start(Decimal("0")).message


@pytest.mark.parametrize("balance, cut", [("0", True), ("-0.000001", True), ("0.000001", False), ("1", False)])
def test_cut_off_at_zero(balance, cut):
    assert must_cut_off(Decimal(balance)) is cut


def test_cut_off_message():
    assert cut_off_message(Decimal("-0.3"), "nlp").startswith("Cancelled: team nlp has -$0.30.")


def test_affordable_minutes():
    assert affordable_minutes(Decimal("1.00"), "a6000", 1, RATES) == 24  # exact, not 23.999...
    assert affordable_minutes(Decimal("1.00"), "a4000", 2, RATES) == 25
    assert affordable_minutes(Decimal("0.01"), "a4000", 1, RATES) == 0
    assert affordable_minutes(Decimal("-3"), "a4000", 1, RATES) == 0
    assert affordable_minutes(Decimal("5"), "shard", 1, RATES) is None
    with pytest.raises(UnknownGpuType):
        affordable_minutes(Decimal("5"), "h100", 1, RATES)
    with pytest.raises(ValueError):
        affordable_minutes(Decimal("5"), "a4000", 0, RATES)


def test_gates_refuse_floats():
    with pytest.raises(ValueError):
        can_start(1.5, "nlp")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        must_cut_off(0.0)  # type: ignore[arg-type]
