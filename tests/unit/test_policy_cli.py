"""``slipway compute|quota|emergency|queue|hold|release|requeue|node|resources|policy log|
completion`` and ``team shares`` (docs/POLICY.md): each command reaches the policy service, in
local mode (``--as``, or the operator) and in remote mode (the JSON API through a served app),
prints its answer the same either way, refuses non-administrators and bad input without changing
anything, and converges Slurm at once after a change Slurm must see (InMemoryAccounts)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from portal.app import create_app
from portal.cli import Ctx, main
from portal.db import ComputeType, EmergencyGrant, PolicyEvent, Quota, ReconcilerState, Team
from portal.policy import resources
from slurm_bridge.records import GpuCount, NodeRecord
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import make_world


@pytest.fixture
def world(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    yield svc, ids, backend
    svc.db.dispose()


def run_cli(svc, ids, *args, ok=True, actor=None, base=None, who=None):
    argv = (["--as", actor] if actor else []) + (["--url", base] if who else []) + list(args)
    env = {"SLIPWAY_URL": None, "SLIPWAY_USER": None,
           "SLIPWAY_TOKEN": ids[f"{who}_token"] if who else None}
    r = CliRunner().invoke(main, argv, obj=Ctx(services=svc), env=env, catch_exceptions=False)
    assert (r.exit_code == 0) == ok, (argv, r.exit_code, r.output)
    return r.output


def count(svc, model) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def assoc_qos(svc, user: str, team: str) -> tuple[str, ...]:
    return svc.accounts.current.assocs[(user, svc.config.slurm_account(team))].qos


# --------------------------------------------------------------------------- compute

def test_compute_define_list_remove(world):
    svc, ids, backend = world
    out = run_cli(svc, ids, "compute", "define", "a4000x2", "--gpus", "a4000:2", "--cpus", "8",
                  "--mem", "32G", "--partition", "train", "--description", "two GPUs")
    assert "compute type a4000x2: a4000:2, 8 cores, mem 32G, partition train" in out
    run_cli(svc, ids, "compute", "define", "cpu4", "--gpus", "none", "--cpus", "4")
    listing = run_cli(svc, ids, "compute", "list")
    assert "a4000x2" in listing and "two GPUs" in listing and "cpu4" in listing
    rows = json.loads(run_cli(svc, ids, "compute", "list", "--json"))
    assert [(d["name"], d["gpus"], d["cpus"], d["mem_mb"]) for d in rows] == [
        ("a4000x2", "a4000:2", 8, 32768), ("cpu4", "none", 4, None)]
    assert run_cli(svc, ids, "compute", "remove", "cpu4").startswith("compute type cpu4 removed")
    assert [d["name"] for d in json.loads(run_cli(svc, ids, "compute", "list", "--json"))] == ["a4000x2"]
    # members read the list; only cluster administrators change it
    assert "a4000x2" in run_cli(svc, ids, "compute", "list", actor="carol")
    assert "only cluster administrators" in run_cli(svc, ids, "compute", "define", "x", "--gpus",
                                                    "a4000:1", actor="alice", ok=False)
    assert "only cluster administrators" in run_cli(svc, ids, "compute", "remove", "a4000x2",
                                                    actor="alice", ok=False)
    # bad input: a clear message, nothing changed
    for args, words in [(("define", "bad", "--gpus", "zz"), "unknown GPU type"),
                        (("define", "Bad Name", "--gpus", "a4000:1"), "is not allowed"),
                        (("define", "big", "--gpus", "a4000:99"), "at most"),
                        (("define", "m", "--gpus", "a4000:1", "--mem", "9000G"), "mem"),
                        (("remove", "nope"), "unknown compute type 'nope'")]:
        assert words in run_cli(svc, ids, "compute", *args, ok=False), args
    assert count(svc, ComputeType) == 1


# ----------------------------------------------------------------------------- quota

def test_quota_set_list_remove_reaches_slurm(world):
    svc, ids, backend = world
    account = svc.config.slurm_account("nlp")
    out = run_cli(svc, ids, "quota", "set", "nlp", "gpu:a4000", "4")
    assert "quota of team nlp: gpu:a4000 = 4" in out and "warning" not in out
    assert svc.accounts.limits_of(account).grp_tres == {"gres/gpu:a4000": 4}
    run_cli(svc, ids, "quota", "set", "nlp", "jobs", "3")
    assert svc.accounts.limits_of(account).grp_jobs == 3
    run_cli(svc, ids, "quota", "set", "nlp", "cpu", "2", "--user", "carol")
    assert svc.accounts.limits_of(account, "carol").grp_tres == {"cpu": 2}
    run_cli(svc, ids, "quota", "set", "nlp", "workspaces", "1")
    listing = run_cli(svc, ids, "quota", "list", "nlp")
    assert "4 a4000 GPUs" in listing and "3 running jobs" in listing and "2 cores" in listing
    rows = json.loads(run_cli(svc, ids, "quota", "list", "nlp", "--json"))
    assert {(d["user"], d["resource"], d["value"]) for d in rows} == {
        (None, "gpu:a4000", 4), (None, "jobs", 3), ("carol", "cpu", 2), (None, "workspaces", 1)}
    # members read their team's quotas; outsiders do not learn the team exists
    assert "4 a4000 GPUs" in run_cli(svc, ids, "quota", "list", "nlp", actor="carol")
    assert "there is no team 'nlp'" in run_cli(svc, ids, "quota", "list", "nlp", actor="mallory",
                                               ok=False)
    out = run_cli(svc, ids, "quota", "remove", "nlp", "gpu:a4000")
    assert "gpu:a4000 removed" in out
    assert svc.accounts.limits_of(account).grp_tres == {}
    run_cli(svc, ids, "quota", "remove", "nlp", "cpu", "--user", "carol")
    assert svc.accounts.limits_of(account, "carol").grp_tres == {}


def test_quota_refusals_change_nothing(world):
    svc, ids, backend = world
    run_cli(svc, ids, "quota", "set", "nlp", "gpu:a4000", "4")
    before = (count(svc, Quota), count(svc, PolicyEvent), svc.accounts.calls)
    for args, words in [(("nlp", "cpu", "-5"), "between 0 and"),
                        (("nlp", "cpu", "99999999999"), "between 0 and"),
                        (("nlp", "cpu", "lots"), "whole number"),
                        (("nlp", "gpu:zz", "1"), "unknown GPU type"),
                        (("nlp", "disks", "1"), "unknown quota"),
                        (("nope", "cpu", "1"), "there is no team 'nope'"),
                        (("nlp", "cpu", "1", "--user", "mallory"), "not a member")]:
        assert words in run_cli(svc, ids, "quota", "set", *args, ok=False), args
    # non-administrators: a user may not; a team administrator sets members' within the team's
    assert "only cluster administrators" in run_cli(svc, ids, "quota", "set", "nlp", "cpu", "1",
                                                    actor="carol", ok=False)
    assert "cannot be higher" in run_cli(svc, ids, "quota", "set", "nlp", "gpu:a4000", "5",
                                         "--user", "carol", actor="bob", ok=False)
    assert (count(svc, Quota), count(svc, PolicyEvent), svc.accounts.calls) == before
    assert svc.accounts.limits_of(svc.config.slurm_account("nlp")).grp_tres == {"gres/gpu:a4000": 4}
    run_cli(svc, ids, "quota", "set", "nlp", "gpu:a4000", "2", "--user", "carol", actor="bob")
    assert svc.accounts.limits_of(svc.config.slurm_account("nlp"), "carol").grp_tres == {
        "gres/gpu:a4000": 2}


def test_a_failed_sync_is_a_warning_and_the_change_stands(world):
    svc, ids, backend = world
    svc.accounts.error = RuntimeError("sacctmgr: slurmdbd is down")
    out = run_cli(svc, ids, "quota", "set", "nlp", "jobs", "2")
    assert "quota of team nlp: jobs = 2" in out
    assert "warning: saved; Slurm gets it at the next account sync: sacctmgr: slurmdbd is down" in out
    assert count(svc, Quota) == 1


# ------------------------------------------------------------------------- emergency

def test_emergency_grant_list_revoke_reaches_slurm(world):
    svc, ids, backend = world
    out = run_cli(svc, ids, "emergency", "grant", "alice", "--until", "2099-01-31", "--note", "deadline")
    assert "alice holds the emergency right until 2099-02-01" in out
    assert "emergency" in assoc_qos(svc, "alice", "nlp")
    assert "emergency" not in assoc_qos(svc, "carol", "nlp")
    run_cli(svc, ids, "emergency", "grant", "vision", "--team")
    assert "emergency" in assoc_qos(svc, "mallory", "vision")
    listing = run_cli(svc, ids, "emergency", "list")
    assert "alice" in listing and "team vision" in listing and "deadline" in listing
    assert "revoked" in run_cli(svc, ids, "emergency", "revoke", "alice")
    assert "emergency" not in assoc_qos(svc, "alice", "nlp")
    run_cli(svc, ids, "emergency", "revoke", "vision", "--team")
    assert "emergency" not in assoc_qos(svc, "mallory", "vision")
    assert json.loads(run_cli(svc, ids, "emergency", "list", "--json")) == []
    rows = json.loads(run_cli(svc, ids, "emergency", "list", "--all", "--json"))
    assert len(rows) == 2 and not any(d["active"] for d in rows)
    assert "holds no emergency right" in run_cli(svc, ids, "emergency", "revoke", "alice", ok=False)


def test_emergency_refusals_change_nothing(world):
    svc, ids, backend = world
    before = (count(svc, EmergencyGrant), svc.accounts.calls)
    assert "in the past" in run_cli(svc, ids, "emergency", "grant", "alice", "--until", "2001-01-01",
                                    ok=False)
    assert "YYYY-MM-DD" in run_cli(svc, ids, "emergency", "grant", "alice", "--until", "soon", ok=False)
    assert "there is no user" in run_cli(svc, ids, "emergency", "grant", "zed", ok=False)
    assert "only cluster administrators" in run_cli(svc, ids, "emergency", "grant", "alice",
                                                    actor="alice", ok=False)
    assert "only cluster administrators" in run_cli(svc, ids, "emergency", "list", actor="alice",
                                                    ok=False)
    assert (count(svc, EmergencyGrant), svc.accounts.calls) == before


# --------------------------------------------------------------------- team shares

def test_team_shares_set_and_show(world):
    svc, ids, backend = world
    out = run_cli(svc, ids, "team", "shares", "nlp", "300")
    assert "team nlp: 300 shares (75.0% of the cluster)" in out
    assert svc.accounts.current.accounts[svc.config.slurm_account("nlp")].fairshare == "300"
    assert "300 shares" in run_cli(svc, ids, "team", "shares", "nlp", actor="carol")
    assert json.loads(run_cli(svc, ids, "team", "shares", "nlp", "--json"))["shares"] == 300
    assert "only cluster administrators" in run_cli(svc, ids, "team", "shares", "nlp", "5",
                                                    actor="alice", ok=False)
    assert "between 1 and" in run_cli(svc, ids, "team", "shares", "nlp", "0", ok=False)
    with svc.db.session() as s:
        assert s.scalar(select(Team.fairshare).where(Team.name == "nlp")) == 300


# ------------------------------------------------------------- queue, jobs, nodes, plan

def test_queue_and_job_actions(world):
    svc, ids, backend = world
    backend.set_queue(1002, "PENDING", account=svc.config.slurm_account("nlp"))
    backend.set_queue(1001, "RUNNING", account=svc.config.slurm_account("nlp"))
    out = run_cli(svc, ids, "queue")
    for col in ("JOB", "SLURM", "TEAM", "PROJECT", "BRANCH", "USER", "STATE", "COMPUTE", "QOS",
                "PARTITION", "POS", "START", "COST", "REASON"):
        assert col in out
    lines = [ln for ln in out.splitlines() if "exp-" in ln or "hidden-branch" in ln]
    assert "exp-1" in lines[0] and "exp-2" in lines[-1] and "Resources" in lines[-1]
    only = json.loads(run_cli(svc, ids, "queue", "--team", "nlp", "--user", "alice", "--json"))
    assert [(d["job"], d["position"]) for d in only] == [(ids["pending"], 1)]
    assert "moved to the front" in run_cli(svc, ids, "queue", "top", str(ids["pending"]))
    assert backend.tops == [(1002, 1)]
    assert "held" in run_cli(svc, ids, "hold", str(ids["pending"]))
    assert "released" in run_cli(svc, ids, "release", str(ids["pending"]))
    assert "requeued" in run_cli(svc, ids, "requeue", str(ids["running"]))
    assert (backend.holds, backend.releases, backend.requeues) == ([1002], [1002], [1001])
    assert "only a running job" in run_cli(svc, ids, "requeue", str(ids["pending"]), ok=False)
    assert "there is no job 999" in run_cli(svc, ids, "hold", "999", ok=False)
    for args in (("queue",), ("hold", str(ids["pending"])), ("queue", "top", str(ids["pending"]))):
        assert "only cluster administrators" in run_cli(svc, ids, *args, actor="alice", ok=False)
    assert backend.holds == [1002] and len(backend.tops) == 1
    log = run_cli(svc, ids, "policy", "log")
    for action in ("top", "hold", "release", "requeue"):
        assert f" {action} " in log
    assert len(json.loads(run_cli(svc, ids, "policy", "log", "--action", "hold", "--json"))) == 1
    assert "only cluster administrators" in run_cli(svc, ids, "policy", "log", actor="alice", ok=False)


def test_nodes_drain_resume(world, monkeypatch):
    svc, ids, backend = world
    monkeypatch.setattr(backend, "nodes", lambda: [NodeRecord(
        "a4k-1", "MIXED", ("DRAIN",), "disk", ("train",), 32, 8, {"a4000": GpuCount(4, 1)})])
    out = run_cli(svc, ids, "node", "list")
    assert "a4k-1" in out and "a4000:1/4" in out and "8/32" in out and "drain" in out
    assert "drained (fan noise)" in run_cli(svc, ids, "node", "drain", "a4k-1", "--reason", "fan noise")
    assert "resumed" in run_cli(svc, ids, "node", "resume", "a4k-1")
    assert backend.node_updates == [("a4k-1", "drain", "fan noise"), ("a4k-1", "resume", None)]
    assert "--reason" in run_cli(svc, ids, "node", "drain", "a4k-1", ok=False)
    assert "say why" in run_cli(svc, ids, "node", "drain", "a4k-1", "--reason", " ", ok=False)
    assert "not a node name" in run_cli(svc, ids, "node", "resume", "-", ok=False)
    assert "only cluster administrators" in run_cli(svc, ids, "node", "drain", "a4k-1", "--reason",
                                                    "x", actor="alice", ok=False)
    assert len(backend.node_updates) == 2


def sample_partitions(svc) -> None:
    """Slurm's partitions as the account sync stores them (what ``resources.plan`` reads)."""
    parts = [{"name": "train", "nodes": ["a4k-1"], "default": True, "max_time_min": None,
              "state": "UP", "allow_accounts": None, "allow_qos": None, "oversubscribe": "NO",
              "cpus": 64, "gpus": {"a4000": 8, "a6000": 2}},
             {"name": "dev", "nodes": ["a6k-1"], "default": False, "max_time_min": 120,
              "state": "UP", "allow_accounts": None, "allow_qos": None, "oversubscribe": "NO",
              "cpus": 32, "gpus": {"shard": 8}}]
    with svc.db.transaction() as s:
        s.add(ReconcilerState(key=resources.KEY, value=json.dumps(
            {"at": svc.now().isoformat(), "partitions": parts})))


def test_resources_plan(world):
    svc, ids, backend = world
    assert "not sampled from Slurm yet" in run_cli(svc, ids, "resources")
    sample_partitions(svc)
    run_cli(svc, ids, "quota", "set", "nlp", "gpu:a4000", "4")
    out = run_cli(svc, ids, "resources")
    assert "train (default)" in out and "whole GPUs" in out and "nlp: 4 a4000 GPUs" in out
    assert "shared (shards, no isolation)" in out and "120 min" in out
    rows = json.loads(run_cli(svc, ids, "resources", "--json"))["rows"]
    assert {(r["group"], r["gpu_type"], r["count"]) for r in rows} == {
        ("train", "a4000", 8), ("train", "a6000", 2), ("dev", "shard", 8)}
    assert "only cluster administrators" in run_cli(svc, ids, "resources", actor="alice", ok=False)


def test_completion_bash_is_clicks_script():
    r = CliRunner().invoke(main, ["completion", "bash"])
    assert r.exit_code == 0 and "_slipway_completion()" in r.output
    direct = CliRunner().invoke(main, [], env={"_SLIPWAY_COMPLETE": "bash_source"}, prog_name="slipway")
    assert r.output == direct.output
    assert CliRunner().invoke(main, ["completion", "fish"]).exit_code != 0


# ------------------------------------------------------------------------------ remote

@pytest.fixture
def site(tmp_path):
    from tests.support.git_server import serve

    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    with serve(create_app(svc)) as base:
        yield svc, ids, base, backend
    svc.db.dispose()


def test_remote_prints_what_local_prints(site):
    svc, ids, base, backend = site
    remote = dict(base=base, who="dave")
    out = run_cli(svc, ids, "compute", "define", "a4000x2", "--gpus", "a4000:2", "--cpus", "8", **remote)
    assert "compute type a4000x2: a4000:2, 8 cores" in out
    out = run_cli(svc, ids, "quota", "set", "nlp", "gpu:a4000", "4", **remote)
    assert out == "quota of team nlp: gpu:a4000 = 4\n"
    assert svc.accounts.limits_of(svc.config.slurm_account("nlp")).grp_tres == {"gres/gpu:a4000": 4}
    run_cli(svc, ids, "emergency", "grant", "alice", "--until", "2099-01-31", **remote)
    assert "emergency" in assoc_qos(svc, "alice", "nlp")
    run_cli(svc, ids, "team", "shares", "nlp", "50", **remote)
    backend.set_queue(1002, "PENDING")
    assert "moved to the front" in run_cli(svc, ids, "queue", "top", str(ids["pending"]), **remote)
    assert "held" in run_cli(svc, ids, "hold", str(ids["pending"]), **remote)
    assert "drained (x)" in run_cli(svc, ids, "node", "drain", "a4k-1", "--reason", "x", **remote)
    for args in (("compute", "list"), ("quota", "list", "nlp"), ("emergency", "list", "--json"),
                 ("team", "shares", "nlp"), ("queue",), ("queue", "--json"), ("node", "list"),
                 ("resources",), ("policy", "log", "--json")):
        assert run_cli(svc, ids, *args, **remote) == run_cli(svc, ids, *args), args
    # refusals come back with the service's words and a non-zero exit
    assert "only cluster administrators" in run_cli(svc, ids, "quota", "set", "nlp", "cpu", "1",
                                                    base=base, who="carol", ok=False)
    assert "only cluster administrators" in run_cli(svc, ids, "queue", base=base, who="alice", ok=False)
    assert "between 0 and" in run_cli(svc, ids, "quota", "set", "nlp", "cpu", "-1", **remote, ok=False)
    assert "in the past" in run_cli(svc, ids, "emergency", "grant", "bob", "--until", "2001-01-01",
                                    **remote, ok=False)
    assert "unknown compute type" in run_cli(svc, ids, "compute", "remove", "nope", **remote, ok=False)
    svc.accounts.error = RuntimeError("slurmdbd down")
    out = run_cli(svc, ids, "quota", "set", "nlp", "jobs", "2", **remote)
    assert "warning: saved; Slurm gets it at the next account sync: slurmdbd down" in out
