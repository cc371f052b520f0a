"""accounting.slurm_mirror: balance -> GrpTRESMins=billing=N."""
from decimal import Decimal

import pytest

from accounting.rates import Rates
from accounting.slurm_mirror import (
    MirrorError, billing_units_per_gpu_minute, grp_tres_billing_minutes, parse_tres_billing_weights,
    sacctmgr_limit,
)

WEIGHTS = parse_tres_billing_weights('"CPU=1.0,GRES/gpu:a4000=10.0,GRES/gpu:a6000=20.0"')


def test_parse_weights():
    assert WEIGHTS == {"cpu": Decimal("1.0"), "gres/gpu:a4000": Decimal("10.0"), "gres/gpu:a6000": Decimal("20.0")}
    assert parse_tres_billing_weights("Mem=.25G, gres/shard=2")["mem"] == Decimal(".25")
    for bad in ["CPU", "CPU=x", "=1", "CPU=1,cpu=2", "CPU=-1"]:
        with pytest.raises(MirrorError):
            parse_tres_billing_weights(bad)


def test_units_per_gpu_minute():
    assert billing_units_per_gpu_minute("a4000", WEIGHTS) == 10
    assert billing_units_per_gpu_minute("a4000", WEIGHTS, cpus_per_gpu=2) == 12
    both = {"gres/gpu": Decimal(1), "gres/gpu:a4000": Decimal(10), "gres/shard": Decimal(3)}
    assert billing_units_per_gpu_minute("a4000", both) == 11
    assert billing_units_per_gpu_minute("shard", both) == 3


def test_proportional_rates_map_exactly():
    rates = Rates({"a4000": Decimal("1.20"), "a6000": Decimal("2.40")})
    # $12 buys 600 a4000-minutes = 6000 billing-minutes, or 300 a6000-minutes = 6000 too
    assert grp_tres_billing_minutes(Decimal("12"), rates, WEIGHTS) == 6000
    assert grp_tres_billing_minutes(Decimal("12"), rates, WEIGHTS, used_billing_minutes=500) == 6500


def test_non_proportional_rates_take_the_conservative_minimum():
    rates = Rates({"a4000": Decimal("1.20"), "a6000": Decimal("3.00")})
    # a4000: 12*60*10/1.2 = 6000; a6000: 12*60*20/3 = 4800 -> 4800
    assert grp_tres_billing_minutes(Decimal("12"), rates, WEIGHTS) == 4800


def test_empty_balance_allows_nothing_more():
    rates = Rates({"a4000": Decimal("1.20")})
    assert grp_tres_billing_minutes(Decimal("0"), rates, WEIGHTS, used_billing_minutes=77) == 77
    assert grp_tres_billing_minutes(Decimal("-5"), rates, WEIGHTS, used_billing_minutes=77) == 77
    assert grp_tres_billing_minutes(Decimal("0.001"), rates, WEIGHTS) == 0


def test_unenforceable_configurations():
    with pytest.raises(MirrorError, match="h100"):
        grp_tres_billing_minutes(Decimal("1"), Rates({"h100": Decimal("4")}), WEIGHTS)
    with pytest.raises(MirrorError, match="no priced"):
        grp_tres_billing_minutes(Decimal("1"), Rates({"a4000": Decimal("0")}, cpu_hourly="0"), WEIGHTS)


def test_cpu_only_cores_are_one_more_priced_type():
    # $1 at $0.02 per core-hour with CPU=1.0 buys 3000 core-minutes; a4000 is free here
    w = {**WEIGHTS, "cpu": Decimal("1.0")}
    assert grp_tres_billing_minutes(Decimal("1"), Rates({"a4000": Decimal("0")}, cpu_hourly="0.02"),
                                    w) == 3000
    # the tighter of the GPU and the core mirror holds
    assert grp_tres_billing_minutes(Decimal("1"), Rates({"a4000": Decimal("0.50")}, cpu_hourly="0.02"),
                                    w) == min(3000, int(Decimal(1) * 60 * (w["gres/gpu:a4000"] + w.get("gres/gpu", 0)) / Decimal("0.50")))
    assert sacctmgr_limit(4800) == "GrpTRESMins=billing=4800"
