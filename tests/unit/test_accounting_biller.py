"""accounting.biller: idempotent ticks, crash safety, arbitrary tick orders, concurrent billers."""
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounting.biller import Biller
from accounting.billing import AttemptRecord, cumulative_amount
from accounting.ledger import Deposit, GpuCharge, GpuLine, InMemoryLedgerStore
from accounting.rates import Rates

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
RATES = Rates({"a4000": Decimal("1.20"), "a6000": Decimal("2.50")})


class Crash(Exception):
    """Simulated process death."""


class FlakyStore(InMemoryLedgerStore):
    """Dies after ``appends`` successful appends, or on the ``reads``-th billed_minutes call."""

    def __init__(self, appends=None, reads=None):
        super().__init__()
        self.appends_left, self.reads_left = appends, reads

    def arm(self, appends=None, reads=None):
        self.appends_left, self.reads_left = appends, reads

    def billed_minutes(self, job, attempt):
        if self.reads_left is not None:
            if self.reads_left == 0:
                raise Crash("died while reading")
            self.reads_left -= 1
        return super().billed_minutes(job, attempt)

    def append_if_absent(self, entry):
        if self.appends_left is not None:
            if self.appends_left == 0:
                raise Crash("died before append")
            self.appends_left -= 1
        return super().append_if_absent(entry)


@dataclass(frozen=True)
class Job:
    """A job's true timeline: attempts as (start offset s, duration s), one after another."""

    job_id: int
    team: str
    gpus: tuple[tuple[str, int], ...]
    attempts: tuple[tuple[int, int], ...]

    def records(self, t: int) -> list[AttemptRecord]:
        """What sacct -D shows at ``t`` seconds after T0."""
        out = []
        for n, (start, duration) in enumerate(self.attempts):
            if start > t:
                out.append(AttemptRecord(self.job_id, n, "PENDING", None, None, None, dict(self.gpus), self.team))
                break
            begin = T0 + timedelta(seconds=start)
            end = start + duration
            if t < end:
                out.append(AttemptRecord(self.job_id, n, "RUNNING", begin, None, t - start, dict(self.gpus), self.team))
                break
            last = n == len(self.attempts) - 1
            out.append(AttemptRecord(self.job_id, n, "COMPLETED" if last else "REQUEUED", begin,
                                     T0 + timedelta(seconds=end), duration, dict(self.gpus), self.team))
        return out

    @property
    def horizon(self) -> int:
        start, duration = self.attempts[-1]
        return start + duration


def view(jobs, t):
    return [r for job in jobs for r in job.records(t)]


def summary(store):
    """Per attempt: (minutes covered, total charged); plus balances. Asserts no gap/overlap."""
    ranges = defaultdict(list)
    for entry in store.all_entries():
        if isinstance(entry, GpuCharge):
            ranges[(entry.cluster_job_id, entry.attempt)].append(entry)
    per_attempt = {}
    for key, charges in ranges.items():
        charges.sort(key=lambda c: c.from_minute)
        assert charges[0].from_minute == 0
        for a, b in zip(charges, charges[1:]):
            assert a.to_minute == b.from_minute, f"gap or overlap in {key}"
        per_attempt[key] = (charges[-1].to_minute, sum(c.amount for c in charges))
    teams = {e.team for e in store.all_entries()}
    return per_attempt, {team: store.balance(team) for team in teams}


JOBS = [
    Job(1, "nlp", (("a4000", 2),), ((0, 90),)),                      # the 90 s / 2 GPU example
    Job(2, "nlp", (("a6000", 1),), ((30, 605), (700, 1)),),           # requeued once
    Job(3, "vision", (("a4000", 4),), ((0, 0),)),                     # ran 0 s: free
    Job(4, "vision", (("a6000", 2),), ((5, 3601),)),
    Job(5, "nlp", (("a4000", 1), ("a6000", 1)), ((100, 59),)),        # mixed types
]


def test_the_90_second_two_gpu_job_costs_two_minutes():
    store = InMemoryLedgerStore()
    result = Biller(store, RATES).tick(view(JOBS[:1], 10_000), T0 + timedelta(days=1))
    [charge] = result.appended
    assert (charge.minutes, charge.gpu_count, charge.amount) == (2, 2, Decimal("0.08"))
    assert store.balance("nlp") == Decimal("-0.08")


def test_running_twice_charges_once():
    store = InMemoryLedgerStore()
    biller = Biller(store, RATES)
    end = T0 + timedelta(hours=2)
    first = biller.tick(view(JOBS, 7200), end)
    again = biller.tick(view(JOBS, 7200), end)
    assert first.appended and not again.appended and again.duplicates == 0
    assert summary(store) == summary(single_tick(JOBS))


def single_tick(jobs, store=None):
    store = store or InMemoryLedgerStore()
    horizon = max(job.horizon for job in jobs) + 60
    Biller(store, RATES).tick(view(jobs, horizon), T0 + timedelta(seconds=horizon))
    return store


@pytest.mark.parametrize("later", [False, True])
def test_crash_after_any_number_of_appends_then_rerun(later):
    """Kill the biller after k appends (k = 0..n) or while reading; a rerun completes the ledger."""
    t = 400  # several jobs running, some ended
    now = T0 + timedelta(seconds=t)
    clean = InMemoryLedgerStore()
    n = len(Biller(clean, RATES).tick(view(JOBS, t), now).appended)
    assert n >= 4
    for crash in [dict(appends=k) for k in range(n)] + [dict(reads=k) for k in range(len(JOBS))]:
        store = FlakyStore(**crash)
        with pytest.raises(Crash):
            Biller(store, RATES).tick(view(JOBS, t), now)
        store.arm()
        t2 = t + 300 if later else t
        Biller(store, RATES).tick(view(JOBS, t2), T0 + timedelta(seconds=t2))
        reference = InMemoryLedgerStore()
        Biller(reference, RATES).tick(view(JOBS, t2), T0 + timedelta(seconds=t2))
        assert summary(store) == summary(reference), crash
        if not later:
            assert {e.key: e for e in store.all_entries()} == {e.key: e for e in clean.all_entries()}


jobs_strategy = st.lists(
    st.builds(
        lambda gpus, attempts: (gpus, attempts),
        st.dictionaries(st.sampled_from(["a4000", "a6000"]), st.integers(1, 4), min_size=1, max_size=2),
        st.lists(st.tuples(st.integers(0, 400), st.integers(0, 900)), min_size=1, max_size=3),
    ),
    min_size=1, max_size=4,
).map(lambda specs: [
    Job(i, "nlp" if i % 2 else "cv", tuple(sorted(gpus.items())),
        tuple(_sequential(attempts)))
    for i, (gpus, attempts) in enumerate(specs, start=100)
])


def _sequential(attempts):
    """(gap, duration) pairs -> (start, duration) with each attempt after the previous one."""
    out, clock = [], 0
    for gap, duration in attempts:
        start = clock + gap
        out.append((start, duration))
        clock = start + duration
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    jobs=jobs_strategy,
    ticks=st.lists(st.tuples(st.integers(0, 4000), st.one_of(st.none(), st.integers(0, 3))), max_size=12),
    duplicate=st.booleans(),
)
def test_any_tick_order_equals_one_tick_at_the_end(jobs, ticks, duplicate):
    """Ticks at arbitrary times (unordered, repeated, some crashing after k appends), then a
    final tick: same minutes and dollars per attempt and same balances as one tick at the end."""
    store = FlakyStore()
    biller = Biller(store, RATES)
    schedule = ticks + ticks if duplicate else ticks
    for t, crash_after in schedule:
        store.arm(appends=crash_after)
        try:
            biller.tick(view(jobs, t), T0 + timedelta(seconds=t))
        except Crash:
            pass
    store.arm()
    single_tick(jobs, store)
    assert summary(store) == summary(single_tick(jobs))
    # and the total per attempt is exactly C(ceil(duration / 60))
    per_attempt, _ = summary(store)
    for job in jobs:
        lines = tuple(GpuLine(t, c, RATES.gpu_rate(t)) for t, c in job.gpus)
        for n, (_, duration) in enumerate(job.attempts):
            minutes = -(-duration // 60)
            if minutes:
                assert per_attempt[(str(job.job_id), n)] == (minutes, cumulative_amount(minutes, lines))
            else:
                assert (str(job.job_id), n) not in per_attempt


def test_concurrent_billers_with_different_clocks_never_double_charge():
    store = InMemoryLedgerStore()
    for i in range(50):
        store.append_if_absent(Deposit(team="nlp", amount=Decimal("1.00"), by="ann", at=T0, key=f"d{i}"))
    barrier = threading.Barrier(4)

    def run(offset):
        biller = Biller(store, RATES)
        barrier.wait()
        for t in range(offset, 1500, 37):
            biller.tick(view(JOBS, t), T0 + timedelta(seconds=t))

    threads = [threading.Thread(target=run, args=(k * 11,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    single_tick(JOBS, store)
    reference = single_tick(JOBS)
    per_attempt, balances = summary(store)
    ref_attempts, ref_balances = summary(reference)
    assert per_attempt == ref_attempts
    assert balances["nlp"] == ref_balances["nlp"] + Decimal("50.00")


def test_tick_reports_teams_to_cut_off_and_bad_records():
    store = InMemoryLedgerStore()
    store.append_if_absent(Deposit(team="nlp", amount=Decimal("0.05"), by="ann", at=T0))
    store.append_if_absent(Deposit(team="vision", amount=Decimal("100"), by="ann", at=T0))
    bad = AttemptRecord(9, 0, "COMPLETED", T0, T0, 60, {"h100": 1}, "vision")
    result = Biller(store, RATES).tick(view(JOBS, 10_000) + [bad], T0 + timedelta(days=1))
    assert result.cut_off == ["nlp"]
    assert [r.job_id for r, _ in result.errors] == [9] and "h100" in str(result.errors[0][1])


def test_team_of_maps_accounts():
    store = InMemoryLedgerStore()
    Biller(store, RATES, team_of=lambda account: f"team-{account}" if account == "nlp" else None).tick(
        view(JOBS, 10_000), T0 + timedelta(days=1))
    assert {e.team for e in store.all_entries()} == {"team-nlp"}
