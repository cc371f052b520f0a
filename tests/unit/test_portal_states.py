"""The job state machine, exhaustively."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from portal.jobs import states as st

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class J:
    state: str
    previous_state: str | None = None
    id: int = 1
    reason: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    state_changed_at: datetime | None = None


EXPECTED = {
    "queued": {"pending", "failed", "cancelled", "unknown"},
    "pending": {"running", "finishing", "succeeded", "failed", "cancelled", "unknown"},
    "running": {"pending", "finishing", "succeeded", "failed", "cancelled", "unknown"},
    "finishing": {"pending", "succeeded", "failed", "cancelled", "unknown"},
    "succeeded": set(),
    "failed": set(),
    "cancelled": set(),
}


@pytest.mark.parametrize("old,new", [(o, n) for o in EXPECTED for n in st.STATES if n != o])
def test_every_transition_from_known_states(old, new):
    job = J(old)
    if new in EXPECTED[old]:
        assert st.transition(job, new, now=NOW) is True
        assert job.state == new
        assert job.state_changed_at == NOW
        if new == "unknown":
            assert job.previous_state == old
    else:
        with pytest.raises(st.IllegalTransition):
            st.transition(job, new, now=NOW)
        assert job.state == old


@pytest.mark.parametrize("prev", ["pending", "running", "finishing"])
@pytest.mark.parametrize("new", [s for s in st.STATES if s != "unknown"])
def test_unknown_goes_back_or_onward(prev, new):
    job = J(prev)
    st.transition(job, "unknown", now=NOW)
    allowed = {prev} | (EXPECTED[prev] - {"unknown"})
    if new in allowed:
        assert st.transition(job, new, now=NOW)
        assert job.state == new and job.previous_state is None
    else:
        with pytest.raises(st.IllegalTransition):
            st.transition(job, new, now=NOW)
        assert job.state == "unknown" and job.previous_state == prev


def test_unknown_round_trip_keeps_started_at():
    job = J("running", started_at=NOW)
    st.transition(job, "unknown", now=NOW, reason="Slurm is not answering")
    assert job.previous_state == "running"
    assert st.transition(job, "unknown", now=NOW) is False  # a second failed poll: no-op
    st.transition(job, "running", now=NOW)
    assert (job.state, job.previous_state, job.started_at) == ("running", None, NOW)


@pytest.mark.parametrize("new", [s for s in st.STATES if s != "unknown"])
def test_unknown_since_queued_goes_anywhere(new):
    """A submission without an answer: Slurm may have queued, run or ended the job meanwhile,
    or never got it (back to queued is allowed; the reconciler resubmits from unknown)."""
    job = J("queued")
    assert st.transition(job, "unknown", now=NOW, reason="no answer")
    assert (job.state, job.previous_state) == ("unknown", "queued")
    assert st.transition(job, new, now=NOW)
    assert job.state == new and job.previous_state is None


def test_unknown_from_finishing_cannot_run():
    job = J("finishing")
    st.transition(job, "unknown", now=NOW)
    with pytest.raises(st.IllegalTransition):
        st.transition(job, "running", now=NOW)


@pytest.mark.parametrize("term", sorted(st.TERMINAL))
def test_terminal_states_never_change(term):
    for new in st.STATES:
        job = J(term)
        if new == term:
            assert st.transition(job, new, now=NOW, reason="x") is False
            assert job.reason is None  # terminal reason is frozen too
        else:
            with pytest.raises(st.IllegalTransition, match="terminal"):
                st.transition(job, new, now=NOW)


def test_same_state_is_noop_and_bad_state_is_illegal():
    job = J("running")
    assert st.transition(job, "running", now=NOW, reason="r") is False
    assert job.reason == "r"
    with pytest.raises(st.IllegalTransition):
        st.transition(job, "exploded", now=NOW)


def test_timestamps():
    job = J("queued")
    st.transition(job, "pending", now=NOW)
    assert job.started_at is None
    t1 = datetime(2026, 1, 1, 1, tzinfo=timezone.utc)
    st.transition(job, "running", now=t1)
    assert job.started_at == t1
    t2 = datetime(2026, 1, 1, 2, tzinfo=timezone.utc)
    st.transition(job, "succeeded", now=t2, reason=None)
    assert job.ended_at == t2


def test_table_and_sets_are_consistent():
    assert set(st.TRANSITIONS) == set(st.STATES)
    assert st.ACTIVE | st.TERMINAL == set(st.STATES)
    assert not st.ACTIVE & st.TERMINAL
    from portal.db.models import ACTIVE_STATES, ALL_STATES
    assert set(ACTIVE_STATES) == st.ACTIVE and set(ALL_STATES) == set(st.STATES)


@pytest.mark.parametrize("raw,live,final", [
    ("PENDING", "pending", None), ("CONFIGURING", "pending", None), ("REQUEUED", "pending", None),
    ("RUNNING", "running", None), ("SUSPENDED", "running", None), ("COMPLETING", "finishing", None),
    ("COMPLETED", None, "succeeded"), ("FAILED", None, "failed"), ("CANCELLED by 0", None, "cancelled"),
    ("TIMEOUT", None, "failed"), ("NODE_FAIL", None, "failed"), ("PREEMPTED", None, "failed"),
    ("OUT_OF_MEMORY", None, "failed"), ("COMPLETED+", None, "succeeded"), ("WEIRD", None, None),
])
def test_slurm_mapping(raw, live, final):
    m = st.slurm_mapping(raw)
    assert (m.live, m.final) == (live, final)


@pytest.mark.parametrize("raw", ["COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"])
def test_user_cancel_wins_over_slurm_end_state(raw):
    assert st.final_state(raw, cancel_requested=True) == "cancelled"
    assert st.final_state("RUNNING", cancel_requested=True) is None


def test_all_slurm_states_map_into_slipway_states():
    for m in st.SLURM_STATES.values():
        assert m.live in (None, *st.STATES) and m.final in (None, *st.TERMINAL)
        assert (m.live is None) != (m.final is None)


def test_a_plain_move_is_what_transition_writes_and_nothing_else_is_one():
    assert st.plain_move(st.QUEUED, st.PENDING, now=NOW) == {
        "state": "pending", "state_changed_at": NOW, "reason": None, "keep_reason": True}
    assert st.plain_move(st.QUEUED, st.PENDING, now=NOW, reason="r")["reason"] == "r"
    j = J(st.QUEUED)
    st.transition(j, st.PENDING, now=NOW)          # the same columns, the same values
    assert (j.state, j.state_changed_at) == (st.PENDING, NOW)
    for old, new in [(st.QUEUED, st.UNKNOWN), (st.PENDING, st.RUNNING), (st.QUEUED, st.FAILED),
                     (st.UNKNOWN, st.PENDING), (st.SUCCEEDED, st.PENDING)]:
        with pytest.raises(st.IllegalTransition):
            st.plain_move(old, new, now=NOW)
