"""The reconciler against a fake Slurm backend: mapping, unknown, accounting, billing, cut-off."""
from __future__ import annotations

import dataclasses

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from portal.billing import ledger as billing
from portal.db import Job, LedgerEntry
from portal.jobs import service
from portal.jobs.reconciler import Reconciler
from tests.support.fakes import Clock, FakeBackend, make_services, seed


@pytest.fixture
def env(tmp_path):
    backend, clock = FakeBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, stale_reservation=300,
                        lost_after=600, cancel_grace=60, storage_interval=10**9)
    seed(svc, gpu_type="a4000", gpu_count=2)
    yield svc, backend, clock
    svc.db.dispose()


def make_job(svc, slurm_id, state="pending", branch="exp-1", gpu_type="a4000", gpu_count=2):
    with svc.db.transaction() as s:
        job = Job(project_id=1, branch=branch, commit_sha="a" * 40, pusher_id=1, state=state,
                  slurm_job_id=slurm_id, gpu_type=gpu_type, gpu_count=gpu_count, image="python",
                  time_limit_min=60, created_at=svc.now(), submitted_at=svc.now() if slurm_id else None)
        s.add(job)
        s.flush()
        return job.id


def job(svc, jid) -> Job:
    with svc.db.session() as s:
        return s.get(Job, jid)


def team_balance(svc) -> Decimal:
    with svc.db.session() as s:
        return billing.balance(s, 1)


def test_queue_states_are_mapped(env):
    svc, backend, clock = env
    jid = make_job(svc, 11)
    backend.set_queue(11, "PENDING", reason="Resources")
    Reconciler(svc).tick()
    assert job(svc, jid).state == "pending" and job(svc, jid).reason == "waiting: no node has the GPUs, cores or memory it needs free yet"
    start = clock.advance(seconds=30)
    backend.set_queue(11, "RUNNING", start=start, node="a4k-2")
    rep = Reconciler(svc).tick()
    j = job(svc, jid)
    assert (j.state, j.node, j.started_at, j.reason) == ("running", "a4k-2", start, None)
    assert rep.changes == [(jid, "pending", "running")]
    assert backend.jobs_calls == 2 and backend.accounting_calls == []


def test_runner_finishing_is_not_undone_by_running(env):
    svc, backend, clock = env
    jid = make_job(svc, 11, state="running")
    service.apply_event(svc, jid, {"event": "finishing", "exit_code": 0, "signal": None})
    backend.set_queue(11, "RUNNING", start=clock())
    Reconciler(svc).tick()
    assert job(svc, jid).state == "finishing"


def test_a_stop_by_slurm_shows_at_once_and_gives_way_to_how_it_ended(env):
    """scancel outside Slipway: the runner's finishing event (stopped, SIGTERM) says so on the
    job at once; Slurm's CANCELLED then ends it "cancelled in Slurm"."""
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, state="running")
    service.apply_event(svc, jid, {"event": "finishing", "exit_code": 143, "signal": "TERM",
                                   "stopped": True})
    j = job(svc, jid)
    assert j.state == "finishing" and j.reason == (
        "stopped by Slurm (SIGTERM): its files are being pushed")
    backend.finish(11, "CANCELLED", start=t0, end=clock.advance(seconds=30), exit_code=0)
    Reconciler(svc).tick()
    assert (job(svc, jid).state, job(svc, jid).reason) == ("cancelled", "cancelled in Slurm")


def test_the_entrypoints_own_signal_is_no_stop_by_slurm(env):
    svc, backend, clock = env
    jid = make_job(svc, 11, state="running")
    # killed by its own signal (not stopped from outside), or a hostile signal name: no note
    for event in ({"signal": "KILL", "stopped": False}, {"signal": "TERM; rm", "stopped": True}):
        service.apply_event(svc, jid, {"event": "finishing", "exit_code": 137, **event})
        assert job(svc, jid).reason is None


def test_failed_poll_marks_unknown_and_never_ends_or_cancels(env):
    svc, backend, clock = env
    a, b, q = make_job(svc, 11, "running"), make_job(svc, 12, "pending", branch="b"), make_job(svc, None, "queued", branch="c")
    backend.down = True
    for _ in range(3):
        rep = Reconciler(svc).tick()
        clock.advance(seconds=5)
    assert not rep.polled
    assert (job(svc, a).state, job(svc, a).previous_state) == ("unknown", "running")
    assert (job(svc, b).state, job(svc, b).previous_state) == ("unknown", "pending")
    assert job(svc, q).state == "queued"
    assert backend.cancels == [] and backend.accounting_calls == []
    backend.down = False
    backend.set_queue(11, "RUNNING", start=clock())
    backend.set_queue(12, "RUNNING", start=clock())
    Reconciler(svc).tick()
    assert (job(svc, a).state, job(svc, a).previous_state) == ("running", None)
    assert job(svc, b).state == "running"  # unknown -> onward from its previous state


def test_ended_jobs_get_final_state_from_one_bounded_accounting_call(env):
    svc, backend, clock = env
    t0 = clock()
    ok, bad, oom = make_job(svc, 11, "running"), make_job(svc, 12, "running", "b"), make_job(svc, 13, "running", "c")
    end = clock.advance(minutes=3)
    backend.finish(11, "COMPLETED", start=t0, end=end, exit_code=0)
    backend.finish(12, "FAILED", start=t0, end=end, exit_code=3)
    backend.finish(13, "OUT_OF_MEMORY", start=t0, end=end, exit_code=None)
    Reconciler(svc).tick()
    assert len(backend.accounting_calls) == 1
    start, stop, ids = backend.accounting_calls[0]
    assert sorted(ids) == [11, 12, 13] and stop == clock() and (t0 - start).total_seconds() == 300
    assert (job(svc, ok).state, job(svc, ok).exit_code, job(svc, ok).ended_at) == ("succeeded", 0, end)
    assert (job(svc, bad).state, job(svc, bad).reason) == ("failed", "exit code 3")
    # no mem= asked: Slurm's DefMemPerCPU (1000M) x 1 core is the limit it hit
    assert (job(svc, oom).state, job(svc, oom).reason) == (
        "failed", "out of memory at 1.0 GiB (the job's memory limit); ask for more with -o mem=…, "
                  "e.g. mem=2G")


def test_cancelled_job_that_completed_reads_cancelled(env):
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    r = service.request_cancel(svc, jid, by="alice")
    assert backend.cancels == [(11, "TERM", True)] and "files will be pushed" in r.message
    backend.finish(11, "COMPLETED", start=t0, end=clock.advance(seconds=4))
    Reconciler(svc).tick()
    assert (job(svc, jid).state, job(svc, jid).reason) == ("cancelled", "cancelled by alice")


def test_unsettled_accounting_record_waits(env):
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    backend.finish(11, "COMPLETED", start=t0, end=clock.advance(minutes=1), qos="Unknown")
    # slurmdbd's first record: QOS Unknown and no AllocTRES yet (what the job had is not known)
    backend.acct[-1] = dataclasses.replace(backend.acct[-1], alloc_tres_recorded=False, gpus={})
    Reconciler(svc).tick()
    assert job(svc, jid).state == "running"
    backend.acct.clear()
    backend.finish(11, "COMPLETED", start=t0, end=clock(), qos="normal")
    Reconciler(svc).tick()
    assert job(svc, jid).state == "succeeded"


def test_record_from_the_completion_message_is_final_at_once(env):
    """QOS Unknown, but start, end, nodes and AllocTRES in (slurmdbd's record from the completion
    message, before the start message): the job ends and is billed at the same tick."""
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    before = team_balance(svc)
    backend.finish(11, "COMPLETED", start=t0, end=clock.advance(seconds=90), qos="Unknown",
                   name="allocation", gpus={"a4000": 2})
    Reconciler(svc).tick()
    assert job(svc, jid).state == "succeeded"
    assert team_balance(svc) < before   # two started minutes of two a4000s, billed once
    billed = before - team_balance(svc)
    Reconciler(svc).tick()
    assert before - team_balance(svc) == billed


def test_accounting_down_says_why_the_job_is_not_final_and_loses_nothing(env):
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    before = team_balance(svc)
    backend.finish(11, "COMPLETED", start=t0, end=clock.advance(minutes=2), gpus={"a4000": 2})
    backend.accounting_down = True
    for _ in range(3):
        report = Reconciler(svc).tick()
        clock.advance(minutes=5)
    assert any("accounting failed" in e for e in report.errors)
    j = job(svc, jid)
    assert j.state == "unknown" and "Slurm accounting is not answering" in j.reason
    assert "slurmdbd is down" in j.reason and team_balance(svc) == before
    backend.accounting_down = False  # back: the end is recorded, billed, and the note goes
    Reconciler(svc).tick()
    j = job(svc, jid)
    assert (j.state, j.reason, j.exit_code) == ("succeeded", None, 0)
    assert team_balance(svc) == before - Decimal("0.033333")  # 2 min x 2 GPUs at $0.50/h


def test_an_ended_record_without_its_end_waits_and_is_billed_from_the_true_end(env):
    # slurmdbd back after an outage: sacct first says COMPLETED with End "Unknown" and an
    # ElapsedRaw of now - start (growing past a minute), then fills in the real End (measured)
    import dataclasses
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    backend.finish(11, "COMPLETED", start=t0, end=t0 + timedelta(seconds=12), gpus={"a4000": 2})
    true = backend.acct.pop()
    clock.advance(seconds=75)
    backend.acct.append(dataclasses.replace(true, end=None, elapsed_s=75))
    Reconciler(svc).tick()
    assert job(svc, jid).state == "running"          # not final, nothing billed on a guess
    with svc.db.session() as s:
        assert not list(s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "gpu")))
    backend.acct[-1] = true                          # sacct has the End now
    clock.advance(seconds=5)
    Reconciler(svc).tick()
    with svc.db.session() as s:
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "gpu")))
    assert job(svc, jid).state == "succeeded"
    assert [(e.from_minute, e.to_minute) for e in rows] == [(0, 1)]   # 12 s: one minute


def test_an_ended_record_whose_end_never_comes_is_billed_after_lost_after(env):
    import dataclasses
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    backend.finish(11, "COMPLETED", start=t0, end=t0 + timedelta(seconds=30), gpus={"a4000": 2})
    backend.acct[-1] = dataclasses.replace(backend.acct[-1], end=None, elapsed_s=30)
    Reconciler(svc).tick()
    assert job(svc, jid).state == "running"
    clock.advance(seconds=601)                       # lost_after (600 s) since last seen
    Reconciler(svc).tick()
    assert job(svc, jid).state == "succeeded"


def test_lost_job_is_failed_after_lost_after(env):
    svc, backend, clock = env
    jid = make_job(svc, 11, "running")
    Reconciler(svc).tick()
    assert job(svc, jid).state == "running"
    clock.advance(seconds=601)
    Reconciler(svc).tick()
    assert job(svc, jid).state == "failed" and "lost track" in job(svc, jid).reason


def test_billing_is_idempotent_across_ticks_and_restarts(env):
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    backend.set_queue(11, "RUNNING", start=t0, gpus={"a4000": 2})
    clock.advance(minutes=10, seconds=20)
    Reconciler(svc).tick()
    Reconciler(svc).tick()           # same instant, new reconciler (a restart): nothing new
    r = Reconciler(svc)
    r.tick()
    # 2 x a4000 at $0.50/h = $1/h: 10 whole minutes = $0.166667
    assert team_balance(svc) == Decimal("25.00") - Decimal("0.166667")
    clock.advance(minutes=5)
    r.tick()
    r.tick()
    end = clock.advance(seconds=10)   # 15m30s elapsed -> ceil = 16 minutes
    backend.finish(11, "COMPLETED", start=t0, end=end, gpus={"a4000": 2})
    r.tick()
    Reconciler(svc).tick()
    assert job(svc, jid).state == "succeeded"
    with svc.db.session() as s:
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "gpu").order_by(LedgerEntry.id)))
    assert [(e.from_minute, e.to_minute) for e in rows] == [(0, 10), (10, 15), (15, 16)]
    assert all(e.job_id == jid and e.gpu_type == "a4000" and e.gpu_count == 2 for e in rows)
    assert team_balance(svc) == Decimal("24.733333")   # $25 - 16 min x $1/h (micro-dollar exact)
    assert job(svc, jid).cost == Decimal("0.266667")


def test_an_attempt_that_ran_under_a_second_is_billed_its_started_minute(env):
    # Slurm keeps whole seconds (rounded down): ElapsedRaw 0 for a job that ran 0.4 s on a node
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    backend.finish(11, "COMPLETED", start=t0, end=t0, gpus={"a4000": 2})
    Reconciler(svc).tick()
    with svc.db.session() as s:
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "gpu")))
    assert job(svc, jid).state == "succeeded"
    assert [(e.from_minute, e.to_minute, e.gpu_count) for e in rows] == [(0, 1, 2)]
    assert job(svc, jid).cost == Decimal("0.016667")   # 1 minute x 2 x $0.50/h


def test_an_attempt_that_never_got_a_node_costs_nothing(env):
    # cancelled while pending: sacct gives Start = End and "None assigned"
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "pending")
    backend.finish(11, "CANCELLED", start=t0, end=t0, node="", exit_code=None)
    Reconciler(svc).tick()
    with svc.db.session() as s:
        assert not list(s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "gpu")))
    assert job(svc, jid).state == "cancelled"


def test_a_multi_node_attempt_without_typed_gpus_in_accounting_bills_every_node(env):
    # AllocTRES with only "gres/gpu=N" (no type): billed as the job's type x GPUs per node x nodes
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running", gpu_count=1)
    with svc.db.transaction() as s:
        s.get(Job, jid).nodes = 2
    backend.finish(11, "COMPLETED", start=t0, end=clock.advance(seconds=61), gpus={})
    Reconciler(svc).tick()
    with svc.db.session() as s:
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "gpu")))
    assert [(e.from_minute, e.to_minute, e.gpu_type, e.gpu_count) for e in rows] == [(0, 2, "a4000", 2)]


def test_a_multi_node_jobs_node_list_is_not_narrowed_to_its_batch_host(env):
    # slurmdbd's record from the completion message (QOS Unknown) names only the batch host of
    # a 2-node job: the job keeps squeue's list; a single-node job takes sacct's node as before
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    one = make_job(svc, 12, "running", branch="b")
    backend.set_queue(11, "RUNNING", start=t0, node="a4k-[1-2]", gpus={"a4000": 2})
    backend.set_queue(12, "RUNNING", start=t0, node="a4k-1")
    Reconciler(svc).tick()
    assert job(svc, jid).node == "a4k-[1-2]"
    end = clock.advance(seconds=61)
    backend.finish(11, "COMPLETED", start=t0, end=end, node="a4k-1", qos="", gpus={"a4000": 2})
    backend.finish(12, "COMPLETED", start=t0, end=end, node="a4k-2")
    Reconciler(svc).tick()
    assert (job(svc, jid).state, job(svc, jid).node) == ("succeeded", "a4k-[1-2]")
    assert (job(svc, one).state, job(svc, one).node) == ("succeeded", "a4k-2")


def test_requeued_attempts_are_billed_separately(env):
    svc, backend, clock = env
    t0 = clock()
    make_job(svc, 11, "running")
    backend.set_queue(11, "RUNNING", start=t0, gpus={"a4000": 2})
    clock.advance(minutes=5)
    Reconciler(svc).tick()
    t1 = clock.advance(minutes=1)
    backend.set_queue(11, "RUNNING", start=t1, gpus={"a4000": 2}, restart_count=1)
    clock.advance(minutes=3)
    Reconciler(svc).tick()
    with svc.db.session() as s:
        keys = sorted(s.scalars(select(LedgerEntry.idempotency_key).where(LedgerEntry.kind == "gpu")))
    assert keys == ["gpu:1:0:0", "gpu:1:1:0"]


def test_cut_off_at_zero_cancels_with_term(env):
    svc, backend, clock = env
    t0 = clock()
    with svc.db.transaction() as s:  # leave the team $0.10
        s.add(LedgerEntry(team_id=1, kind="adjustment", amount_micros=-24_900_000, idempotency_key="adj",
                          created_by="t", created_at=t0))
    run = make_job(svc, 11, "running", gpu_type="a6000", gpu_count=2)
    pend = make_job(svc, 12, "pending", branch="b")
    backend.set_queue(11, "RUNNING", start=t0, gpus={"a6000": 2})
    backend.set_queue(12, "PENDING")
    clock.advance(minutes=2)          # 2 x a6000 = $2/h: 2 minutes = $0.066667 -> still positive
    rep = Reconciler(svc).tick()
    assert rep.cut_off == [] and backend.cancels == []
    clock.advance(minutes=2)          # $0.133333 > $0.10
    rep = Reconciler(svc).tick()
    assert rep.cut_off == ["nlp"]
    assert (11, "TERM", True) in backend.cancels and (12, None, False) in backend.cancels
    assert "team nlp has -$0.04" in job(svc, run).cancel_reason
    Reconciler(svc).tick()            # no second cancel
    assert len(backend.cancels) == 2
    clock.advance(seconds=61)         # the job ignored TERM: hard cancel once
    rep = Reconciler(svc).tick()
    assert set(rep.hard_cancels) == {run, pend}
    assert (11, None, False) in backend.cancels


def test_a_cancelled_job_requeued_by_a_node_failure_runs_once_more_to_push_its_files(env):
    # the cancel's TERM died with the node; Slurm requeued the job: cancelling it while pending
    # would leave the interrupted attempt's files unpushed, so the hard cancel waits for it to run
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    backend.set_queue(11, "RUNNING", start=t0, gpus={"a4000": 2})
    Reconciler(svc).tick()
    service.request_cancel(svc, jid, by="alice")
    backend.set_queue(11, "PENDING", reason="BeginTime", restart_count=1)
    clock.advance(seconds=61)
    rep = Reconciler(svc).tick()
    assert rep.hard_cancels == [] and job(svc, jid).state == "pending"
    assert (11, None, False) not in backend.cancels
    backend.set_queue(11, "RUNNING", start=clock(), gpus={"a4000": 2}, restart_count=1)
    rep = Reconciler(svc).tick()
    assert rep.hard_cancels == [jid] and (11, None, False) in backend.cancels   # TERM: it pushes


def test_a_cancelled_pending_job_that_never_ran_is_hard_cancelled_after_the_grace(env):
    svc, backend, clock = env
    jid = make_job(svc, 11, "pending")
    backend.set_queue(11, "PENDING", reason="Resources")
    service.request_cancel(svc, jid, by="alice")
    backend.cancels.clear()
    clock.advance(seconds=61)
    rep = Reconciler(svc).tick()
    assert rep.hard_cancels == [jid]


def test_a_later_attempt_sacct_has_not_recorded_yet_keeps_node_fail_from_being_final(env):
    # squeue showed attempt 2 running; sacct (slurmdbd was down) only has attempt 1's NODE_FAIL
    import dataclasses
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    backend.set_queue(11, "RUNNING", start=t0 + timedelta(seconds=40), gpus={"a4000": 2},
                      restart_count=1)
    Reconciler(svc).tick()
    end1 = t0 + timedelta(seconds=30)
    backend.finish(11, "NODE_FAIL", start=t0, end=end1, gpus={"a4000": 2}, exit_code=None)
    clock.advance(seconds=90)
    Reconciler(svc).tick()
    assert job(svc, jid).state == "running"           # not "failed: the node failed"
    second = dataclasses.replace(backend.acct[-1], attempt=1, state="COMPLETED", exit_code=0,
                                 start=t0 + timedelta(seconds=40), end=t0 + timedelta(seconds=85),
                                 elapsed_s=45)
    backend.acct.append(second)
    clock.advance(seconds=5)
    Reconciler(svc).tick()
    assert job(svc, jid).state == "succeeded"


def test_a_completed_record_ends_a_requeued_job_even_when_sacct_lost_the_earlier_attempt(env):
    # after a slurmdbd outage sacct may keep ONE record (the last attempt's) for a job that
    # squeue showed requeued: COMPLETED is the job's end, there is nothing to wait for
    svc, backend, clock = env
    t0 = clock()
    jid = make_job(svc, 11, "running")
    backend.set_queue(11, "RUNNING", start=t0, gpus={"a4000": 2}, restart_count=1)
    Reconciler(svc).tick()
    backend.finish(11, "COMPLETED", start=t0, end=t0 + timedelta(seconds=20), gpus={"a4000": 2})
    clock.advance(seconds=30)
    Reconciler(svc).tick()
    assert job(svc, jid).state == "succeeded"


def test_events_of_a_late_or_ghost_attempt_never_change_an_ended_job(env):
    svc, backend, clock = env
    jid = make_job(svc, 11, "running")
    service.apply_event(svc, jid, {"event": "results", "results_ref": "refs/heads/results/x/1",
                                   "sha": "b" * 40, "branch_updated": True, "message": "ok"})
    with svc.db.transaction() as s:
        j = s.get(Job, jid)
        j.state, j.exit_code = "succeeded", 0
    assert service.apply_event(svc, jid, {"event": "finishing", "exit_code": 1,
                                          "signal": None}) == "ignored"
    assert service.apply_event(svc, jid, {"event": "results", "results_ref": "",
                                          "sha": ""}) == "ignored"
    j = job(svc, jid)
    assert (j.exit_code, j.results_ref, j.results_sha) == (0, "refs/heads/results/x/1", "b" * 40)
    late = make_job(svc, 12, "succeeded", branch="late")   # ended before its results callback
    service.apply_event(svc, late, {"event": "results", "results_ref": "refs/heads/results/l/2",
                                    "sha": "c" * 40, "branch_updated": True, "message": "ok"})
    assert job(svc, late).results_ref == "refs/heads/results/l/2"


def test_stale_reservation_failed_or_adopted(env):
    svc, backend, clock = env
    stale = make_job(svc, None, "queued")
    adopt = make_job(svc, None, "queued", branch="b")
    backend.set_queue(77, "PENDING", account="team-nlp", name=f"slipway-{adopt}")
    clock.advance(seconds=301)
    Reconciler(svc).tick()
    assert job(svc, stale).state == "failed" and "push did not complete" in job(svc, stale).reason
    assert (job(svc, adopt).state, job(svc, adopt).slurm_job_id) == ("pending", 77)


def test_runner_events(env):
    svc, backend, clock = env
    jid = make_job(svc, 11, "pending")
    assert service.apply_event(svc, jid, {"event": "started"}) == "running"
    assert service.apply_event(svc, jid, {"event": "started"}) == "running"
    assert service.apply_event(svc, jid, {"event": "finishing", "exit_code": 2}) == "finishing"
    assert service.apply_event(svc, jid, {"event": "started"}) == "ignored"
    service.apply_event(svc, jid, {"event": "results", "results_ref": "refs/heads/results/exp-1/1",
                                   "sha": "b" * 40, "branch_updated": True, "message": "ok"})
    j = job(svc, jid)
    assert (j.state, j.exit_code, j.results_sha, j.branch_updated) == ("finishing", 2, "b" * 40, True)
    with pytest.raises(service.JobError):
        service.apply_event(svc, jid, {"event": "exploded"})


def test_storage_is_billed_per_minute_from_the_repository_size(tmp_path):
    """$0.10/GB-month prorated by the minute, from the real bare repository's size on disk."""
    import os

    from tests.support.fakes import commit_to_bare

    clock = Clock()
    svc = make_services(tmp_path, backend=FakeBackend(), clock=clock, storage_interval=60)
    seed(svc)
    bare = svc.config.repos_root / "nlp" / "proj.git"
    commit_to_bare(bare, tmp_path / "w", {"data.bin": os.urandom(3_000_000).hex()})
    size = svc.git.repo_bytes("nlp", "proj")
    assert size > 3_000_000  # hex text compresses about 2:1 in git

    r = Reconciler(svc)
    r.tick()                      # first sample: the starting point
    clock.advance(minutes=60)
    r.tick()
    clock.advance(seconds=30)
    r.tick()                      # within the interval: nothing
    with svc.db.session() as s:
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "storage")))
    charged = sum(-e.amount for e in rows)
    minutes = sum(e.to_minute - e.from_minute for e in rows if e.to_minute is not None)
    assert minutes == 60, [(e.from_minute, e.to_minute) for e in rows]
    expected = (Decimal(size) / Decimal(10**9) * Decimal("0.10") * 60 / 43200).quantize(Decimal("0.000001"))
    assert abs(charged - expected) <= Decimal("0.000001"), (charged, expected)
    svc.db.dispose()


# ------------------------------------------------------------ ids, storage keys, holds, tick order

from dataclasses import dataclass, field as dc_field  # noqa: E402

from portal import integrations as ig  # noqa: E402
from portal.db import Project  # noqa: E402


def adjust(svc, micros, key):
    with svc.db.transaction() as s:
        s.add(LedgerEntry(team_id=1, kind="adjustment", amount_micros=micros, idempotency_key=key,
                          created_by="t", created_at=svc.now()))


def test_a_new_job_never_inherits_a_deleted_jobs_billing(env):
    """Deleting a project deletes its jobs but keeps their charges: the next job gets a new id,
    so it starts billing at minute 0 and its cost is its own."""
    svc, backend, clock = env
    t0 = clock()
    old = make_job(svc, 11, "running")
    backend.set_queue(11, "RUNNING", start=t0, gpus={"a4000": 2})
    backend.finish(11, "COMPLETED", start=t0, end=clock.advance(minutes=10), gpus={"a4000": 2})
    Reconciler(svc).tick()
    assert job(svc, old).cost == Decimal("0.166667")
    with svc.db.transaction() as s:
        s.delete(s.get(Project, 1))
    with svc.db.transaction() as s:
        s.add(Project(id=1, team_id=1, name="proj", gpu_type="a4000", gpu_count=2, image="python",
                      time_limit_min=60, created_at=clock()))
    new = make_job(svc, 12, "running")
    assert new > old
    t1 = clock()
    backend.set_queue(12, "RUNNING", start=t1, gpus={"a4000": 2})
    clock.advance(minutes=3, seconds=5)
    Reconciler(svc).tick()
    with svc.db.session() as s:
        rows = [(e.job_id, e.from_minute, e.to_minute) for e in
                s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "gpu").order_by(LedgerEntry.id))]
    assert rows == [(old, 0, 10), (new, 0, 3)]
    assert job(svc, new).cost == Decimal("0.050000")  # 3 min x $1/h: its own minutes only


def _storage_rows(svc):
    with svc.db.session() as s:
        return [(e.from_minute, e.to_minute, e.carry) for e in s.scalars(
            select(LedgerEntry).where(LedgerEntry.kind == "storage").order_by(LedgerEntry.id))]


def test_recreated_project_storage_starts_when_it_was_created(tmp_path):
    from accounting.storage import epoch_minute

    clock = Clock()
    svc = make_services(tmp_path, backend=FakeBackend(), clock=clock, storage_interval=60)
    seed(svc)
    r = Reconciler(svc)
    clock.advance(minutes=30)
    r.tick()
    first = _storage_rows(svc)
    assert [(a, b) for a, b, _ in first] == [(epoch_minute(clock() - timedelta(minutes=30)), epoch_minute(clock()))]
    with svc.db.transaction() as s:       # deleted...
        s.delete(s.get(Project, 1))
    recreated = clock.advance(days=2)    # ...and created again two days later
    with svc.db.transaction() as s:
        s.add(Project(team_id=1, name="proj", gpu_type="a4000", gpu_count=1, image="python",
                      time_limit_min=60, created_at=recreated))
    clock.advance(minutes=20)
    r.tick()
    rows = _storage_rows(svc)
    assert rows[1][:2] == (epoch_minute(recreated), epoch_minute(recreated) + 20), rows
    svc.db.dispose()


def test_storage_charge_that_reaches_zero_cuts_off_in_the_same_tick(tmp_path):
    clock = Clock()
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend, clock=clock, storage_interval=60,
                        storage_rate=Decimal("1000"))
    seed(svc)
    adjust(svc, -24_999_999, "adj")          # $0.000001 left
    jid = make_job(svc, 11, "running")
    clock.advance(minutes=30)                # storage: 30 minutes since the project's creation
    backend.set_queue(11, "RUNNING", start=clock() - timedelta(seconds=30), gpus={"a4000": 1})
    rep = Reconciler(svc).tick()
    assert rep.charges == 1 and team_balance(svc) <= 0
    assert rep.cut_off == ["nlp"] and rep.cancels == [jid]
    assert (11, "TERM", True) in backend.cancels
    svc.db.dispose()


def test_failed_poll_never_fails_a_reservation_slurm_may_be_running(env):
    svc, backend, clock = env
    jid = make_job(svc, None, "queued")
    backend.set_queue(77, "RUNNING", start=clock(), account="team-nlp", name=f"slipway-{jid}")
    clock.advance(seconds=301)
    backend.down = True
    rep = Reconciler(svc).tick()
    assert not rep.polled and job(svc, jid).state == "queued"
    backend.down = False                    # Slurm answers: it has the job, so it is adopted
    Reconciler(svc).tick()
    assert (job(svc, jid).state, job(svc, jid).slurm_job_id) == ("running", 77)


@dataclass
class HoldingBackend(FakeBackend):
    """FakeBackend that records holds/releases and shows them in squeue like Slurm does."""

    holds: list = dc_field(default_factory=list)
    releases: list = dc_field(default_factory=list)

    def hold(self, job_id):
        self.holds.append(job_id)
        rec = self.queue[job_id]
        self.queue[job_id] = rec.__class__(**{**rec.__dict__, "reason": "JobHeldAdmin"})

    def release(self, job_id):
        self.releases.append(job_id)
        rec = self.queue[job_id]
        self.queue[job_id] = rec.__class__(**{**rec.__dict__, "reason": "None"})


@pytest.fixture
def held_env(tmp_path):
    backend, clock = HoldingBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, stale_reservation=300,
                        lost_after=600, cancel_grace=60, storage_interval=10**9)
    seed(svc, gpu_type="a4000", gpu_count=2)
    yield svc, backend, clock
    svc.db.dispose()


def test_waiting_jobs_are_held_under_one_dollar_and_released_after_a_deposit(held_env):
    svc, backend, clock = held_env
    adjust(svc, -24_200_000, "adj")           # $0.80 left
    pend = make_job(svc, 11, "pending")
    run = make_job(svc, 12, "running", branch="b")
    backend.set_queue(11, "PENDING", reason="Resources")
    backend.set_queue(12, "RUNNING", start=clock(), gpus={"a4000": 2})
    rep = Reconciler(svc).tick()
    assert rep.holds == [pend] and backend.holds == [11] and backend.cancels == []
    j = job(svc, pend)
    assert j.state == "pending" and j.balance_hold_at == clock()
    assert j.reason.startswith("held: balance $0.80 is under $1.00 — request funds"), j.reason
    assert "slipway team request-funds nlp" in j.reason
    assert job(svc, run).reason is None and job(svc, run).balance_hold_at is None
    for _ in range(2):                        # Slurm shows it held: nothing more to do
        clock.advance(seconds=5)
        rep = Reconciler(svc).tick()
        assert rep.holds == [] and backend.holds == [11]
        assert job(svc, pend).reason.startswith("held: balance $0.80")
    billing.add_funds(svc.db, "nlp", "5.00", by="test", now=clock())
    rep = Reconciler(svc).tick()
    assert rep.releases == [pend] and backend.releases == [11]
    j = job(svc, pend)
    assert (j.state, j.balance_hold_at, j.reason) == ("pending", None, None)
    clock.advance(seconds=5)
    Reconciler(svc).tick()
    assert job(svc, pend).reason == "waiting in the queue: None" or job(svc, pend).reason is None
    assert backend.releases == [11] and backend.holds == [11]
    assert backend.jobs_calls == 5 and backend.accounting_calls == []  # one squeue per tick, no more


def test_requeued_job_is_held_and_an_administrators_hold_is_left_alone(held_env):
    svc, backend, clock = held_env
    requeued = make_job(svc, 11, "running")
    admin_held = make_job(svc, 12, "pending", branch="b")
    backend.set_queue(11, "RUNNING", start=clock(), gpus={"a4000": 2})
    backend.set_queue(12, "PENDING", reason="JobHeldAdmin")
    Reconciler(svc).tick()
    adjust(svc, -24_500_000, "adj")           # $0.50 left, and the node of job 11 failed:
    backend.set_queue(11, "PENDING", reason="BeginTime", restart_count=1)
    rep = Reconciler(svc).tick()
    assert job(svc, requeued).state == "pending" and rep.holds == [requeued]
    assert job(svc, requeued).reason.startswith("held: balance $0.50")
    assert job(svc, admin_held).balance_hold_at is None  # not Slipway's hold
    billing.add_funds(svc.db, "nlp", "1.00", by="test", now=clock())  # $1.50
    rep = Reconciler(svc).tick()
    assert rep.releases == [requeued] and backend.releases == [11]   # job 12 stays held


def test_the_cut_off_of_a_held_requeued_job_lets_it_run_once_to_push_its_files(held_env):
    """Its node failed, Slurm requeued it, the $1.00 rule held it; then the balance hit $0:
    a scancel while pending would leave the interrupted attempt's files unpushed for good.
    Slipway's hold is released instead, and the job is stopped once it runs (TERM: it pushes)."""
    svc, backend, clock = held_env
    jid = make_job(svc, 11, "running")
    backend.set_queue(11, "RUNNING", start=clock(), gpus={"a4000": 2})
    Reconciler(svc).tick()
    adjust(svc, -24_500_000, "low")                  # $0.50 left; the node fails
    backend.set_queue(11, "PENDING", reason="BeginTime", restart_count=1)
    rep = Reconciler(svc).tick()
    assert rep.holds == [jid] and job(svc, jid).attempt == 1
    adjust(svc, -600_000, "spent")                   # $0 (the dead attempt's minutes)
    clock.advance(seconds=5)
    rep = Reconciler(svc).tick()
    assert rep.cut_off == ["nlp"] and rep.cancels == [jid]
    assert backend.cancels == []                     # no scancel while it waits to push
    assert rep.releases == [jid] and backend.releases == [11]
    j = job(svc, jid)
    assert j.state == "pending" and j.balance_hold_at is None and "push" in j.reason
    clock.advance(seconds=61)
    rep = Reconciler(svc).tick()
    assert rep.holds == [] and rep.hard_cancels == [] and backend.cancels == []
    backend.set_queue(11, "RUNNING", start=clock(), gpus={"a4000": 2}, restart_count=1)
    rep = Reconciler(svc).tick()
    assert rep.hard_cancels == [jid] and backend.cancels == [(11, None, False)]


def test_a_user_cancel_of_a_requeued_pending_job_waits_for_it_to_run(env):
    svc, backend, clock = env
    jid = make_job(svc, 11, "running")
    backend.set_queue(11, "RUNNING", start=clock(), gpus={"a4000": 2})
    Reconciler(svc).tick()
    backend.set_queue(11, "PENDING", reason="BeginTime", restart_count=1)
    Reconciler(svc).tick()
    res = service.request_cancel(svc, jid, by="alice")
    assert "stopped as soon as it starts again" in res.message and backend.cancels == []
    assert job(svc, jid).cancel_requested_at is not None


def test_no_holds_when_the_poll_failed_and_none_for_cancelled_jobs(held_env):
    svc, backend, clock = held_env
    adjust(svc, -24_200_000, "adj")
    gone = make_job(svc, 11, "pending")
    backend.set_queue(11, "PENDING", reason="Resources")
    backend.down = True
    Reconciler(svc).tick()
    assert backend.holds == []
    backend.down = False
    service.request_cancel(svc, gone, by="alice")
    Reconciler(svc).tick()
    assert backend.holds == []


def test_hold_refused_by_slurm_is_reported_and_retried(held_env):
    svc, backend, clock = held_env
    adjust(svc, -24_200_000, "adj")
    jid = make_job(svc, 11, "pending")
    backend.set_queue(11, "PENDING", reason="Resources")

    def refuse(job_id):
        raise ig.SlurmRejected("Job is no longer pending execution")

    backend.hold = refuse
    rep = Reconciler(svc).tick()
    assert any("hold of job" in e and "no longer pending" in e for e in rep.errors)
    assert job(svc, jid).balance_hold_at is None
    del backend.hold
    rep = Reconciler(svc).tick()
    assert rep.holds == [jid] and job(svc, jid).balance_hold_at is not None


def test_slipways_hold_mark_is_written_before_the_hold(held_env):
    """A crash between `scontrol hold` and the database write must not leave a hold without
    Slipway's mark (it would look like an administrator's and never be released)."""
    svc, backend, clock = held_env
    adjust(svc, -24_200_000, "adj")
    jid = make_job(svc, 11, "pending")
    backend.set_queue(11, "PENDING", reason="Resources")
    seen = []

    def crash_after_hold(slurm_id):
        seen.append(job(svc, jid).balance_hold_at)
        backend.set_queue(11, "PENDING", reason="JobHeldAdmin")  # Slurm holds it ...
        raise KeyboardInterrupt  # ... and Slipway dies before anything else
    backend.hold = crash_after_hold
    with pytest.raises(KeyboardInterrupt):
        Reconciler(svc).tick()
    assert seen and seen[0] is not None  # the mark was already in the database
    del backend.hold
    adjust(svc, 50_000_000, "deposit")
    rep = Reconciler(svc).tick()
    assert rep.releases == [jid] and backend.releases == [11]  # Slipway's hold: released


def test_busy_while_a_job_is_ending_then_quiet(env):
    """A tick says ``busy`` while a job is finishing, has a cancel pending or waits for sacct:
    the loop then ticks every ``reconcile_busy_interval`` instead of ``reconcile_interval``."""
    svc, backend, clock = env
    jid = make_job(svc, 11, state="running")
    backend.set_queue(11, "RUNNING", start=clock())
    assert Reconciler(svc).tick().busy is False
    service.apply_event(svc, jid, {"event": "finishing", "exit_code": 0, "signal": None})
    assert Reconciler(svc).tick().busy is True
    backend.queue.clear()  # it left the queue; sacct has no settled record yet
    assert Reconciler(svc).tick().busy is True
    backend.finish(11, "COMPLETED", start=clock() - timedelta(seconds=90), end=clock(),
                   gpus={"a4000": 2})
    Reconciler(svc).tick()
    assert job(svc, jid).state == "succeeded"
    assert Reconciler(svc).tick().busy is False


def test_cancel_and_runner_events_wake_the_loop(env):
    svc, backend, clock = env
    jid = make_job(svc, 11, state="running")
    svc.wake.clear()
    service.request_cancel(svc, jid, by="alice")
    assert svc.wake.is_set()
    svc.wake.clear()
    service.apply_event(svc, jid, {"event": "results", "results_ref": "refs/heads/results/x/1",
                                   "sha": "b" * 40, "branch_updated": True, "message": "ok"})
    assert svc.wake.is_set()


def test_every_start_wakes_the_loop(env):
    """A start event makes the job running; its node and start time come from Slurm's queue,
    read at once rather than up to an idle tick later (a running job with no node)."""
    svc, backend, clock = env
    first = make_job(svc, 11, state="pending")
    svc.wake.clear()
    service.apply_event(svc, first, {"event": "started", "port": None})
    assert svc.wake.is_set()
    again = make_job(svc, 12, state="pending", branch="b")
    with svc.db.transaction() as s:
        s.get(Job, again).attempt = 1  # Slurm requeued it (node failure)
    svc.wake.clear()
    service.apply_event(svc, again, {"event": "started", "port": None})
    assert svc.wake.is_set()           # its attempts row at once (docs/FAULTS.md §1)


def test_loop_sleeps_its_interval_unless_woken(env):
    import threading
    import time as _time

    from portal.jobs.reconciler.loop import _sleep
    stop, wake = threading.Event(), threading.Event()
    t0 = _time.monotonic()
    assert _sleep(stop, wake, 0.3, minimum=0.05) is False
    assert _time.monotonic() - t0 >= 0.3
    wake.set()
    t0 = _time.monotonic()
    assert _sleep(stop, wake, 30, minimum=0.05) is False   # woken: back after the minimum
    assert _time.monotonic() - t0 < 5
    stop.set()
    assert _sleep(stop, wake, 30, minimum=0.05) is True


def test_ticks_of_two_reconcilers_never_overlap(env):
    """One-off ticks (`slipway reconcile --once`, `Reconciler(svc).tick()`) each take the
    leader lease (on SQLite an flock on the data dir's lock file): their ticks run one at a time
    (here three threads with separate Reconcilers, so separate leases)."""
    import threading
    import time as _time

    svc, backend, clock = env
    inside, overlaps = [0], []
    real_jobs = backend.jobs

    def slow_jobs(*a, **kw):
        inside[0] += 1
        overlaps.append(inside[0])
        _time.sleep(0.05)
        inside[0] -= 1
        return real_jobs(*a, **kw)
    backend.jobs = slow_jobs
    threads = [threading.Thread(target=lambda: [Reconciler(svc).tick() for _ in range(3)])
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 9 and max(overlaps) == 1
    assert (svc.config.data_dir / "reconciler.lock").exists()


def test_a_tick_waits_for_another_process_holding_the_lock(env):
    """On SQLite the leader lease is a flock on the data dir's file: while another process holds
    it (here: the same lock taken through another open file) a one-off tick waits, not runs
    beside it, and runs as soon as the lease is let go."""
    import fcntl
    import threading

    svc, backend, clock = env
    with open(svc.config.data_dir / "reconciler.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        t = threading.Thread(target=Reconciler(svc).tick)
        t.start()
        t.join(0.3)
        assert t.is_alive() and backend.jobs_calls == 0
        fcntl.flock(fh, fcntl.LOCK_UN)
    t.join(10)
    assert not t.is_alive() and backend.jobs_calls == 1


def test_started_event_records_the_port_the_runner_moved_to(env):
    svc, backend, clock = env
    jid = make_job(svc, 11, state="pending")
    with svc.db.transaction() as s:
        s.get(Job, jid).port = 20000
    service.apply_event(svc, jid, {"event": "started", "port": 31337})
    assert (job(svc, jid).state, job(svc, jid).port) == ("running", 31337)
    service.apply_event(svc, jid, {"event": "started", "port": 80})       # out of range: ignored
    service.apply_event(svc, jid, {"event": "started", "port": "40000"})  # not an int: ignored
    assert job(svc, jid).port == 31337


# ------------------------------------------------------------ reservations whose post-receive was lost

from portal.jobs import push, recovery, submit  # noqa: E402
from tests.support.fakes import commit_to_bare, git, hook_payload  # noqa: E402

EP = {"slipway-entrypoint.sh": "echo hi\n"}
Z = "0" * 40


def _reserve(svc, tmp_path, branch="exp-1", move_ref=True, files=None):
    """What a push does up to its post-receive: objects in the repo, pre-receive reserves the
    job, git moves the branch (``move_ref``). The post-receive never comes."""
    bare = svc.config.repos_root / "nlp" / "proj.git"
    sha = commit_to_bare(bare, tmp_path / f"work-{branch}", files or EP, branch=branch)
    r = push.handle_pre_receive(svc, hook_payload(
        "pre-receive", "nlp/proj", "alice", [(f"refs/heads/{branch}", Z, sha)]))
    assert r.ok, r.messages
    if move_ref:
        git("--git-dir", str(bare), "update-ref", f"refs/heads/{branch}", sha)
    with svc.db.session() as s:
        jid = s.scalar(select(Job.id).where(Job.branch == branch, Job.commit_sha == sha))
    return jid, sha, bare


def test_lost_post_receive_is_submitted_after_the_grace(env, tmp_path):
    svc, backend, clock = env
    jid, sha, _ = _reserve(svc, tmp_path)
    clock.advance(seconds=10)                      # inside the grace: a post-receive may still come
    rep = Reconciler(svc).tick()
    assert job(svc, jid).state == "queued" and backend.submits == [] and rep.recovered == []
    clock.advance(seconds=21)                      # 31 s after the push: the hook is lost
    rep = Reconciler(svc).tick()
    assert rep.recovered == [jid] and (jid, "queued", "pending") in rep.changes
    [(slurm_id, req)] = backend.submits            # the same submission the hook makes
    j = job(svc, jid)
    assert (j.state, j.slurm_job_id, j.commit_sha) == ("pending", slurm_id, sha)
    assert j.reason == recovery.RECOVERED_NOTE and j.token_hash and j.port
    assert req.name == f"slipway-{jid}" and list(req.command[1:3]) == ["-m", "git_gateway.node.runner"]
    spec = json.loads((svc.config.jobs_dir / str(jid) / "spec.json").read_text())
    assert spec["commit"] == sha and spec["branch"] == "exp-1"
    # Slurm's queue reason is shown next to the note; once running, the note alone stays
    backend.set_queue(slurm_id, "PENDING", reason="Resources", name=req.name)
    clock.advance(seconds=5)
    Reconciler(svc).tick()
    assert job(svc, jid).reason == f"{recovery.RECOVERED_NOTE}; waiting: no node has the GPUs, cores or memory it needs free yet"
    backend.set_queue(slurm_id, "RUNNING", start=clock(), name=req.name)
    clock.advance(seconds=5)
    Reconciler(svc).tick()
    assert (job(svc, jid).state, job(svc, jid).reason) == ("running", recovery.RECOVERED_NOTE)
    # the post-receive arriving late submits nothing more, and says what became of the job
    late = push.handle_post_receive(svc, hook_payload(
        "post-receive", "nlp/proj", "alice", [("refs/heads/exp-1", Z, sha)]))
    assert late.messages == [f"slipway: job {jid} was already submitted (running, Slurm job "
                             f"{slurm_id})"] and len(backend.submits) == 1
    again = push.handle_post_receive(svc, hook_payload(   # (a repeat finds no reservation)
        "post-receive", "nlp/proj", "alice", [("refs/heads/exp-1", Z, sha)]))
    assert again.messages == [] and len(backend.submits) == 1
    assert submit.submit_job(svc, jid) == (
        False, f"slipway: job {jid} was already submitted (running, Slurm job {slurm_id})")


def test_reservation_whose_branch_never_moved_is_failed_at_once_and_the_branch_is_free(env, tmp_path):
    svc, backend, clock = env
    jid, sha, bare = _reserve(svc, tmp_path, move_ref=False)   # git did not update the ref
    other, _, _ = _reserve(svc, tmp_path, branch="exp-2", move_ref=False)
    # exp-2 exists, at another commit (a concurrent push won the ref)
    winner = commit_to_bare(bare, tmp_path / "winner", {**EP, "w": "1"}, branch="exp-2")
    git("--git-dir", str(bare), "update-ref", "refs/heads/exp-2", winner)
    clock.advance(seconds=31)
    rep = Reconciler(svc).tick()
    assert sorted(rep.abandoned) == sorted([jid, other]) and backend.submits == []
    for j, branch in ((jid, "exp-1"), (other, "exp-2")):
        assert job(svc, j).state == "failed"
        assert job(svc, j).reason == (f"the push did not complete: branch {branch} does not point at "
                                      f"{job(svc, j).commit_sha[:12]} (git did not update it, or the "
                                      f"push never finished); push again")
    # the branch takes the next push at once
    again = commit_to_bare(bare, tmp_path / "work-exp-1", {"again": "1"})
    r = push.handle_pre_receive(svc, hook_payload(
        "pre-receive", "nlp/proj", "alice", [("refs/heads/exp-1", Z, again)]))
    assert r.ok, r.messages


def test_lost_reservation_is_left_alone_when_the_poll_fails(env, tmp_path):
    svc, backend, clock = env
    jid, _, _ = _reserve(svc, tmp_path)
    backend.down = True
    clock.advance(seconds=400)
    rep = Reconciler(svc).tick()
    assert not rep.polled and rep.recovered == [] and job(svc, jid).state == "queued"
    assert backend.submits == []


def test_lost_reservation_slurm_already_has_is_adopted_not_submitted_again(env, tmp_path):
    svc, backend, clock = env
    jid, _, _ = _reserve(svc, tmp_path)
    backend.set_queue(88, "PENDING", account="team-nlp", name=f"slipway-{jid}")   # the submit reply was lost
    clock.advance(seconds=31)
    rep = Reconciler(svc).tick()
    assert (job(svc, jid).state, job(svc, jid).slurm_job_id) == ("pending", 88)
    assert backend.submits == [] and rep.recovered == []


def test_claimed_reservation_is_never_submitted_twice_and_is_unknown_after_stale_reservation(env, tmp_path):
    """A submission that claimed the job and then died (sbatch in flight when the server
    stopped): the orphan path never submits it; after ``stale_reservation`` it is ``unknown``
    (never failed: Slurm may have it), and only once two polls a grace apart found it in
    neither squeue nor sacct is it submitted again, once."""
    svc, backend, clock = env
    jid, _, _ = _reserve(svc, tmp_path)
    with svc.db.transaction() as s:
        assert submit.claim_for_submission(s, jid, "x" * 64)
    clock.advance(seconds=31)
    Reconciler(svc).tick()
    assert job(svc, jid).state == "queued" and backend.submits == []
    clock.advance(seconds=270)
    Reconciler(svc).tick()
    j = job(svc, jid)
    assert (j.state, j.previous_state, j.token_hash) == ("unknown", "queued", "x" * 64)
    assert "Slipway is finding out whether Slurm has the job" in j.reason
    assert backend.submits == []
    clock.advance(seconds=31)
    rep = Reconciler(svc).tick()
    assert rep.resubmitted == [jid] and len(backend.submits) == 1
    assert job(svc, jid).state == "pending"


def test_lost_reservation_whose_submission_fails_is_failed_with_slurms_reason(env, tmp_path):
    svc, backend, clock = env
    from slurm_bridge.errors import SlurmRejected
    jid, _, _ = _reserve(svc, tmp_path)
    backend.submit_error = SlurmRejected("Invalid qos specification",
                                         slurm_message="Invalid qos specification")
    clock.advance(seconds=31)
    rep = Reconciler(svc).tick()
    assert job(svc, jid).state == "failed" and "Invalid qos" in job(svc, jid).reason
    assert (jid, "queued", "failed") in rep.changes
    assert any("Invalid qos" in e for e in rep.errors), rep.errors


def test_orphan_grace_follows_the_configuration(env, tmp_path):
    svc, backend, clock = env
    svc.config.orphan_reservation_grace = 120
    jid, _, _ = _reserve(svc, tmp_path)
    clock.advance(seconds=60)
    Reconciler(svc).tick()
    assert job(svc, jid).state == "queued" and backend.submits == []
    clock.advance(seconds=61)
    Reconciler(svc).tick()
    assert job(svc, jid).state == "pending" and len(backend.submits) == 1


def test_busy_pace_ends_when_an_ended_job_never_settles(env):
    """sacct down or a record that never comes: the loop keeps its fast pace for a while after
    the job left the queue, then goes back to the normal interval (no squeue+sacct every second
    for ten minutes)."""
    from portal.jobs.reconciler import BUSY_AFTER_END_S

    svc, backend, clock = env
    jid = make_job(svc, 11, state="running")
    backend.set_queue(11, "RUNNING", start=clock())
    Reconciler(svc).tick()
    backend.queue.clear()
    assert Reconciler(svc).tick().busy is True
    clock.advance(seconds=BUSY_AFTER_END_S + 1)
    rep = Reconciler(svc).tick()
    assert rep.busy is False and job(svc, jid).state == "running"  # still waiting for sacct


def test_another_slipways_job_with_the_same_name_is_never_adopted(env, tmp_path):
    """Two Slipways on one cluster both have a job 'slipway-<n>': a reservation is adopted only
    by a Slurm job under its own team's account (each Slipway has its own account prefix)."""
    svc, backend, clock = env
    jid, _, _ = _reserve(svc, tmp_path)
    backend.set_queue(90, "PENDING", account="other-nlp", name=f"slipway-{jid}")
    Reconciler(svc).tick()
    assert (job(svc, jid).state, job(svc, jid).slurm_job_id) == ("queued", None)
    backend.set_queue(89, "PENDING", account="TEAM-NLP", name=f"slipway-{jid}")  # ours (any case)
    Reconciler(svc).tick()  # found beside the other one with the same name
    assert (job(svc, jid).state, job(svc, jid).slurm_job_id) == ("pending", 89)
