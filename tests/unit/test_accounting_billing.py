"""accounting.billing: the proration rule and charge planning."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from accounting.billing import (
    AttemptRecord, BillingError, cumulative_amount, plan_attempt, plan_gpu_charges, target_minutes,
)
from accounting.entries import GpuLine
from accounting.rates import Rates

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
RATES = Rates({"a4000": Decimal("1.20"), "a6000": Decimal("2.50"), "free": Decimal("0")})


def ended(seconds, gpus=None, job=42, attempt=0, elapsed="same", state="COMPLETED", start=T0):
    end = None if start is None else start + timedelta(seconds=seconds)
    return AttemptRecord(job, attempt, state, start, end,
                         seconds if elapsed == "same" else elapsed,
                         gpus if gpus is not None else {"a4000": 2}, "nlp")


def running(start=T0, gpus=None, job=42, attempt=0, elapsed=None):
    return AttemptRecord(job, attempt, "RUNNING", start, None, elapsed,
                         gpus if gpus is not None else {"a4000": 2}, "nlp")


@pytest.mark.parametrize("seconds, minutes", [
    (0, 0), (1, 1), (59, 1), (60, 1), (61, 2), (90, 2), (3600, 60), (3601, 61), (0.5, 1), (59.9, 1),
])
def test_ended_attempt_is_billed_per_started_minute(seconds, minutes):
    assert target_minutes(ended(seconds), T0 + timedelta(days=1)) == minutes


def test_ended_attempt_with_missing_or_negative_elapsed_falls_back_to_end_minus_start():
    assert target_minutes(ended(90, elapsed=None), T0) == 2
    assert target_minutes(ended(90, elapsed=-5), T0) == 2
    assert target_minutes(ended(90, elapsed=float("nan")), T0) == 2
    # end before start (clock skew) and no usable elapsed: nothing billed
    assert target_minutes(ended(-30, elapsed=None), T0) == 0
    # never started (cancelled while pending): nothing
    assert target_minutes(ended(0, elapsed=None, start=None, state="CANCELLED"), T0) == 0


def test_elapsed_wins_over_wall_clock_when_both_given():
    # ElapsedRaw excludes suspended time; trust Slurm's number
    assert target_minutes(ended(600, elapsed=61), T0) == 2


def test_terminal_state_without_end_uses_elapsed():
    record = AttemptRecord(1, 0, "CANCELLED by 1000", T0, None, 125, {"a4000": 1}, "nlp")
    assert target_minutes(record, T0 + timedelta(hours=5)) == 3


def test_running_attempt_is_billed_completed_minutes():
    now = T0 + timedelta(seconds=179.9)
    assert target_minutes(running(), now) == 2
    assert target_minutes(running(), T0 + timedelta(seconds=59)) == 0
    assert target_minutes(running(), T0 - timedelta(minutes=5)) == 0  # clock behind Slurm's
    assert target_minutes(running(start=None), now) == 0  # pending


def test_mixed_naive_and_aware_times_are_a_billing_error():
    record = running(start=datetime(2024, 5, 1, 12, 0))
    with pytest.raises(BillingError, match="timezone-aware or all naive"):
        target_minutes(record, T0)
    assert target_minutes(record, datetime(2024, 5, 1, 12, 3)) == 3  # all naive is fine


def test_two_gpu_job_of_90_seconds_costs_two_minutes_times_two_gpus():
    charge = plan_attempt(ended(90), 0, RATES, T0)
    assert (charge.from_minute, charge.to_minute, charge.key) == (0, 2, "gpu:42:0:0")
    assert charge.amount == 2 * 2 * Decimal("1.20") / 60 == Decimal("0.08")
    assert charge.gpus == (GpuLine("a4000", 2, Decimal("1.20")),)
    assert charge.team == "nlp" and charge.attempt_start == T0


def test_charge_covers_only_unbilled_minutes():
    charge = plan_attempt(ended(600), 4, RATES, T0)
    assert (charge.from_minute, charge.to_minute, charge.key) == (4, 10, "gpu:42:0:4")
    assert plan_attempt(ended(600), 10, RATES, T0) is None
    assert plan_attempt(ended(600), 12, RATES, T0) is None  # over-billed by a skewed clock: no refund
    assert plan_attempt(ended(0), 0, RATES, T0) is None


def test_rounding_telescopes_so_split_charges_sum_to_the_whole():
    lines = (GpuLine("a6000", 1, Decimal("2.50")),)
    whole = cumulative_amount(7, lines)
    assert whole == Decimal("0.291667")
    parts = [plan_attempt(ended(7 * 60, gpus={"a6000": 1}), b, RATES, T0 + timedelta(minutes=b))
             for b in range(7)]
    # bill minute by minute as a running job, then the end
    total = Decimal(0)
    billed = 0
    for m in range(1, 8):
        c = plan_attempt(running(gpus={"a6000": 1}), billed, RATES, T0 + timedelta(minutes=m))
        total += c.amount
        billed = c.to_minute
    assert total == whole and parts[0].amount == whole


def test_free_and_zero_count_gpus():
    assert plan_attempt(ended(60, gpus={"free": 1}), 0, RATES, T0).amount == 0
    assert plan_attempt(ended(60, gpus={}), 0, RATES, T0) is None
    assert plan_attempt(ended(60, gpus={"a4000": 0}), 0, RATES, T0) is None


def test_mixed_gpu_types_in_one_attempt_are_one_charge():
    charge = plan_attempt(ended(60, gpus={"a6000": 1, "a4000": 2}), 0, RATES, T0)
    assert [line.gpu_type for line in charge.gpus] == ["a4000", "a6000"]
    assert charge.amount == cumulative_amount(1, charge.gpus) == Decimal("0.081667")


def test_requeued_attempts_are_billed_separately():
    records = [ended(61, attempt=0, state="REQUEUED"), ended(30, attempt=1, state="PREEMPTED"),
               running(start=T0 + timedelta(minutes=10), attempt=2)]
    charges = plan_gpu_charges(records, lambda job, attempt: 0, RATES, T0 + timedelta(minutes=13, seconds=5))
    assert [(c.key, c.minutes) for c in charges] == [("gpu:42:0:0", 2), ("gpu:42:1:0", 1), ("gpu:42:2:0", 3)]


def test_plan_uses_billed_callback_and_dedupes_attempts():
    billed = {("42", 0): 1}
    seen = []

    def billed_fn(job, attempt):
        seen.append((job, attempt))
        return billed.get((job, attempt), 0)

    # the same attempt seen running and ended (overlapping sacct windows): the ended one wins
    records = [running(), ended(185), running()]
    charges = plan_gpu_charges(records, billed_fn, RATES, T0 + timedelta(minutes=2))
    assert [(c.from_minute, c.to_minute) for c in charges] == [(1, 4)]
    assert seen == [("42", 0)]


def test_team_mapping_and_skipping_foreign_accounts():
    records = [ended(60, job=1), AttemptRecord(2, 0, "COMPLETED", T0, T0, 60, {"a4000": 1}, "root")]
    team_of = {"nlp": "team-nlp"}.get
    charges = plan_gpu_charges(records, lambda j, a: 0, RATES, T0, team_of=team_of)
    assert [(c.cluster_job_id, c.team) for c in charges] == [("1", "team-nlp")]


def test_unbillable_records_raise_or_are_collected():
    records = [ended(60, job=1, gpus={"h100": 1}), ended(60, job=2),
               AttemptRecord(3, 0, "RUNNING", datetime(2024, 5, 1), None, None, {"a4000": 1}, "nlp"),
               AttemptRecord(4, 0, "COMPLETED", T0, T0, 60, {"a4000": 1}, "")]
    with pytest.raises(BillingError, match="h100"):
        plan_gpu_charges(records[:2], lambda j, a: 0, RATES, T0)
    with pytest.raises(BillingError, match="timezone-aware"):
        plan_gpu_charges(records, lambda j, a: 0, RATES, T0)
    errors = []
    charges = plan_gpu_charges(records, lambda j, a: 0, RATES, T0, errors=errors)
    assert [c.cluster_job_id for c in charges] == ["2"]
    assert sorted(r.job_id for r, _ in errors) == [1, 3, 4]


def test_shards_are_billed_as_the_shard_type():
    rates = Rates({"a6000": Decimal("2.50"), "shard": Decimal("0.30")})
    record = AttemptRecord(7, 0, "COMPLETED", T0, T0 + timedelta(seconds=120), 120, {}, "nlp", shards=2)
    charge = plan_attempt(record, 0, rates, T0)
    assert charge.gpus == (GpuLine("shard", 2, Decimal("0.30")),) and charge.amount == Decimal("0.02")
    with pytest.raises(BillingError, match="'shard'"):
        plan_attempt(record, 0, RATES, T0)


def test_slurm_bridge_sacct_record_is_accepted():
    """Contract check with slurm_bridge.records.SacctRecord (attribute names, aware UTC times)."""
    records = pytest.importorskip("slurm_bridge.records")
    fields = dict(job_id=77, attempt=1, name="j", user="sw-alice", account="team-nlp", qos="normal",
                  state="COMPLETED", exit_code=0, signal=None, submit=T0, start=T0,
                  end=T0 + timedelta(seconds=90), elapsed_s=90, node="a4k-1", gpus={"a4000": 2})
    try:
        record = records.SacctRecord(**fields)
    except TypeError as exc:  # the bridge changed its record: this test must be updated with it
        pytest.fail(f"SacctRecord fields changed: {exc}")
    [charge] = plan_gpu_charges([record], lambda j, a: 0, RATES, T0 + timedelta(hours=1))
    assert (charge.key, charge.team, charge.amount) == ("gpu:77:1:0", "team-nlp", Decimal("0.08"))
