"""accounting.rates: loading and validating the price configuration."""
from decimal import Decimal

import pytest

from accounting.rates import Rates, RatesError, UnknownGpuType


def test_from_config():
    rates = Rates.from_config({"gpu_hourly": {"a4000": "1.20", "a6000": "2.5"}})
    assert rates.gpu_rate("a4000") == Decimal("1.20")
    assert rates.gpu_rate("a6000") == Decimal("2.500000")
    assert rates.storage_gb_month == Decimal("0.10")
    rates = Rates.from_config({"gpu_hourly": {"shard": 0}, "storage_gb_month": "0.2"})
    assert rates.gpu_rate("shard") == 0 and rates.storage_gb_month == Decimal("0.2")


def test_rates_are_immutable():
    source = {"a4000": Decimal("1")}
    rates = Rates(source)
    source["a4000"] = Decimal("99")
    assert rates.gpu_rate("a4000") == 1
    with pytest.raises(TypeError):
        rates.gpu_hourly["a4000"] = Decimal("2")  # type: ignore[index]


@pytest.mark.parametrize("config, words", [
    ({"gpu_hourly": {"a4000": 1.2}}, "float"),
    ({"gpu_hourly": {"a4000": "-1"}}, "negative"),
    ({"gpu_hourly": {"a4000": "NaN"}}, "plain amount"),
    ({"gpu_hourly": {"a4000": "0.0000001"}}, "6 decimal"),
    ({"gpu_hourly": {"A4000": "1"}}, "not a valid name"),
    ({"gpu_hourly": {"": "1"}}, "not a valid name"),
    ({"gpu_hourly": ["a4000"]}, "mapping"),
    ({}, "needs gpu_hourly"),
    ({"gpu_hourly": {}, "storage": "1"}, "unknown rates setting"),
    ({"gpu_hourly": {}, "storage_gb_month": "-0.1"}, "negative"),
    ("a4000=1", "must be a mapping"),
])
def test_invalid_config(config, words):
    with pytest.raises(RatesError, match=words):
        Rates.from_config(config)


def test_unknown_gpu_type_names_the_configured_ones():
    rates = Rates({"a4000": Decimal("1")})
    with pytest.raises(UnknownGpuType, match=r"'h100'.*a4000"):
        rates.gpu_rate("h100")
    assert isinstance(UnknownGpuType("x"), KeyError)
