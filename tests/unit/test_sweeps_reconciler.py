"""A sweep's life in the reconciler (issue 14, docs/SHARING.md): squeue's array records → each
task's state; tasks that left the queue → sacct per task, billed per task as ``<job>_<task>``;
the sweep's state follows its tasks; once all ended ONE commit merges their results onto the
branch; cancel takes the waiting tasks out and stops the running ones."""
from __future__ import annotations


import pytest
from sqlalchemy import select

from portal.db import Job, JobPart, LedgerEntry
from portal.jobs import actions, push
from portal.jobs.reconciler import Reconciler
from portal.teams.access import Actor, OpError
from tests.support.fakes import Clock, FakeBackend, commit_to_bare, git, hook_payload, \
    make_services, seed

Z = "0" * 40


@pytest.fixture
def world(tmp_path):
    backend, clock = FakeBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock)
    ids = seed(svc)
    bare = svc.config.repos_root / "nlp" / "proj.git"
    sha = commit_to_bare(bare, tmp_path / "work", {"slipway-entrypoint.sh": "echo hi\n",
                                                    "keep.txt": "base\n"}, branch="sweep-1")
    upd = [("refs/heads/sweep-1", Z, sha)]
    opts = ["sweep=a=1,2,3", "max-parallel=2"]
    assert push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice", upd, opts)).ok
    git("--git-dir", str(bare), "update-ref", "refs/heads/sweep-1", sha)
    assert push.handle_post_receive(svc, hook_payload("post-receive", "nlp/proj", "alice", upd)).ok
    with svc.db.session() as s:
        job = s.scalars(select(Job)).one()
        job_id, array_id = job.id, job.slurm_job_id
    yield svc, backend, clock, job_id, array_id, bare, sha, tmp_path, ids
    svc.db.dispose()


def _state(svc, job_id):
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        tasks = list(s.scalars(select(JobPart).where(JobPart.job_id == job_id).order_by(JobPart.index)))
        return job.state, job.reason, [t.state for t in tasks], job


def _task_result(bare, tmp, branch, job_id, i, base, files):
    work = tmp / f"task-{i}"
    git("clone", "-q", str(bare), str(work))
    git("checkout", "-q", base, cwd=work)
    for name, text in files.items():
        (work / name).write_text(text)
    git("add", "-A", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", f"task {i}", cwd=work)
    new = git("rev-parse", "HEAD", cwd=work)
    git("push", "-q", str(bare), f"HEAD:refs/heads/results/{branch}/{job_id}/{i}", cwd=work)
    return new


def test_a_throttled_sweep_runs_its_tasks_bills_each_and_merges_their_results(world):
    svc, backend, clock, job_id, aid, bare, base, tmp, _ids = world
    rec = Reconciler(svc)
    name = f"slipway-{job_id}"
    backend.set_pending_tasks(aid, "0-2%2", name=name)
    rec.tick()
    assert _state(svc, job_id)[0] == "pending"

    t0 = clock.advance(seconds=10)
    backend.set_task_queue(aid, 0, "RUNNING", start=t0, name=name, gpus={"a4000": 1})
    backend.set_task_queue(aid, 1, "RUNNING", start=t0, name=name, node="a4k-2", gpus={"a4000": 1})
    backend.set_pending_tasks(aid, "2%2", name=name)
    clock.advance(minutes=3)
    rec.tick()
    state, reason, tasks, _ = _state(svc, job_id)
    assert state == "running" and tasks == ["running", "running", "pending"]
    assert reason == "sweep: 2 running, 1 pending (of 3 tasks)"

    t1 = clock.advance(minutes=7)
    backend.finish_task(aid, 0, "COMPLETED", start=t0, end=t1, name=name)
    backend.set_task_queue(aid, 2, "RUNNING", start=t1, name=name, gpus={"a4000": 1})
    backend.set_pending_tasks(aid, "")
    clock.advance(seconds=5)
    rec.tick()
    state, reason, tasks, _ = _state(svc, job_id)
    assert state == "running" and tasks == ["succeeded", "running", "running"]

    _task_result(bare, tmp, "sweep-1", job_id, 0, base, {"out.txt": "zero\n"})
    _task_result(bare, tmp, "sweep-1", job_id, 2, base, {"out.txt": "two\n", "keep.txt": "x\n"})
    t2 = clock.advance(minutes=5)
    backend.finish_task(aid, 1, "FAILED", start=t0, end=t2, exit_code=3, name=name)
    backend.finish_task(aid, 2, "COMPLETED", start=t1, end=t2, name=name)
    clock.advance(seconds=5)
    rec.tick()
    state, reason, tasks, job = _state(svc, job_id)
    assert tasks == ["succeeded", "failed", "succeeded"]
    assert state == "failed" and reason == "1 of 3 tasks failed (task 1)"
    # billed per task from sacct, by the started minute: 10 min, 15 min 5 s and 5 min 5 s of
    # one a4000 at $0.50/h
    with svc.db.session() as s:
        rows = s.execute(select(LedgerEntry.resource, LedgerEntry.amount_micros)
                         .where(LedgerEntry.job_id == job_id)).all()
        per_task: dict[str, int] = {}
        for res, micros in rows:
            per_task[res] = per_task.get(res, 0) - micros
        parts = {p.index: p.cost_micros for p in s.scalars(select(JobPart).where(JobPart.job_id == job_id))}
    cost = lambda minutes: round(500_000 * minutes / 60)  # noqa: E731
    assert per_task == {f"{job_id}_0": cost(10), f"{job_id}_1": cost(16),
                        f"{job_id}_2": cost(6)}, per_task
    assert parts == {0: per_task[f"{job_id}_0"], 1: per_task[f"{job_id}_1"], 2: per_task[f"{job_id}_2"]}
    assert job.cost_micros == sum(per_task.values())
    # ONE commit merged the tasks' files under their own folders; the branch's own file stays
    assert job.results_sha and job.branch_updated
    tip = git("--git-dir", str(bare), "rev-parse", "refs/heads/sweep-1")
    assert tip == job.results_sha
    show = lambda path: git("--git-dir", str(bare), "show", f"{tip}:{path}")  # noqa: E731
    assert show(f"sweep-{job_id}/task-0/out.txt") == "zero"
    assert show(f"sweep-{job_id}/task-2/out.txt") == "two"
    assert show(f"sweep-{job_id}/task-2/keep.txt") == "x" and show("keep.txt") == "base"
    rec.tick()   # nothing more: the merge is done once
    assert git("--git-dir", str(bare), "rev-parse", "refs/heads/sweep-1") == tip


def test_cancelling_a_sweep_takes_out_waiting_tasks_and_stops_running_ones(world):
    svc, backend, clock, job_id, aid, *_rest, ids = world
    name = f"slipway-{job_id}"
    t0 = clock.advance(seconds=10)
    backend.set_task_queue(aid, 0, "RUNNING", start=t0, name=name)
    backend.set_pending_tasks(aid, "1-2%2", name=name)
    Reconciler(svc).tick()
    alice = Actor(id=ids["user_id"], name="alice", is_cluster_admin=False)
    r = actions.cancel_job(svc, alice, job_id)
    assert "2 waiting task(s) cancelled" in r.message
    assert sorted(backend.task_cancels) == [(aid, 1, None), (aid, 2, None)]
    assert backend.cancels == [(aid, "TERM", True)]
    t1 = clock.advance(minutes=2)
    backend.finish_task(aid, 0, "CANCELLED", start=t0, end=t1, name=name)
    backend.set_pending_tasks(aid, "")
    # tasks cancelled while waiting never ran: sacct has no record of them (only the array's
    # "123_[1-2]" line, which is not an attempt), and they are not billed
    clock.advance(seconds=5)
    Reconciler(svc).tick()
    state, reason, tasks, _ = _state(svc, job_id)
    assert state == "cancelled" and tasks == ["cancelled"] * 3, (state, reason, tasks)
    with svc.db.session() as s:
        billed = {r for r in s.scalars(select(LedgerEntry.resource).where(LedgerEntry.job_id == job_id))}
    assert billed == {f"{job_id}_0"}   # only the task that ran


def test_one_task_is_cancelled_alone_and_bad_task_numbers_are_refused(world):
    svc, backend, clock, job_id, aid, *_rest, ids = world
    name = f"slipway-{job_id}"
    backend.set_task_queue(aid, 0, "RUNNING", start=clock.advance(seconds=5), name=name)
    backend.set_pending_tasks(aid, "1-2%2", name=name)
    Reconciler(svc).tick()
    alice = Actor(id=ids["user_id"], name="alice", is_cluster_admin=False)
    r = actions.cancel_job(svc, alice, job_id, task=0)
    assert "task 0 is stopping" in r.message and backend.task_cancels == [(aid, 0, "TERM")]
    assert backend.cancels == []
    with pytest.raises(OpError, match="has tasks 0..2, not 7"):
        actions.cancel_job(svc, alice, job_id, task=7)
    bob_ids = seed(svc, team="other", user="bob", project="p2")
    bob = Actor(id=bob_ids["user_id"], name="bob", is_cluster_admin=False)
    with pytest.raises(Exception) as e:
        actions.cancel_job(svc, bob, job_id, task=1)
    assert "no job" in str(e.value) or "may not" in str(e.value)
    assert backend.task_cancels == [(aid, 0, "TERM")]


def test_at_zero_the_cut_off_stops_the_whole_sweep_as_one_job(world):
    svc, backend, clock, job_id, aid, *_rest = world
    name = f"slipway-{job_id}"
    t0 = clock.advance(seconds=5)
    backend.set_task_queue(aid, 0, "RUNNING", start=t0, name=name, gpus={"a4000": 1})
    backend.set_task_queue(aid, 1, "RUNNING", start=t0, name=name, gpus={"a4000": 1})
    backend.set_pending_tasks(aid, "2%2", name=name)
    Reconciler(svc).tick()
    clock.advance(hours=26)   # 2 tasks × 26 h × $0.50/h = $26 > the team's $25
    report = Reconciler(svc).tick()
    assert report.cut_off == ["nlp"] and report.cancels == [job_id], report
    assert backend.task_cancels == [(aid, 2, None)]          # the waiting task goes at once
    assert backend.cancels == [(aid, "TERM", True)]          # the running ones push their files
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        assert job.cancel_requested and "team nlp has -$1.00" in (job.cancel_reason or "")
