"""Sweeps, multi-node jobs and GPU shares through the service layer (issue 14,
docs/SHARING.md): push options → one job row with its task rows → ONE sbatch --array, one
spec per task; the reconciler follows the tasks, bills each, merges their results once."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from sqlalchemy import select

from git_gateway.node.spec import RunnerSpec
from portal.db import Job, JobPart
from portal.jobs import push, sweeps
from portal.teams.access import OpError
from slurm_bridge.script import sbatch_options
from tests.support.fakes import FakeBackend, InMemoryGit, commit_to_bare, hook_payload, \
    make_services, seed

Z = "0" * 40


# ------------------------------------------------------------------------------- pure parsing
def test_a_sweep_is_every_combination_last_name_fastest():
    tasks = sweeps.parse_sweep("lr=0.1,0.01,0.001;bs=32,64", 100)
    assert len(tasks) == 6
    assert tasks[0] == {"LR": "0.1", "BS": "32"} and tasks[1] == {"LR": "0.1", "BS": "64"}
    assert tasks[5] == {"LR": "0.001", "BS": "64"}
    assert sweeps.array_spec(6, 2) == "0-5%2" and sweeps.array_spec(1, None) == "0"
    assert sweeps.task_env(tasks[3], 3) == {"SLIPWAY_TASK_ID": "3", "SLIPWAY_PARAM_LR": "0.01",
                                            "SLIPWAY_PARAM_BS": "64"}


@pytest.mark.parametrize("text,needle", [
    ("", "empty"), ("lr=", "empty value"), ("lr=0.1,,1", "empty value"), ("lr", "no '='"),
    ("lr=1;LR=2", "twice"), ("9x=1", "not allowed"), ("lr=1,1", "listed twice"),
    ("lr=" + ",".join(map(str, range(11))) + ";bs=" + ",".join(map(str, range(10))),
     "110 tasks (11 lr × 10 bs); at most 100"),
    ("a=x\nb", "newline"), ("a=" + "x" * 300, "at most 256"),
])
def test_bad_sweeps_are_refused_with_what_is_wrong(text, needle):
    with pytest.raises(OpError, match=None) as e:
        sweeps.parse_sweep(text, 100)
    assert needle in str(e.value), str(e.value)


# ------------------------------------------------------------------------------- push → Slurm
@pytest.fixture
def env(tmp_path):
    backend = FakeBackend()
    git = InMemoryGit()
    svc = make_services(tmp_path, backend=backend)
    seed(svc)
    yield svc, backend, svc.config.repos_root / "nlp" / "proj.git", tmp_path / "work", git
    svc.db.dispose()


def _push(svc, bare, work, options, branch="sweep-1"):
    sha = commit_to_bare(bare, work, {"slipway-entrypoint.sh": "echo hi\n"})
    upd = [(f"refs/heads/{branch}", Z, sha)]
    pre = push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice", upd, options))
    if not pre.ok:
        return pre, None
    return pre, push.handle_post_receive(svc, hook_payload("post-receive", "nlp/proj", "alice", upd))


def _job(svc) -> Job:
    with svc.db.session() as s:
        job = s.scalars(select(Job).order_by(Job.id.desc())).first()
        s.expunge(job)
        return job


def _parts(svc, job_id, kind="task"):
    with svc.db.session() as s:
        rows = list(s.scalars(select(JobPart).where(JobPart.job_id == job_id, JobPart.kind == kind)
                              .order_by(JobPart.index)))
        for r in rows:
            s.expunge(r)
        return rows


def test_a_sweep_push_is_one_array_job_with_a_spec_per_task(env):
    svc, backend, bare, work, _git = env
    pre, post = _push(svc, bare, work, ['sweep="lr=0.1,0.01,0.001;bs=32,64"', "max-parallel=2"])
    assert pre.ok and post.ok, (pre.messages, post and post.messages)
    job = _job(svc)
    assert (job.task_count, job.max_parallel) == (6, 2)
    assert "6 tasks (--array=0-5%2)" in post.messages[0]
    tasks = _parts(svc, job.id)
    assert [t.index for t in tasks] == list(range(6)) and {t.state for t in tasks} == {"pending"}
    assert json.loads(tasks[4].params) == {"LR": "0.001", "BS": "32"}
    [(_sid, req)] = backend.submits
    opts = sbatch_options(req)
    assert "--array=0-5%2" in opts
    assert req.output.endswith(f"/{job.id}/task-%a.log")
    assert req.command[-1].endswith(f"/{job.id}/task-{{task}}/spec.json")
    jdir = svc.config.jobs_dir / str(job.id)
    for i in range(6):
        spec = RunnerSpec.load(str(jdir / f"task-{i}" / "spec.json"))
        assert spec.task_id == i and spec.push_branch is False
        assert spec.results_ref == f"refs/heads/results/sweep-1/{job.id}/{i}"
        assert spec.workdir == str(jdir / f"task-{i}" / "work")
        assert spec.output_dir == str(jdir / "output" / f"task-{i}")
        params = json.loads(tasks[i].params)
        assert spec.env["SLIPWAY_PARAM_LR"] == params["LR"]
        assert spec.env["SLIPWAY_TASK_ID"] == str(i)
        argv = " ".join(spec.container_argv)
        assert f"SLIPWAY_PARAM_BS='{params['BS']}'" in argv and f"/output/task-{i}" in argv


@pytest.mark.parametrize("options,needle", [
    (['sweep=lr='], "empty value"),
    (["sweep=a=" + ",".join(map(str, range(101)))], "at most 100 per job"),
    (["max-parallel=2"], "max-parallel applies to a sweep"),
    (["max-parallel=0", "sweep=a=1,2"], "max-parallel=N"),
    (["nodes=2", "sweep=a=1,2"], "cannot be combined"),
    (["nodes=3", "gpus=a4000:1"], "3 nodes"),
    (["nodes=2", "gpus=a6000-shard:2"], "needs whole GPUs"),
    (["gpus=a4000-shard:2"], "unknown GPU type"),
    (["gpus=a6000-shard:9"], "at most 8"),
])
def test_bad_shapes_are_refused_before_anything_is_reserved(env, options, needle):
    svc, backend, bare, work, _git = env
    pre, _ = _push(svc, bare, work, options + ["strict=yes"])
    assert not pre.ok and needle in "\n".join(pre.messages), pre.messages
    with svc.db.session() as s:
        assert s.scalar(select(Job.id)) is None and s.scalar(select(JobPart.id)) is None
    assert backend.submits == []


def test_a_two_node_job_asks_slurm_for_two_nodes_and_its_ranks_get_a_rendezvous(env):
    svc, backend, bare, work, _git = env
    pre, post = _push(svc, bare, work, ["nodes=2", "gpus=a4000:4"], branch="ddp")
    assert pre.ok and post.ok, (pre.messages, post and post.messages)
    job = _job(svc)
    assert job.nodes == 2 and job.master_port is not None and job.master_port != job.port
    [(_sid, req)] = backend.submits
    opts = sbatch_options(req)
    assert "--nodes=2" in opts and "--ntasks-per-node=1" in opts and "--gres=gpu:a4000:4" in opts
    spec = RunnerSpec.load(str(svc.config.jobs_dir / str(job.id) / "spec.json"))
    assert spec.nodes == 2 and spec.master_port == job.master_port
    argv = " ".join(spec.container_argv)
    for name in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        assert name in argv   # passed through from the rank's environment
    assert "2 nodes × a4000 x4" in post.messages[0]


def test_a_gpu_share_asks_slurm_for_shards(env):
    svc, backend, bare, work, _git = env
    pre, post = _push(svc, bare, work, ["gpus=a6000-shard:2"], branch="small")
    assert pre.ok and post.ok, (pre.messages, post and post.messages)
    job = _job(svc)
    assert (job.gpu_type, job.gpu_count) == ("a6000-shard", 2)
    [(_sid, req)] = backend.submits
    assert "--gres=shard:2" in sbatch_options(req)
    assert svc.config.gpu_rates["a6000-shard"] == Decimal("1.00") / 8


def test_a_compute_type_can_be_a_share_of_a_gpu_priced_at_its_share(env):
    from portal.policy import compute
    from portal.teams.access import Actor
    svc, backend, bare, work, _git = env
    compute.define(svc, Actor(0, "root-op", is_cluster_admin=True), "a6k-quarter",
                   gpus="a6000-shard:2")
    [ct] = compute.list_types(svc)
    assert ct["hourly_rate"] == str(Decimal("0.250"))   # 2 × $1.00 / 8
    pre, post = _push(svc, bare, work, ["compute=a6k-quarter"], branch="quarter")
    assert pre.ok and post.ok, (pre.messages, post and post.messages)
    job = _job(svc)
    assert (job.gpu_type, job.gpu_count, job.compute_type) == ("a6000-shard", 2, "a6k-quarter")
    assert "--gres=shard:2" in sbatch_options(backend.submits[0][1])


def test_shards_are_billed_under_the_jobs_shared_type():
    from portal import integrations as ig
    assert ig.billed_gpus({"shard": 2}, 0, {"a6000-shard": 2}) == {"a6000-shard": 2}
    assert ig.billed_gpus({}, 3, {"a6000-shard": 3}) == {"a6000-shard": 3}
    assert ig.billed_gpus({"a4000": 2}, 0, {"a4000": 1}) == {"a4000": 2}
    assert ig.billed_gpus({}, 0, {"cpu": 4}) == {"cpu": 4}
