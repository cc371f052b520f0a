"""Push to run: pre-receive validation/reservation and post-receive submission."""
from __future__ import annotations

import json
import stat
import threading
import time

import pytest
from sqlalchemy import select

from portal.db import Job, LedgerEntry
from portal.jobs import push, push_options, runner_spec, submit
from tests.support.fakes import FakeBackend, commit_to_bare, hook_payload, make_services, seed

EP = {"slipway-entrypoint.sh": "echo hi\n"}
Z = "0" * 40


@pytest.fixture
def env(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    seed(svc)
    bare = svc.config.repos_root / "nlp" / "proj.git"
    yield svc, backend, bare, tmp_path / "work"
    svc.db.dispose()


def pre(svc, sha, branch="exp-1", pusher="alice", options=None, repo="nlp/proj", **kw):
    return push.handle_pre_receive(svc, hook_payload(
        "pre-receive", repo, pusher, [(f"refs/heads/{branch}", Z, sha)], options, **kw))


def post(svc, sha, branch="exp-1", pusher="alice"):
    return push.handle_post_receive(svc, hook_payload(
        "post-receive", "nlp/proj", pusher, [(f"refs/heads/{branch}", Z, sha)]))


def jobs(svc):
    with svc.db.session() as s:
        return list(s.scalars(select(Job).order_by(Job.id)))


def test_push_reserves_then_submits(env):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, EP)
    r = pre(svc, sha)
    assert r.ok, r.messages
    [job] = jobs(svc)
    assert (job.state, job.branch, job.commit_sha, job.gpu_type, job.gpu_count) == ("queued", "exp-1", sha, "a4000", 1)

    r = post(svc, sha)
    assert r.ok and r.messages == [f"slipway: job {job.id} queued (a4000 x1)"]
    [job] = jobs(svc)
    assert job.state == "pending" and job.slurm_job_id == backend.submits[0][0]
    assert 10000 <= job.port <= 65535 and job.token_hash and job.submitted_at
    _, req = backend.submits[0]
    assert req.account == "team-nlp" and req.qos == "normal" and req.requeue and req.comment == "slipway"
    assert req.gpus.gres == "gpu:a4000:1" and req.time_limit_min == 60
    assert req.output.endswith(f"/jobs/{job.id}/output.log")
    assert list(req.command[1:3]) == ["-m", "git_gateway.node.runner"]
    spec_path = req.command[3]
    assert stat.S_IMODE((svc.config.jobs_dir / str(job.id) / "spec.json").stat().st_mode) == 0o600
    spec = json.loads(open(spec_path).read())
    assert spec["job_id"] == job.id and spec["commit"] == sha and spec["branch"] == "exp-1"
    assert spec["username"] == f"job:{job.id}" and spec["env"]["PORT"] == str(job.port)
    assert spec["repo_url"] == "http://127.0.0.1:8000/git/nlp/proj.git"
    assert spec["callback_url"].endswith(f"/internal/jobs/{job.id}/events")
    assert runner_spec.hash_token(spec["token"]) == job.token_hash
    assert spec["container_argv"][0].endswith("ch-run") and spec["workdir"].endswith("/work")


def test_push_options_override_project_settings(env):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha, options=["gpus=a6000:2", "time=2h", "image=busybox"]).ok
    [job] = jobs(svc)
    assert (job.gpu_type, job.gpu_count, job.time_limit_min, job.image) == ("a6000", 2, 120, "busybox")


@pytest.mark.parametrize("text,minutes", [("90", 90), ("30m", 30), ("2h", 120), ("1h30m", 90)])
def test_parse_time(text, minutes):
    assert push_options.parse_time(text) == minutes


@pytest.mark.parametrize("options,needle", [
    (["colour=blue"], "unknown push option 'colour=blue'"),
    (["gpus=a4000:9", "strict=yes"], "asked a4000 x9; nodes have at most 4 (strict=yes: refused)"),
    (["strict=maybe"], "write strict=yes or strict=no"),
    (["emergency=yes"], "emergency=yes needs the emergency right"),
    (["compute=nope"], "unknown compute type 'nope'; no compute types are defined yet"),
    (["gpus=h100:1"], "unknown GPU type 'h100'"),
    (["gpus=lots"], "unknown GPU type 'lots'"),
    (["gpus=a4000:two"], "cannot read GPU request"),
    (["time=soon"], "cannot read time 'soon'"),
    (["image=nope"], "unknown image 'nope'"),
    (["time"], "needs a value"),
])
def test_bad_push_options_refused_and_nothing_reserved(env, options, needle):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, EP)
    r = pre(svc, sha, options=options)
    assert not r.ok
    assert any(needle in m for m in r.messages), r.messages
    assert r.messages[-1] == "slipway: push refused; nothing was started"
    assert jobs(svc) == []


def test_refusals(env):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, EP)
    r = pre(svc, sha, repo="nlp/ghost")
    assert not r.ok and "there is no project 'nlp/ghost'" in r.messages[0]
    r = pre(svc, sha, pusher="mallory")
    assert not r.ok and "unknown user 'mallory'" in r.messages[0]
    bad = commit_to_bare(bare, tmp := work.parent / "w2", {"README": "x"})
    r = pre(svc, bad)
    assert not r.ok and any("slipway-entrypoint.sh is missing" in m for m in r.messages)
    assert jobs(svc) == []


def test_non_member_refused(env):
    svc, backend, bare, work = env
    from portal.db import User
    with svc.db.transaction() as s:
        s.add(User(name="bob", unix_user="bob", created_at=svc.now()))
    sha = commit_to_bare(bare, work, EP)
    r = pre(svc, sha, pusher="bob")
    assert not r.ok and "bob is not a member of team nlp" in r.messages[0]


def test_low_balance_refused(env):
    svc, backend, bare, work = env
    with svc.db.transaction() as s:
        s.add(LedgerEntry(team_id=1, kind="adjustment", amount_micros=-24_500_000,
                          idempotency_key="adj", created_by="t", created_at=svc.now()))
    sha = commit_to_bare(bare, work, EP)
    r = pre(svc, sha)
    assert not r.ok
    assert any("Team nlp has $0.50; jobs need at least $1.00 to start" in m for m in r.messages), r.messages


def test_busy_branch_message_and_parallel_branches(env):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha).ok
    post(svc, sha)
    [job] = jobs(svc)
    sha2 = commit_to_bare(bare, work, {"x": "2"})
    r = pre(svc, sha2)
    assert not r.ok
    assert (f"slipway: branch exp-1 already has job {job.id} pending; wait for it or cancel it: "
            f"slipway job cancel {job.id}") in r.messages
    assert pre(svc, sha2, branch="exp-2").ok  # another branch runs in parallel


def test_multi_branch_push_is_all_or_nothing(env):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha, branch="a").ok
    r = push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice", [
        ("refs/heads/b", Z, sha), ("refs/heads/a", Z, sha)]))
    assert not r.ok
    assert [j.branch for j in jobs(svc)] == ["a"]


def test_ignored_refs_and_job_pushes(env):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, EP)
    for ref, old, new in [("refs/tags/v1", Z, sha), ("refs/heads/exp-1", sha, Z),
                          ("refs/heads/results/exp-1/4", sha, Z)]:   # deletes are the user's
        r = push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice",
                                                        [(ref, old, new)]))
        assert r.ok and r.messages == [], (ref, r.messages)
    assert jobs(svc) == []
    assert pre(svc, sha).ok and post(svc, sha).ok
    [job] = jobs(svc)
    me = f"job:{job.id}"
    # the job's own commit-back: its branch and its results ref, and nothing starts
    assert pre(svc, sha, pusher=me, is_job=True).ok
    assert pre(svc, sha, branch=f"results/exp-1/{job.id}", pusher=me, is_job=True).ok
    assert push.handle_post_receive(svc, hook_payload(
        "post-receive", "nlp/proj", me, [("refs/heads/exp-1", Z, sha)], is_job=True)).messages == []
    assert len(jobs(svc)) == 1
    # ... and nothing else: the job token is readable by the job's own code
    for branch in ("main", "exp-2", f"results/exp-1/{job.id + 1}", "results/other/1"):
        r = pre(svc, sha, branch=branch, pusher=me, is_job=True)
        assert not r.ok and f"job {job.id} may push only to results/exp-1/{job.id} and exp-1" in \
            r.messages[0], (branch, r.messages)
    r = push.handle_pre_receive(svc, hook_payload(
        "pre-receive", "nlp/proj", me, [("refs/heads/exp-1", sha, Z)], is_job=True))
    assert not r.ok  # no deletes
    assert not pre(svc, sha, pusher="job:999", is_job=True).ok  # no such job


@pytest.mark.parametrize("branch", ["results", "results/exp-1", "results/exp-1/7", "results/a/b/c"])
def test_results_namespace_is_reserved_for_slipway(env, branch):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, EP)
    for old in (Z, sha):                          # creating or moving
        r = pre(svc, sha, branch=branch) if old == Z else push.handle_pre_receive(
            svc, hook_payload("pre-receive", "nlp/proj", "alice",
                              [(f"refs/heads/{branch}", old, sha)]))
        assert not r.ok, r.messages
        assert f"slipway: {branch}: branch names 'results' and 'results/...' are reserved" \
            in r.messages[0], r.messages
        assert "deleting a results branch is allowed" in r.messages[0]
    # also with run=no, and alongside an ordinary branch (all or nothing)
    assert not pre(svc, sha, branch=branch, options=["run=no"]).ok
    r = push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice", [
        ("refs/heads/exp-1", Z, sha), (f"refs/heads/{branch}", Z, sha)]))
    assert not r.ok and "reserved" in r.messages[0]
    assert jobs(svc) == []
    # names that only look alike are ordinary branches
    assert pre(svc, sha, branch="results-2").ok
    assert pre(svc, sha, branch="my/results/x").ok


def test_image_without_a_build_for_the_runtime_is_refused_before_the_branch_moves(env):
    svc, backend, bare, work = env
    assert svc.config.container_runtime == "charliecloud"
    sha = commit_to_bare(bare, work, EP)
    r = pre(svc, sha, options=["image=pytorch"])
    assert not r.ok
    assert ("slipway: image 'pytorch' is in the catalog but has no build for this cluster's "
            "container runtime (charliecloud); available images: busybox, python") in r.messages
    assert jobs(svc) == [] and backend.submits == []
    # unknown names list only what can run here too
    r = pre(svc, sha, options=["image=nope"])
    assert "slipway: unknown image 'nope'; available images: busybox, python" in r.messages
    assert pre(svc, sha, options=["image=busybox"]).ok


def test_image_check_follows_the_configured_runtime(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend(), container_runtime="apptainer",
                        images_root=tmp_path / "sifs")
    try:
        seed(svc)
        sha = commit_to_bare(svc.config.repos_root / "nlp" / "proj.git", tmp_path / "w", EP)
        assert pre(svc, sha, options=["image=pytorch"]).ok   # pytorch has a SIF
        assert post(svc, sha).ok
        [job] = jobs(svc)
        spec = json.loads((svc.config.jobs_dir / str(job.id) / "spec.json").read_text())
        assert spec["container_runtime"] == "apptainer"
        argv = spec["container_argv"]
        assert argv[:2] == ["apptainer", "exec"] and "--cleanenv" in argv
        assert argv[argv.index("--cleanenv") - 1] == "--nv"
        assert argv[argv.index("/usr/bin/env") - 1].endswith("slipway/pytorch-cuda12.sif")
        for k in ("SLIPWAY_JOB_ID", "SLIPWAY_BRANCH", "SLIPWAY_COMMIT"):
            assert f"{k}={spec['env'][k]}" in argv, k
        # PORT comes from the runner's environment (APPTAINERENV_PORT): the runner may move it
        assert not any(a.startswith("PORT=") for a in argv) and spec["env"]["PORT"]
        assert spec["env"]["SLIPWAY_BRANCH"] == "exp-1" and spec["env"]["SLIPWAY_COMMIT"] == sha
    finally:
        svc.db.dispose()


def test_apptainer_job_sees_cuda_port_and_slipway_vars_through_cleanenv(tmp_path):
    """The spec jobs.runner_spec writes, run through the runner's env logic on a Slurm-like node
    environment: what survives Apptainer's --cleanenv is APPTAINERENV_* (plus the argv's env)."""
    from git_gateway.node.container_env import launch_env
    from git_gateway.node.spec import RunnerSpec

    svc = make_services(tmp_path, backend=FakeBackend(), container_runtime="apptainer",
                        images_root=tmp_path / "sifs")
    try:
        seed(svc)
        sha = commit_to_bare(svc.config.repos_root / "nlp" / "proj.git", tmp_path / "w", EP)
        assert pre(svc, sha).ok and post(svc, sha).ok
        [job] = jobs(svc)
        spec = RunnerSpec.load(str(svc.config.jobs_dir / str(job.id) / "spec.json"))
    finally:
        svc.db.dispose()
    node = {"PATH": "/usr/bin:/bin", "USER": "sw-alice", "CUDA_VISIBLE_DEVICES": "2,3",
            "SLURM_JOB_ID": "77", "SECRET": "x"}
    env = launch_env(spec, node)
    # what a --cleanenv container receives: APPTAINERENV_<NAME> -> NAME
    inside = {k[len("APPTAINERENV_"):]: v for k, v in env.items() if k.startswith("APPTAINERENV_")}
    assert inside == {"CUDA_VISIBLE_DEVICES": "2,3", "PORT": str(job.port),
                      "SLIPWAY_JOB_ID": str(job.id), "SLIPWAY_BRANCH": "exp-1",
                      "SLIPWAY_COMMIT": sha}
    assert "SECRET" not in env and spec.token not in env.values()


def test_submission_failure_fails_the_job(env):
    svc, backend, bare, work = env
    from slurm_bridge.errors import SlurmRejected
    backend.submit_error = SlurmRejected("Invalid qos specification",
                                         slurm_message="Invalid qos specification")
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha).ok
    r = post(svc, sha)
    [job] = jobs(svc)
    assert not r.ok and r.messages == [f"slipway: job {job.id} could not be submitted: Invalid qos specification"]
    assert job.state == "failed" and "Invalid qos" in job.reason
    assert pre(svc, commit_to_bare(bare, work, {"y": "1"})).ok  # the branch is free again


def test_unknown_account_is_converged_once_then_submitted(env, monkeypatch):
    """A personal team made at a first login has no Slurm account until the reconciler's sync:
    the submission converges the accounts itself and tries again (outside any page view)."""
    svc, backend, bare, work = env
    from slurm_bridge.errors import SlurmRejected
    import portal.teams.slurm_accounts as sa
    backend.submit_error = SlurmRejected(
        "Slurm refused", slurm_message="Invalid account or account/partition combination specified")
    synced = []

    def fake_sync(s):
        synced.append(s)
        backend.submit_error = None  # the account exists now
        return ["add account team-nlp"]
    monkeypatch.setattr(sa, "sync_accounts", fake_sync)
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha).ok
    r = post(svc, sha)
    [job] = jobs(svc)
    assert r.ok and r.messages == [f"slipway: job {job.id} queued (a4000 x1)"], r.messages
    assert len(synced) == 1 and job.state == "pending" and len(backend.submits) == 1


def test_unknown_account_after_convergence_fails_the_job_with_slurms_reason(env, monkeypatch):
    svc, backend, bare, work = env
    from slurm_bridge.errors import SlurmRejected
    import portal.teams.slurm_accounts as sa
    backend.submit_error = SlurmRejected("Invalid account", slurm_message="Invalid account")
    calls = []
    monkeypatch.setattr(sa, "sync_accounts", lambda s: calls.append(1) or [])
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha).ok
    r = post(svc, sha)
    [job] = jobs(svc)
    assert calls == [1] and not r.ok and job.state == "failed" and "Invalid account" in job.reason


def test_concurrent_pushes_to_one_branch_start_exactly_one_job(env):
    svc, backend, bare, work = env
    shas = [commit_to_bare(bare, work, {**EP, "n": str(i)}) for i in range(6)]
    barrier = threading.Barrier(len(shas))
    results = []

    def push(sha):
        barrier.wait()
        results.append(pre(svc, sha))

    threads = [threading.Thread(target=push, args=(sha,)) for sha in shas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.ok for r in results) == 1
    assert len(jobs(svc)) == 1
    refused = [r for r in results if not r.ok]
    assert all(any("already has job" in m for m in r.messages) for r in refused)


def test_partial_unique_index_is_the_last_line_of_defence(env):
    svc, backend, bare, work = env
    from sqlalchemy.exc import IntegrityError
    with pytest.raises(IntegrityError):
        with svc.db.transaction() as s:
            for _ in range(2):
                s.add(Job(project_id=1, branch="b", commit_sha="a" * 40, state="running",
                          gpu_type="a4000", gpu_count=1, image="python", time_limit_min=5))
                s.flush()
    with svc.db.transaction() as s:  # ended jobs do not count
        for state in ("succeeded", "failed", "running"):
            s.add(Job(project_id=1, branch="b", commit_sha="a" * 40, state=state,
                      gpu_type="a4000", gpu_count=1, image="python", time_limit_min=5))


class SlowSubmitBackend(FakeBackend):
    """sbatch takes a while: every racer arrives while the first submission is in flight (the
    job is still queued with no Slurm id), the window where a check-then-submit double-submits."""

    def submit(self, req):
        time.sleep(0.3)
        return super().submit(req)


def test_late_post_receive_and_reconciler_racing_submit_exactly_once(tmp_path):
    from portal.jobs.reconciler import Reconciler
    from tests.support.fakes import Clock, git

    backend, clock = SlowSubmitBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, storage_interval=10**9)
    seed(svc)
    bare = svc.config.repos_root / "nlp" / "proj.git"
    try:
        sha = commit_to_bare(bare, tmp_path / "work", EP)
        assert pre(svc, sha).ok
        git("--git-dir", str(bare), "update-ref", "refs/heads/exp-1", sha)
        [job] = jobs(svc)
        clock.advance(seconds=31)   # the post-receive is "lost"... and arrives just as the reconciler acts
        n = 6
        barrier = threading.Barrier(n)
        hook_replies, tick_reports, errors = [], [], []

        def hook():
            barrier.wait(timeout=10)
            hook_replies.append(post(svc, sha))

        def reconcile():
            barrier.wait(timeout=10)
            tick_reports.append(Reconciler(svc).tick())

        def run(fn):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 — surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(fn,))
                   for fn in [hook, hook, hook, reconcile, reconcile, reconcile]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert len(backend.submits) == 1, backend.submits          # exactly one sbatch
        [(slurm_id, req)] = backend.submits
        [job] = jobs(svc)
        assert (job.state, job.slurm_job_id) == ("pending", slurm_id) and req.name == f"slipway-{job.id}"
        queued_msgs = [m for r in hook_replies for m in r.messages if " queued (" in m]
        recovered = [j for rep in tick_reports for j in rep.recovered]
        assert len(queued_msgs) + len(recovered) == 1, (hook_replies, recovered)
        for r in hook_replies:   # the losers were told, not submitted
            for m in r.messages:
                assert (" queued (a4000 x1)" in m or "already being submitted" in m
                        or "already submitted" in m), m
        # whoever won, the job's spec holds the token whose hash the job row has
        spec = json.loads((svc.config.jobs_dir / str(job.id) / "spec.json").read_text())
        assert runner_spec.hash_token(spec["token"]) == job.token_hash
    finally:
        svc.db.dispose()


def test_submit_job_claims_once(env):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha).ok
    [job] = jobs(svc)
    with svc.db.transaction() as s:
        assert submit.claim_for_submission(s, job.id, "h" * 64)
        assert not submit.claim_for_submission(s, job.id, "i" * 64)
    # a post-receive finding the job claimed (a reconciler mid-sbatch) says so and submits nothing
    r = post(svc, sha)
    assert r.messages == [f"slipway: job {job.id} is already being submitted"] and backend.submits == []
    assert submit.submit_job(svc, 999) == (False, "slipway: there is no job 999")


def _precheck(svc, sha, branch="exp-1", pusher="alice", options=None):
    push.precheck(svc, hook_payload("pre-check", "nlp/proj", pusher,
                                    [(f"refs/heads/{branch}", Z, sha)], options))


def test_checks_made_ahead_are_used_once_by_the_same_push(env, monkeypatch):
    """The gateway asks for the checks while git unpacks (push.precheck): the pre-receive of the
    same push uses them (no second round of checks) and adds the entrypoint and the
    reservation; another push (other options) checks for itself."""
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, EP)
    calls = []
    real = push._checks
    monkeypatch.setattr(push, "_checks", lambda *a: calls.append(a[2]["push_options"]) or real(*a))
    _precheck(svc, sha, options=["time=30m"])
    assert calls == [["time=30m"]] and jobs(svc) == []       # nothing reserved ahead
    r = pre(svc, sha, options=["time=30m"])
    assert r.ok and len(calls) == 1, (r.messages, calls)       # used, not checked again
    [job] = jobs(svc)
    assert (job.state, job.time_limit_min) == ("queued", 30)
    assert pre(svc, sha, branch="other").ok and len(calls) == 2   # no entry: checked here
    # the entrypoint is checked at pre-receive, beside what was found ahead
    bad = commit_to_bare(bare, work.parent / "w2", {"README": "x"})   # no entrypoint
    _precheck(svc, bad, branch="b3")
    r = pre(svc, bad, branch="b3")
    assert not r.ok and any("slipway-entrypoint.sh is missing" in m for m in r.messages), r.messages


def test_checks_made_ahead_then_a_branch_taken_meanwhile_is_still_refused(env):
    """Between the checks made ahead and the pre-receive, another push reserved the branch:
    the partial unique index refuses the second reservation, with the busy message."""
    svc, backend, bare, work = env
    a = commit_to_bare(bare, work, EP)
    b = commit_to_bare(bare, work, {**EP, "n": "2"})
    _precheck(svc, b)                     # found the branch free...
    assert pre(svc, a).ok                 # ...then this push reserved it
    r = pre(svc, b)
    assert not r.ok, r.messages
    [job] = jobs(svc)
    assert any(f"already has job {job.id}" in m for m in r.messages), r.messages
    # and what the checks refuse ahead is what the pre-receive says
    _precheck(svc, b, branch="c", pusher="mallory")
    r = pre(svc, b, branch="c", pusher="mallory")
    assert not r.ok and r.messages[0] == "slipway: unknown user 'mallory'", r.messages
