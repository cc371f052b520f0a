"""slurm_bridge's policy additions: association limits (plan both ways), the administrator's
commands (nice, priority, top, drain/resume) and views (sshare, assoc_mgr, partitions), and
squeue's priority/nice/expected start.

Slurm outputs are recorded from the local cluster (Slurm 22.05, templates of issue 13):
``sacctmgr_assoc_limits.txt`` (account team-lim: GrpTRES cpu=8,gres/gpu:a4000=2,mem=2000,
GrpJobs=3, GrpTRESMins billing=100000; sw-bob in it: GrpTRES gres/gpu:a4000=1, GrpJobs=2),
``squeue_priority.json`` (jobs 13/14 running, 15 pending with nice 100, 16 pending, 17 held,
18 a shard job in dev; ids in ``squeue_priority.ids``), ``sshare.txt``, ``assoc_mgr.txt``,
``scontrol_partitions.txt`` with ``sinfo_drained.json`` (a4k-2 drained: "fan swap") and the
``stderr_*`` of refused scontrol updates.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from slurm_bridge.admin_records import (SSHARE_FIELDS, parse_assoc_usage, parse_partitions,
                                        parse_sshare, slurm_minutes)
from slurm_bridge.cli import CliBackend
from slurm_bridge.errors import InvalidRequest, JobNotFound, SlurmRejected
from slurm_bridge.records import parse_nodes, parse_squeue
from slurm_bridge.request import JobRequest, validate
from slurm_bridge.runner import FakeRunner, result
from slurm_bridge.script import sbatch_options
from slurm_bridge.sync import (AccountSpec, CurrentAccount, CurrentAssoc, DesiredState, Limits,
                               QosSpec, UserSpec, limit_args, parse_current, plan)
from tests.support.squeue_text import text_answer

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def stderr_of(name: str):
    body, _, rc = fixture(name).rpartition("rc=")
    return result("", body, rc=int(rc))


ASSOC = fixture("sacctmgr_assoc_limits.txt")
NORMAL = QosSpec("normal")
LIM = Limits({"cpu": 8, "gres/gpu:a4000": 2, "mem": 2000}, 3)
BOB = Limits({"gres/gpu:a4000": 1}, 2)


def current():
    return parse_current(ASSOC, "sw-bob|slipway-test\n", "normal|0||cluster\n")


def backend(responses):
    runner = FakeRunner(responses)
    return CliBackend(runner, env={}, as_root=False), runner


# ------------------------------------------------------------------------------ Limits
def test_limits_are_frozen_sorted_hashable_and_empty_is_false():
    lim = Limits({"gres/gpu:a4000": 2, "cpu": 8}, 3)
    assert list(lim.grp_tres) == ["cpu", "gres/gpu:a4000"] and lim.grp_jobs == 3
    assert lim == Limits({"cpu": 8, "gres/gpu:a4000": 2}, 3) and hash(lim) == hash(
        Limits({"cpu": 8, "gres/gpu:a4000": 2}, 3))
    assert not Limits() and Limits(grp_jobs=0) and Limits({"gres/shard": 0})
    with pytest.raises(TypeError):
        lim.grp_tres["cpu"] = 1  # type: ignore[index]
    assert str(lim) == "GrpTRES cpu=8,gres/gpu:a4000=2, GrpJobs 3" and str(Limits()) == "no limits"


@pytest.mark.parametrize("tres,jobs", [
    ({"gpu": 1}, None), ({"gres/gpu:A4000": 1}, None), ({"gres/gpu:a4000;x": 1}, None),
    ({"cpu": -1}, None), ({"cpu": 1.5}, None), ({"cpu": True}, None), ({}, -1), ({}, "2"),
])
def test_bad_limits_refused(tres, jobs):
    with pytest.raises(InvalidRequest):
        Limits(tres, jobs)


def test_user_limits_must_name_one_of_their_accounts():
    with pytest.raises(InvalidRequest, match="not one of their accounts"):
        UserSpec("sw-bob", "a", {"a": ("normal",)}, limits={"b": BOB})
    u = UserSpec("sw-bob", "a", {"a": ("normal",), "b": ("normal",)}, limits={"a": BOB, "b": Limits()})
    assert u.limits == (("a", BOB),) and u.limits_in("a") == BOB and u.limits_in("b") == Limits()
    with pytest.raises(InvalidRequest):
        AccountSpec("a", limits={"cpu": 1})  # type: ignore[arg-type]


# ----------------------------------------------------------------------- read back, plan
def test_recorded_limits_read_back():
    cur = current()
    assert cur.accounts["team-lim"] == CurrentAccount("team-lim", "root", "10", (("billing", 100000),), LIM)
    assert cur.assocs[("sw-bob", "team-lim")] == CurrentAssoc("sw-bob", "team-lim", ("normal",),
                                                              "normal", BOB)
    assert cur.accounts["slipway-test"].limits == Limits()
    assert cur.assocs[("sw-alice", "slipway-test")].limits == Limits()


def desired(account_limits=LIM, bob=BOB):
    return DesiredState(
        accounts=(AccountSpec("team-lim", fairshare=10, grp_tres_mins={"billing": 100000},
                              limits=account_limits),),
        users=(UserSpec("sw-bob", "team-lim", {"team-lim": ("normal",)}, limits={"team-lim": bob}),),
        qos=(NORMAL,), managed_accounts={"team-lim"})


def test_converged_limits_plan_nothing():
    assert plan(desired(), current()) == []


def test_limits_converge_both_ways():
    want = Limits({"gres/gpu:a4000": 4, "gres/shard": 8})        # cpu and mem go, GrpJobs goes
    changes = plan(desired(account_limits=want, bob=Limits(grp_jobs=1)), current())
    assert [c.args for c in changes] == [
        ("modify", "account", "where", "name=team-lim", "set",
         "GrpTRES=cpu=-1,gres/gpu:a4000=4,gres/shard=8,mem=-1", "GrpJobs=-1"),
        ("modify", "user", "where", "name=sw-bob", "account=team-lim", "set",
         "GrpTRES=gres/gpu:a4000=-1", "GrpJobs=1"),
    ]
    assert changes[0].summary == ("set limits of account team-lim "
                                  "(GrpTRES gres/gpu:a4000=4,gres/shard=8)")
    # nothing wanted: every limit set is cleared
    cleared = plan(desired(account_limits=Limits(), bob=Limits()), current())
    assert [c.args[-2:] for c in cleared] == [
        ("GrpTRES=cpu=-1,gres/gpu:a4000=-1,mem=-1", "GrpJobs=-1"),
        ("GrpTRES=gres/gpu:a4000=-1", "GrpJobs=-1")]


def test_only_the_limit_that_differs_is_sent():
    assert limit_args(Limits({"cpu": 8}, 3), Limits({"cpu": 8}, 2)) == ("GrpJobs=3",)
    assert limit_args(Limits({"cpu": 4}, 3), Limits({"cpu": 8}, 3)) == ("GrpTRES=cpu=4",)
    assert limit_args(Limits(), Limits()) == ()


def test_new_account_and_association_get_their_limits_on_add():
    d = DesiredState(accounts=(AccountSpec("team-new", fairshare=5, limits=Limits({"gres/gpu": 2}, 4)),),
                     users=(UserSpec("dave", "team-new", {"team-new": ("normal",)},
                                     limits={"team-new": Limits({"cpu": 4})}),),
                     qos=(NORMAL,))
    changes = plan(d, current())
    by = {c.args[1]: c for c in changes}
    assert by["account"].args[-2:] == ("GrpTRES=gres/gpu=2", "GrpJobs=4")
    assert by["account"].summary == "add account team-new (fairshare 5, GrpTRES gres/gpu=2, GrpJobs 4)"
    assert "GrpTRES=cpu=4" in by["user"].args and not any("GrpJobs" in a for a in by["user"].args)


def test_model_reaches_the_limits_and_replans_nothing():
    from tests.unit.test_bridge_sync import apply_to_model
    for d in (desired(Limits({"gres/gpu:a4000": 4}), Limits(grp_jobs=1)),
              desired(Limits(), Limits()), desired()):
        after = apply_to_model(current(), plan(d, current()))
        assert after.accounts["team-lim"].limits == d.accounts[0].limits
        assert after.assocs[("sw-bob", "team-lim")].limits == d.users[0].limits_in("team-lim")
        assert plan(d, after) == []


# ------------------------------------------------------------------------------ squeue
def test_squeue_priority_nice_partition_and_expected_start():
    jobs = {r.job_id: r for r in parse_squeue(json.loads(fixture("squeue_priority.json")))}
    niced, pending, held, shard = 15, 16, 17, 18
    assert (jobs[niced].state, jobs[niced].nice, jobs[niced].priority) == ("PENDING", 100, 1)
    assert (jobs[pending].nice, jobs[pending].priority) == (0, 2500)   # nice 0 is left out
    # a pending job's start_time is Slurm's expected start; a held one has none (0)
    assert jobs[pending].expected_start == datetime.fromtimestamp(1796553073, tz=timezone.utc)
    assert jobs[pending].start_time is None
    assert jobs[held].expected_start is None and jobs[held].priority == 0 and jobs[held].held
    assert jobs[shard].partition == "dev" and jobs[shard].expected_start is None
    assert jobs[13].partition == "train" and jobs[13].expected_start is None
    assert "pending=15,16 held=17 shard=18" in fixture("squeue_priority.ids")


# ------------------------------------------------------------------------ views parsers
def test_sshare_rows():
    rows = {(r.account, r.user): r for r in parse_sshare(fixture("sshare.txt"))}
    acct = rows[("slipway-test", "")]
    assert acct.raw_shares == 100 and acct.fairshare is None and acct.raw_usage == 3043
    assert acct.level_fs == pytest.approx(0.990099) and acct.norm_shares == pytest.approx(0.900901)
    bob = rows[("slipway-test", "sw-bob")]
    assert bob.fairshare == 0.5 and bob.effective_usage == pytest.approx(0.028908)
    assert rows[("slipway-test", "sw-carol")].level_fs is None          # inf
    assert rows[("root", "")].raw_shares is None
    assert rows[("team-lim", "")].raw_shares == 10
    assert SSHARE_FIELDS == ("Account", "User", "RawShares", "NormShares", "RawUsage",
                             "EffectvUsage", "FairShare", "LevelFS")


def test_assoc_usage_account_records_only():
    usage = parse_assoc_usage(fixture("assoc_mgr.txt"))
    assert usage == {"root": 50, "slipway-test": 50, "team-lim": 0}


def test_partitions_with_gpu_totals_from_nodes():
    nodes = parse_nodes(json.loads(fixture("sinfo_drained.json")))
    parts = {p.name: p for p in parse_partitions(fixture("scontrol_partitions.txt"), nodes)}
    train, dev = parts["train"], parts["dev"]
    assert train.default and train.max_time_min is None and train.nodes == ("a4k-1", "a4k-2", "a6k-1")
    assert dict(train.gpus) == {"a4000": 8, "a6000": 2, "shard": 8} and train.cpus == 24
    assert not dev.default and dev.max_time_min == 120 and dev.nodes == ("a6k-1",)
    assert dict(dev.gpus) == {"a6000": 2, "shard": 8} and dev.cpus == 8
    assert train.allow_accounts is None and train.allow_qos is None
    assert train.state == "UP" and train.oversubscribe == "NO"
    drained = {n.name: n for n in nodes}["a4k-2"]
    assert drained.flags == ("DRAIN",) and drained.reason == "fan swap" and not drained.available


def test_allowed_lists_and_times():
    line = ("PartitionName=x AllowAccounts=team-b,team-a AllowQos=normal Default=NO "
            "MaxTime=1-00:30:00 State=DOWN OverSubscribe=FORCE:4 TotalCPUs=0\n")
    (p,) = parse_partitions(line, [])
    assert p.allow_accounts == ("team-a", "team-b") and p.allow_qos == ("normal",)
    assert p.max_time_min == 1470 and p.state == "DOWN" and p.gpus == {} and p.nodes == ()
    assert [slurm_minutes(t) for t in ("30", "5:30", "02:00:00", "2-3", "INFINITE")] == [
        30, 6, 120, 2 * 1440 + 180, None]
    with pytest.raises(ValueError):
        slurm_minutes("soon")


# ------------------------------------------------------------------ CliBackend commands
def test_set_nice_is_one_scontrol_call():
    b, runner = backend({"scontrol": result()})
    b.set_nice([3, 1, 2, 3], 150)
    b.set_nice([], 5)
    assert [c["argv"] for c in runner.calls] == [("scontrol", "update", "JobId=1,2,3", "Nice=150")]
    for bad in ([0], ["1"], [True]):
        with pytest.raises(InvalidRequest):
            b.set_nice(bad, 1)
    with pytest.raises(InvalidRequest):
        b.set_nice([1], 2_147_483_646)


def test_set_nice_names_the_missing_job():
    b, _ = backend({"scontrol": stderr_of("stderr_nice_unknown.txt")})
    with pytest.raises(JobNotFound) as err:
        b.set_nice([15, 99999], 5)
    assert err.value.job_id == 99999


def test_set_priority_and_top():
    queue = fixture("squeue_priority.json")
    b, runner = backend({"squeue": text_answer(queue), ("scontrol", "update"): result()})
    assert b.top(15) == 2501          # one above job 16's 2500 (held 17 has 0; running ignored)
    assert runner.calls[-1]["argv"] == ("scontrol", "update", "JobId=15", "Priority=2501")
    assert b.top(16) == 2              # the other pending ones: 15 (1) and held 17 (0)
    with pytest.raises(InvalidRequest, match="RUNNING"):
        b.top(13)
    with pytest.raises(JobNotFound):
        b.top(4242)
    with pytest.raises(InvalidRequest):
        b.set_priority(15, 0)          # 0 would hold the job


def test_update_node_argv_and_refusals():
    b, runner = backend({"scontrol": result()})
    b.update_node("a4k-2", "drain", "fan swap")
    b.update_node("a4k-2", "resume")
    assert [c["argv"] for c in runner.calls] == [
        ("scontrol", "update", "NodeName=a4k-2", "State=DRAIN", "Reason=fan swap"),
        ("scontrol", "update", "NodeName=a4k-2", "State=RESUME")]
    for args in (("a4k-2", "drain", None), ("a4k-2", "drain", "  "), ("a4k-2", "down", "x"),
                 ("a4k 2", "resume", None), ("a4k-2", "drain", "line\nbreak"), ("-x", "resume", None)):
        with pytest.raises(InvalidRequest):
            b.update_node(*args)
    assert len(runner.calls) == 2
    b, _ = backend({"scontrol": stderr_of("stderr_node_unknown.txt")})
    with pytest.raises(SlurmRejected, match="no node nope"):
        b.update_node("nope", "drain", "x")
    b, _ = backend({"scontrol": stderr_of("stderr_resume_idle.txt")})
    with pytest.raises(SlurmRejected, match="not drained or down"):
        b.update_node("a6k-1", "resume")
    assert "reason" in fixture("stderr_drain_no_reason.txt")   # what Slurm says; never reached


def test_views_run_the_recorded_commands():
    b, runner = backend({
        "sshare": result(fixture("sshare.txt")),
        ("scontrol", "show", "assoc_mgr"): result(fixture("assoc_mgr.txt")),
        ("scontrol", "--oneliner", "show", "partition"): result(fixture("scontrol_partitions.txt")),
        ("sinfo", "--json"): result(fixture("sinfo_drained.json"))})
    assert {r.account for r in b.shares()} == {"root", "slipway-test", "team-lim"}
    assert b.assoc_usage()["root"] == 50
    assert [p.name for p in b.partitions()] == ["train", "dev"]
    assert [c["argv"][:2] for c in runner.calls] == [
        ("sshare", "--parsable2"), ("scontrol", "show"), ("scontrol", "--oneliner"), ("sinfo", "--json")]
    assert runner.calls[0]["argv"][-1] == "--format=" + ",".join(SSHARE_FIELDS)
    b, _ = backend({"sshare": result("", "sshare: error: Problem talking to the database", rc=1)})
    from slurm_bridge.errors import ControllerUnavailable
    with pytest.raises(ControllerUnavailable):
        b.shares()


# ------------------------------------------------------------------------- JobRequest.nice
def _req(**kw):
    return JobRequest(name="t/p", user="sw-alice", account="team-a", command=["true"],
                      workdir="/tmp", output="/tmp/o", **kw)


def test_nice_in_sbatch_options_only_when_positive():
    assert not any(o.startswith("--nice") for o in sbatch_options(_req()))
    assert "--nice=250" in sbatch_options(_req(nice=250))
    for bad in (-1, 2_147_483_646, 1.5, True):
        with pytest.raises(InvalidRequest, match="nice"):
            validate(_req(nice=bad), {})
