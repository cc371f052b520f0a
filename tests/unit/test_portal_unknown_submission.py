"""A submission whose outcome is unknown (sbatch had no answer, or the process died mid-sbatch)
is not a failure: the job is ``unknown`` until Slipway finds out from Slurm (squeue, then sacct
by name and account) and adopts it, bills it, or submits it again exactly once."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from portal.billing import ledger as billing
from portal.db import Job, LedgerEntry
from portal.jobs import push as hooks
from portal.jobs import service, submit, unknown
from portal.jobs.reconciler import Reconciler
from tests.support.fakes import Clock, FakeBackend, commit_to_bare, hook_payload, make_services, seed
from slurm_bridge.errors import ControllerUnavailable, SlurmRejected

EP = {"slipway-entrypoint.sh": "echo hi\n"}
Z = "0" * 40


@pytest.fixture
def env(tmp_path):
    backend, clock = FakeBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, stale_reservation=300,
                        lost_after=600, cancel_grace=60, storage_interval=10**9,
                        unknown_submission_grace=30)
    seed(svc)
    yield svc, backend, clock, tmp_path
    svc.db.dispose()


def push(svc, tmp_path, branch="exp-1", files=None):
    """A whole push: objects, pre-receive, the branch moves, post-receive. -> (job id, reply)."""
    from tests.support.fakes import git

    bare = svc.config.repos_root / "nlp" / "proj.git"
    sha = commit_to_bare(bare, tmp_path / f"work-{branch}", files or EP, branch=branch)
    upd = [(f"refs/heads/{branch}", Z, sha)]
    r = hooks.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice", upd))
    assert r.ok, r.messages
    git("--git-dir", str(bare), "update-ref", f"refs/heads/{branch}", sha)
    reply = hooks.handle_post_receive(svc, hook_payload("post-receive", "nlp/proj", "alice", upd))
    with svc.db.session() as s:
        jid = s.scalar(select(Job.id).where(Job.branch == branch, Job.commit_sha == sha))
    return jid, reply


def job(svc, jid) -> Job:
    with svc.db.session() as s:
        return s.get(Job, jid)


def unanswered_push(svc, backend, tmp_path, *, slurm_got_it=False, branch="exp-1"):
    if slurm_got_it:
        backend.lose_submit_reply = True
    else:
        backend.submit_error = ControllerUnavailable("Slurm did not answer within 10 s (sbatch)")
    jid, reply = push(svc, tmp_path, branch=branch)
    backend.lose_submit_reply, backend.submit_error = False, None
    return jid, reply


def test_timeout_makes_the_job_unknown_not_failed_and_the_reply_says_so(env):
    svc, backend, clock, tmp_path = env
    jid, reply = unanswered_push(svc, backend, tmp_path, slurm_got_it=True)
    assert reply.ok  # the hook exits 0: the branch moved, nothing failed
    [msg] = reply.messages
    assert f"job {jid} was handed to Slurm, but Slurm did not answer" in msg
    assert "not known yet" in msg and f"slipway job show {jid}" in msg
    assert "queued (" not in msg and "failed" not in msg and "could not be submitted" not in msg
    j = job(svc, jid)
    assert (j.state, j.previous_state, j.slurm_job_id) == ("unknown", "queued", None)
    assert j.reason.startswith("submitted, but Slurm did not answer")
    assert "Slipway is finding out whether Slurm has the job" in j.reason
    assert j.submitted_at == clock() and j.token_hash  # the runner's token stays valid
    # the branch stays busy: a second push is refused while the first one's fate is unknown
    bare = svc.config.repos_root / "nlp" / "proj.git"
    sha2 = commit_to_bare(bare, tmp_path / "work-exp-1", {"b": "2"})
    r = hooks.handle_pre_receive(svc, hook_payload(
        "pre-receive", "nlp/proj", "alice", [("refs/heads/exp-1", Z, sha2)]))
    assert not r.ok and f"already has job {jid} unknown" in r.messages[0]


def test_a_definite_refusal_still_fails_at_once(env):
    svc, backend, clock, tmp_path = env
    backend.submit_error = SlurmRejected("Invalid generic resource (gres) specification",
                                         slurm_message="Invalid gres")
    jid, reply = push(svc, tmp_path)
    assert not reply.ok and "could not be submitted" in reply.messages[0]
    assert job(svc, jid).state == "failed"
    assert job(svc, jid).reason.startswith("submission failed: Invalid generic resource")


def test_adopted_from_squeue_and_followed(env):
    svc, backend, clock, tmp_path = env
    jid, _ = unanswered_push(svc, backend, tmp_path, slurm_got_it=True)
    [(slurm_id, req)] = backend.submits
    # the runner's event before Slipway found the job: recorded, no state without a Slurm id
    assert service.apply_event(svc, jid, {"event": "started", "port": 12345}) == "recorded"
    assert job(svc, jid).state == "unknown"
    backend.down = True  # a failed poll decides nothing
    clock.advance(seconds=5)
    rep = Reconciler(svc).tick()
    assert job(svc, jid).state == "unknown" and rep.adopted == [] and backend.name_lookups == []
    backend.down = False
    backend.set_queue(slurm_id, "RUNNING", start=clock(), name=req.name, account="team-nlp")
    clock.advance(seconds=5)
    rep = Reconciler(svc).tick()
    j = job(svc, jid)
    assert rep.adopted == [jid] and (j.state, j.slurm_job_id) == ("running", slurm_id)
    assert j.reason is None and j.previous_state is None and j.port == 12345
    assert len(backend.submits) == 1  # never submitted again


def test_ended_while_unknown_is_adopted_from_sacct_and_billed(env):
    svc, backend, clock, tmp_path = env
    jid, _ = unanswered_push(svc, backend, tmp_path, slurm_got_it=True)
    [(slurm_id, req)] = backend.submits
    start = clock() + timedelta(seconds=2)
    clock.advance(minutes=12)
    # Slurm ran it for 10 minutes while nobody knew; it has left the queue
    backend.finish(slurm_id, "COMPLETED", start=start, end=start + timedelta(minutes=10),
                   name=req.name, account="team-nlp", gpus={"a4000": 1})
    backend.finish(999, "COMPLETED", start=start, end=start + timedelta(minutes=1),
                   name=req.name, account="other-nlp")  # another Slipway's job of that name
    rep = Reconciler(svc).tick()
    assert rep.adopted == [jid] and rep.busy
    [(lo, hi, names)] = backend.name_lookups
    assert names == (f"slipway-{jid}",) and hi == clock() and lo < job(svc, jid).submitted_at
    assert job(svc, jid).slurm_job_id == slurm_id
    rep = Reconciler(svc).tick()  # the ordinary ended-job path: sacct by id, bill, finish
    j = job(svc, jid)
    assert (j.state, j.exit_code) == ("succeeded", 0)
    assert j.reason == unknown.FOUND_NOTE.format(slurm_id=slurm_id)
    with svc.db.session() as s:
        charges = list(s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "gpu")))
    assert [c.idempotency_key for c in charges] == [f"gpu:{jid}:0:0"]
    assert billing.from_micros(-sum(c.amount_micros for c in charges)) == Decimal("0.083333")
    assert j.cost == Decimal("0.083333") and len(backend.submits) == 1


def test_absent_from_two_polls_a_grace_apart_is_resubmitted_exactly_once(env):
    svc, backend, clock, tmp_path = env
    jid, _ = unanswered_push(svc, backend, tmp_path, slurm_got_it=False)
    old_hash = job(svc, jid).token_hash
    rep = Reconciler(svc).tick()          # first absent poll: remembered, nothing done
    assert rep.resubmitted == [] and backend.submits == []
    clock.advance(seconds=20)
    backend.accounting_down = True        # sacct not answering: not "absent"
    rep = Reconciler(svc).tick()
    assert any("submission had no answer" in e for e in rep.errors) and backend.submits == []
    backend.accounting_down = False
    rep = Reconciler(svc).tick()          # 20 s after the first absence: within the grace
    assert backend.submits == [] and job(svc, jid).state == "unknown"
    clock.advance(seconds=11)
    rep = Reconciler(svc).tick()
    assert rep.resubmitted == [jid] and (jid, "unknown", "pending") in rep.changes
    [(slurm_id, req)] = backend.submits
    j = job(svc, jid)
    assert (j.state, j.slurm_job_id, j.reason) == ("pending", slurm_id, unknown.RESUBMITTED_NOTE)
    assert j.token_hash != old_hash and req.name == f"slipway-{jid}"
    # a second reconciler, a late post-receive, a stale claim: nothing more is submitted
    clock.advance(seconds=60)
    backend.set_queue(slurm_id, "PENDING", name=req.name, account="team-nlp")
    Reconciler(svc).tick()
    Reconciler(svc).tick()
    assert submit.resubmit_unknown(svc, jid, old_hash, note="x")[0] is False
    assert submit.submit_job(svc, jid)[0] is False
    assert len(backend.submits) == 1


def test_resubmission_claim_is_atomic(env):
    svc, backend, clock, tmp_path = env
    jid, _ = unanswered_push(svc, backend, tmp_path)
    old = job(svc, jid).token_hash
    with svc.db.transaction() as s:
        assert submit.claim_for_resubmission(s, jid, old, "n" * 64)
    with svc.db.transaction() as s:
        assert not submit.claim_for_resubmission(s, jid, old, "m" * 64)
    assert job(svc, jid).token_hash == "n" * 64


def test_resubmission_without_an_answer_stays_unknown_and_looks_again(env):
    svc, backend, clock, tmp_path = env
    jid, _ = unanswered_push(svc, backend, tmp_path)
    Reconciler(svc).tick()
    clock.advance(seconds=31)
    backend.submit_error = ControllerUnavailable("Slurm did not answer (sbatch)")
    rep = Reconciler(svc).tick()
    assert rep.resubmitted == [] and job(svc, jid).state == "unknown"
    assert job(svc, jid).submitted_at == clock()  # a fresh search window


def test_cancel_while_unknown_and_never_found_ends_cancelled_without_resubmission(env):
    svc, backend, clock, tmp_path = env
    jid, _ = unanswered_push(svc, backend, tmp_path)
    res = service.request_cancel(svc, jid, by="alice")
    assert res.state == "unknown" and "once found" in res.message
    assert job(svc, jid).state == "unknown"
    Reconciler(svc).tick()
    clock.advance(seconds=31)
    rep = Reconciler(svc).tick()
    j = job(svc, jid)
    assert (j.state, j.reason) == ("cancelled", "cancelled by alice")
    assert (jid, "unknown", "cancelled") in rep.changes and backend.submits == []


def test_cancel_while_unknown_takes_effect_once_adopted(env):
    svc, backend, clock, tmp_path = env
    jid, _ = unanswered_push(svc, backend, tmp_path, slurm_got_it=True)
    [(slurm_id, req)] = backend.submits
    service.request_cancel(svc, jid, by="alice")
    assert backend.cancels == []  # nothing to cancel yet: no Slurm id
    backend.set_queue(slurm_id, "PENDING", name=req.name, account="team-nlp")
    rep = Reconciler(svc).tick()
    assert rep.adopted == [jid] and rep.cancels == [jid]
    assert (slurm_id, None, False) in backend.cancels  # not started: a plain scancel
    backend.finish(slurm_id, "CANCELLED", start=clock(), end=clock(), name=req.name,
                   account="team-nlp")
    clock.advance(seconds=5)
    Reconciler(svc).tick()
    assert (job(svc, jid).state, job(svc, jid).reason) == ("cancelled", "cancelled by alice")


def test_cut_off_sees_an_unknown_job(env):
    svc, backend, clock, tmp_path = env
    jid, _ = unanswered_push(svc, backend, tmp_path, slurm_got_it=True)
    [(slurm_id, req)] = backend.submits
    with svc.db.transaction() as s:  # the team is at $0
        s.add(LedgerEntry(team_id=1, kind="adjustment", amount_micros=-25_000_000,
                          idempotency_key="adj", created_by="t", created_at=clock()))
    rep = Reconciler(svc).tick()
    assert rep.cut_off == ["nlp"] and rep.cancels == [jid]
    assert "team nlp" in job(svc, jid).cancel_reason
    backend.set_queue(slurm_id, "RUNNING", start=clock(), name=req.name, account="team-nlp")
    clock.advance(seconds=5)
    Reconciler(svc).tick()  # adopted: the cut-off's cancel reaches Slurm (TERM: files pushed)
    assert (slurm_id, "TERM", True) in backend.cancels


def test_process_died_mid_sbatch_goes_the_same_way_and_is_adopted(env):
    """Claimed (sbatch started) but no Slurm id and no answer recorded: after
    ``stale_reservation`` the job is unknown, not failed, and found in Slurm's accounting."""
    svc, backend, clock, tmp_path = env
    backend.submit_error = RuntimeError("never reached")  # no post-receive in this test
    from tests.support.fakes import git

    bare = svc.config.repos_root / "nlp" / "proj.git"
    sha = commit_to_bare(bare, tmp_path / "w", EP)
    upd = [("refs/heads/exp-1", Z, sha)]
    assert hooks.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice", upd)).ok
    git("--git-dir", str(bare), "update-ref", "refs/heads/exp-1", sha)
    with svc.db.session() as s:
        jid = s.scalar(select(Job.id))
    with svc.db.transaction() as s:  # the hook claimed it, then the server died in sbatch
        assert submit.claim_for_submission(s, jid, "t" * 64)
    start = clock() + timedelta(seconds=1)
    clock.advance(seconds=301)
    backend.finish(4242, "FAILED", start=start, end=start + timedelta(seconds=90), exit_code=3,
                   name=f"slipway-{jid}", account="team-nlp")
    rep = Reconciler(svc).tick()
    assert (jid, "queued", "unknown") in rep.changes and rep.adopted == [jid]
    assert (job(svc, jid).state, job(svc, jid).slurm_job_id) == ("unknown", 4242)
    clock.advance(seconds=5)
    Reconciler(svc).tick()
    j = job(svc, jid)
    assert (j.state, j.exit_code, j.reason) == ("failed", 3, "exit code 3")
    assert j.cost == Decimal("0.016667") and backend.submits == []  # 2 started minutes at $0.50/h


def test_lost_reservation_submitted_by_the_reconciler_without_an_answer_is_unknown(env):
    svc, backend, clock, tmp_path = env
    from tests.support.fakes import git

    bare = svc.config.repos_root / "nlp" / "proj.git"
    sha = commit_to_bare(bare, tmp_path / "w", EP)
    upd = [("refs/heads/exp-1", Z, sha)]
    assert hooks.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice", upd)).ok
    git("--git-dir", str(bare), "update-ref", "refs/heads/exp-1", sha)
    backend.submit_error = ControllerUnavailable("no answer")
    clock.advance(seconds=31)
    rep = Reconciler(svc).tick()
    with svc.db.session() as s:
        jid = s.scalar(select(Job.id))
    assert job(svc, jid).state == "unknown" and rep.recovered == [] and rep.abandoned == []
    assert (jid, "queued", "unknown") in rep.changes


def test_a_pending_job_slurm_lost_in_a_failover_is_submitted_again_not_failed(env):
    """The primary slurmctld died within its state-save interval of the submission: the backup
    took over without the job (docs/FAULTS.md §3) and gives its id to the next job. The lost
    job is found lost (in neither the queue nor accounting's ended jobs), never follows the
    job that got its id, and is submitted again."""
    import dataclasses

    svc, backend, clock, tmp_path = env
    jid, reply = push(svc, tmp_path)
    assert reply.ok
    [(lost_id, req)] = backend.submits
    backend.set_queue(lost_id, "PENDING", reason="Priority", name=req.name, account="team-nlp")
    Reconciler(svc).tick()
    assert job(svc, jid).state == "pending"
    backend.down = True                                   # the failover
    clock.advance(seconds=5)
    Reconciler(svc).tick()
    assert job(svc, jid).state == "unknown"
    backend.down = False                                  # the backup answers, without the job:
    backend.set_queue(lost_id, "RUNNING", start=clock(), gpus={"a4000": 1},   # its id reused
                      name=f"slipway-{jid + 100}", account="team-other")
    backend.finish(lost_id, "RUNNING", start=clock(), end=clock(), name=f"slipway-{jid + 100}",
                   account="team-other")
    stale = dataclasses.replace(backend.acct[-1], state="PENDING", start=None, end=None,
                                elapsed_s=0, name=req.name, account="team-nlp", node="")
    backend.acct.append(stale)                            # slurmdbd's record of the lost one
    clock.advance(seconds=5)
    rep = Reconciler(svc).tick()
    j = job(svc, jid)
    assert j.state == "unknown" and j.slurm_job_id == lost_id and rep.lost == []  # too soon
    clock.advance(seconds=31)
    rep = Reconciler(svc).tick()
    j = job(svc, jid)
    assert rep.lost == [jid] and (j.state, j.previous_state, j.slurm_job_id) == \
        ("unknown", "pending", None)
    assert j.reason.startswith(f"Slurm lost the job before it started (Slurm job {lost_id}")
    assert j.started_at is None and backend.submits == [(lost_id, req)]
    clock.advance(seconds=31)                              # the unknown path's grace
    rep = Reconciler(svc).tick()
    assert rep.resubmitted == [jid]
    [_, (new_id, req2)] = backend.submits
    j = job(svc, jid)
    assert (j.state, j.slurm_job_id) == ("pending", new_id) and new_id != lost_id
    assert j.reason == unknown.LOST_RESUBMITTED_NOTE.format(slurm_id=lost_id)
    assert req2.name == f"slipway-{jid}"
    with svc.db.session() as s:   # never billed for the job that got its id
        assert not s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "usage")).all()
    backend.set_queue(new_id, "PENDING", reason="Resources", name=req2.name, account="team-nlp")
    clock.advance(seconds=60)
    Reconciler(svc).tick()
    assert len(backend.submits) == 2 and job(svc, jid).state == "pending"
    # the job page keeps saying why, beside Slurm's reason for the wait
    assert job(svc, jid).reason.startswith(unknown.LOST_RESUBMITTED_NOTE.format(slurm_id=lost_id))


def test_a_pending_job_cancelled_in_slurm_is_not_taken_for_lost(env):
    """Gone from the queue, but accounting says it ended (an administrator's scancel): it ends
    as Slurm says; and a job the user cancelled ends cancelled, never submitted again."""
    svc, backend, clock, tmp_path = env
    jid, _ = push(svc, tmp_path)
    jid2, _ = push(svc, tmp_path, branch="exp-2")
    [(s1, r1), (s2, r2)] = backend.submits
    backend.set_queue(s1, "PENDING", name=r1.name, account="team-nlp")
    backend.set_queue(s2, "PENDING", name=r2.name, account="team-nlp")
    Reconciler(svc).tick()
    service.request_cancel(svc, jid2, by="alice")
    del backend.queue[s1], backend.queue[s2]
    backend.finish(s1, "CANCELLED", start=clock(), end=clock(), exit_code=None, name=r1.name,
                   account="team-nlp", node="")
    clock.advance(seconds=120)
    for _ in range(3):
        rep = Reconciler(svc).tick()
        assert rep.lost == [] and rep.resubmitted == []
        clock.advance(seconds=40)
    assert job(svc, jid).state == "cancelled" and job(svc, jid2).state == "cancelled"
    assert len(backend.submits) == 2
