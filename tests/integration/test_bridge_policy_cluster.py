"""slurm_bridge's policy additions against the live local cluster (fixture ``slurm_cluster``):
association limits converge and hold jobs back, nice/top, node drain/resume, sshare,
assoc_mgr, partitions, and memory enforcement (OUT_OF_MEMORY)."""
from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.test_bridge_cluster import (bridge, jobdir, slurm_env, submitted,  # noqa: F401
                                                   wait_for)
from slurm_bridge.request import GpuRequest, JobRequest
from slurm_bridge.sync import (AccountSpec, DesiredState, Limits, QosSpec, UserSpec, plan,
                               read_current, sync)

pytestmark = pytest.mark.cluster
ACCOUNT = "team-pol"


def desired(account_limits: Limits, bob: Limits = Limits()) -> DesiredState:
    return DesiredState(
        accounts=(AccountSpec(ACCOUNT, fairshare=10, limits=account_limits),),
        users=(UserSpec("sw-alice", ACCOUNT, {ACCOUNT: ("normal",)}),
               UserSpec("sw-bob", ACCOUNT, {ACCOUNT: ("normal",)}, limits={ACCOUNT: bob})),
        qos=(QosSpec("normal"), QosSpec("emergency", 1000, ("normal",), "requeue")),
        managed_accounts={ACCOUNT})


@pytest.fixture(scope="module")
def team(bridge):  # noqa: F811
    """Account team-pol (sw-alice, sw-bob); removed at the end."""
    sync(bridge, desired(Limits()))
    yield ACCOUNT
    sync(bridge, DesiredState(qos=(QosSpec("normal"), QosSpec("emergency", 1000, ("normal",), "requeue")),
                              managed_accounts={ACCOUNT}))


def job(jobdir: Path, name: str, command, **kw) -> JobRequest:  # noqa: F811
    kw.setdefault("account", ACCOUNT)
    kw.setdefault("user", "sw-alice")
    return JobRequest(name=f"bridge-pol/{name}", command=command, workdir=str(jobdir),
                      output=str(jobdir / f"{name}-%j.out"), time_limit_min=5, **kw)


def test_limits_converge_read_back_and_replan_empty(bridge, team):  # noqa: F811
    want = desired(Limits({"gres/gpu:a4000": 2, "cpu": 16, "mem": 4000}, 5),
                   Limits({"gres/gpu:a4000": 1}, 2))
    assert sync(bridge, want)
    cur = read_current(bridge)
    assert cur.accounts[team].limits == Limits({"gres/gpu:a4000": 2, "cpu": 16, "mem": 4000}, 5)
    assert cur.assocs[("sw-bob", team)].limits == Limits({"gres/gpu:a4000": 1}, 2)
    assert plan(want, cur) == []
    # fewer limits: the ones not wanted are cleared (-1), and again nothing is left to do
    less = desired(Limits({"gres/gpu:a4000": 3}), Limits(grp_jobs=1))
    changes = sync(bridge, less)
    assert any("GrpTRES=cpu=-1,gres/gpu:a4000=3,mem=-1" in c.args for c in changes)
    cur = read_current(bridge)
    assert cur.accounts[team].limits == Limits({"gres/gpu:a4000": 3})
    assert cur.assocs[("sw-bob", team)].limits == Limits(grp_jobs=1)
    assert plan(less, cur) == []
    sync(bridge, desired(Limits()))
    cur = read_current(bridge)
    assert not cur.accounts[team].limits and not cur.assocs[("sw-bob", team)].limits


def test_job_over_the_accounts_gpu_limit_waits_for_assoc_grp_gres(bridge, team, jobdir, submitted):  # noqa: F811
    sync(bridge, desired(Limits({"gres/gpu:a4000": 2})))
    try:
        first = bridge.submit(job(jobdir, "lim-1", ["sleep", "120"], gpus=GpuRequest("a4000", 2)))
        submitted.append(first)
        wait_for(lambda: bridge.jobs(None).get(first) and bridge.jobs(None)[first].state == "RUNNING",
                 60, "the first job to run")
        second = bridge.submit(job(jobdir, "lim-2", ["sleep", "120"], gpus=GpuRequest("a4000", 1)))
        submitted.append(second)
        rec = wait_for(lambda: (r := bridge.jobs(None).get(second)) and r.reason == "AssocGrpGRES" and r,
                       60, "the second job to wait for AssocGrpGRES")
        assert rec.state == "PENDING" and bridge.jobs(None)[first].state == "RUNNING"
    finally:
        for j in list(submitted):
            bridge.cancel(j)
        sync(bridge, desired(Limits()))


def test_set_nice_and_top_change_the_queue(bridge, team, jobdir, submitted):  # noqa: F811
    # held jobs stay pending whatever the cluster's load
    ids = [bridge.submit(job(jobdir, f"nice-{i}", ["true"], hold=True)) for i in range(3)]
    submitted.extend(ids)
    bridge.set_nice(ids[:2], 500)
    queue = bridge.jobs(None)
    assert [queue[j].nice for j in ids] == [500, 500, 0]
    # top needs a pending job that is not held: put the two niced ones behind a full cluster
    blocker = bridge.submit(job(jobdir, "nice-block", ["sleep", "120"], cpus=8, partition="dev"))
    submitted.append(blocker)
    wait_for(lambda: bridge.jobs(None)[blocker].state == "RUNNING", 60, "the blocker to run")
    # in slipway-test, whose fair-share factor is known (a new account's is 0 for a minute, and
    # every priority then floors at 1)
    waiting = [bridge.submit(job(jobdir, f"top-{i}", ["true"], cpus=8, partition="dev", nice=n,
                                 account="slipway-test"))
               for i, n in enumerate((0, 300))]
    submitted.extend(waiting)
    wait_for(lambda: all(bridge.jobs(None)[j].priority > 0 for j in waiting), 30, "priorities")
    queue = bridge.jobs(None)
    assert queue[waiting[1]].nice == 300 and queue[waiting[1]].priority < queue[waiting[0]].priority
    given = bridge.top(waiting[1])
    queue = bridge.jobs(None)
    assert queue[waiting[1]].priority == given
    assert given > max(r.priority for r in queue.values()
                       if r.state == "PENDING" and r.job_id != waiting[1])
    # a pending job waiting behind the blocker has Slurm's expected start
    assert queue[waiting[0]].partition == "dev"
    assert queue[waiting[0]].expected_start is not None or queue[waiting[0]].reason != "Resources"


def test_drain_and_resume_a_node(bridge):  # noqa: F811
    try:
        bridge.update_node("a6k-1", "drain", "bridge-pol maintenance")
        node = {n.name: n for n in bridge.nodes()}["a6k-1"]
        assert "DRAIN" in {f.upper() for f in node.flags} or node.state.upper().startswith("DRAIN")
        assert node.reason == "bridge-pol maintenance" and not node.available
    finally:
        bridge.update_node("a6k-1", "resume")
    node = wait_for(lambda: (n := {n.name: n for n in bridge.nodes()}["a6k-1"]).available and n,
                    60, "a6k-1 back in service")
    assert "DRAIN" not in node.flags and node.reason == ""


def test_shares_usage_and_partitions(bridge, team):  # noqa: F811
    shares = bridge.shares()
    accounts = {r.account for r in shares if r.user == ""}
    assert {"root", team, "slipway-test"} <= accounts
    users = {(r.account, r.user) for r in shares if r.user}
    assert (team, "sw-alice") in users and (team, "sw-bob") in users
    assert all(r.fairshare is not None for r in shares if r.user)
    usage = bridge.assoc_usage()
    assert team in usage and usage[team] >= 0 and "root" in usage
    parts = {p.name: p for p in bridge.partitions()}
    assert set(parts) >= {"train", "dev"}
    assert parts["train"].default and parts["train"].max_time_min is None
    assert dict(parts["train"].gpus) == {"a4000": 8, "a6000": 2, "shard": 16}
    assert parts["train"].nodes == ("a4k-1", "a4k-2", "a6k-1") and parts["train"].cpus == 24
    assert not parts["dev"].default and parts["dev"].max_time_min == 120
    assert dict(parts["dev"].gpus) == {"a6000": 2, "shard": 16} and parts["dev"].nodes == ("a6k-1",)


def test_job_over_its_memory_ends_out_of_memory(bridge, team, jobdir, submitted, slurm_env):  # noqa: F811
    conf_dir = Path(slurm_env["SLURM_CONF"]).parent
    if not (conf_dir / "cgroup.conf").exists():
        pytest.skip(f"{conf_dir}/cgroup.conf is missing: slurm_conf/cluster must render "
                    "templates/cgroup.conf.tmpl for memory to be enforced")
    started = time.monotonic()
    hog = ["python3", "-c", "import time; a = b'x' * (600 * 1024 * 1024); time.sleep(60)"]
    job_id = bridge.submit(job(jobdir, "oom", hog, mem_mb=100, requeue=False))
    submitted.append(job_id)
    since = datetime.now().astimezone() - timedelta(minutes=5)

    def ended():
        recs = [r for r in bridge.accounting(since, since + timedelta(hours=1), [job_id])
                if r.complete]
        return recs and recs[-1]
    rec = wait_for(ended, 90, "the job over its memory to end", interval=1)
    took = time.monotonic() - started
    assert rec.state == "OUT_OF_MEMORY", rec
    print(f"OUT_OF_MEMORY after {took:.1f} s")
