"""Parsing real squeue/sacct/sinfo JSON recorded from the local cluster (tests/fixtures/slurm)."""
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from slurm_bridge.records import (parse_gres, parse_nodes, parse_sacct, parse_squeue,
                                  parse_tres_str)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def load(name):
    return json.loads((FIX / name).read_text())


def by_name(recs):
    return {r.name: r for r in recs}


def test_squeue_running_pending_held():
    recs = by_name(parse_squeue(load("squeue.json")))
    gpu = recs["rec-a4000"]
    assert gpu.state == "RUNNING" and gpu.reason == "None" and gpu.node == "a4k-1"
    assert gpu.user == "sw-alice" and gpu.account == "team-test" and gpu.qos == "normal"
    assert gpu.comment.startswith("slipway:") and gpu.partition == "gpu"
    assert dict(gpu.gpus) == {"a4000": 2}
    assert gpu.start_time and gpu.start_time.tzinfo == timezone.utc
    assert gpu.submit_time <= gpu.start_time
    assert dict(recs["rec-shard"].gpus) == {"shard": 2}
    held = recs["rec-held"]
    assert held.state == "PENDING" and held.held and held.start_time is None and held.node == ""
    assert not gpu.held


def test_squeue_requeued_victim_has_restart_count():
    recs = by_name(parse_squeue(load("squeue_requeued.json")))
    victim = recs["rec-victim"]
    assert victim.restart_count == 1 and victim.state == "PENDING" and victim.reason == "BeginTime"
    assert recs["rec-emergency"].qos == "emergency"


def test_sacct_gpu_job():
    rec = by_name(parse_sacct(load("sacct.json")))["rec-a4000"]
    assert rec.state == "COMPLETED" and rec.exit_code == 0 and rec.signal is None
    assert dict(rec.gpus) == {"a4000": 2} and rec.shards == 0
    assert rec.elapsed_s == 4 and (rec.end - rec.start).total_seconds() == 4
    assert rec.node == "a4k-1" and rec.user == "sw-alice" and rec.account == "team-test"
    assert rec.qos == "normal" and rec.attempt == 0 and rec.complete and rec.settled


def test_sacct_shard_job():
    rec = by_name(parse_sacct(load("sacct.json")))["rec-shard"]
    assert dict(rec.gpus) == {} and rec.shards == 2 and rec.node == "a6k-1"


def test_sacct_duplicates_give_attempts_in_submit_order():
    recs = [r for r in parse_sacct(load("sacct.json")) if r.name == "rec-victim"]
    assert [(r.attempt, r.state) for r in recs] == [(0, "PREEMPTED"), (1, "CANCELLED")]
    assert recs[0].job_id == recs[1].job_id and recs[0].end <= recs[1].start
    assert all(dict(r.gpus) == {"a6000": 2} for r in recs)
    assert recs[1].restart_count == 1
    emergency = by_name(parse_sacct(load("sacct.json")))["rec-emergency"]
    assert emergency.qos == "emergency"


def test_sacct_right_after_the_end_is_not_settled():
    # recorded: the first sacct answers after a job ends carry QOS null
    rec = parse_sacct(load("sacct_unsettled.json"))[0]
    assert rec.state == "COMPLETED" and rec.complete
    assert rec.qos == "" and not rec.settled


def test_sacct_empty_alloc_tres_is_not_settled():
    data = load("sacct.json")
    for j in data["jobs"]:
        j["tres"]["allocated"] = []
    rec = by_name(parse_sacct(data))["rec-a4000"]
    assert rec.complete and not rec.settled and dict(rec.gpus) == {}


def test_sacct_signalled_exit():
    data = load("sacct.json")
    job = next(j for j in data["jobs"] if j["name"] == "rec-a4000")
    job["state"]["current"] = "FAILED"
    job["exit_code"] = {"status": "SIGNALED", "return_code": 0,
                        "signal": {"signal_id": 9, "name": "KILL"}}
    rec = by_name(parse_sacct(data))["rec-a4000"]
    assert rec.exit_code is None and rec.signal == 9


def test_nodes_gpu_counts():
    nodes = {n.name: n for n in parse_nodes(load("sinfo.json"))}
    a4k1, a4k2, a6k = nodes["a4k-1"], nodes["a4k-2"], nodes["a6k-1"]
    assert (a4k1.gpus["a4000"].total, a4k1.gpus["a4000"].allocated, a4k1.gpus["a4000"].free) == (4, 2, 2)
    assert a4k2.gpus["a4000"].free == 4 and a4k2.state == "idle" and a4k2.available
    assert a6k.gpus["a6000"].total == 2 and a6k.gpus["a6000"].allocated == 0
    assert a6k.gpus["shard"].total == 8 and a6k.gpus["shard"].allocated == 2
    assert a4k1.state == "mixed" and a4k1.partitions == ("gpu",) and a4k1.cpus == 8


def test_node_down_or_drained_is_not_available():
    data = load("sinfo.json")
    data["nodes"][0]["state"] = "down"
    data["nodes"][1]["state_flags"] = ["DRAIN"]
    nodes = parse_nodes(data)
    assert not nodes[0].available and not nodes[1].available and nodes[2].available


@pytest.mark.parametrize("text,expected", [
    ("gpu:a4000:4", {"a4000": 4}),
    ("gpu:a4000:2(IDX:0-1),shard:0", {"a4000": 2, "shard": 0}),
    ("gpu:a6000:2,shard:a6000:8", {"a6000": 2, "shard": 8}),
    ("gpu:a4000:2(IDX:0,2),gpu:a6000:1(IDX:1)", {"a4000": 2, "a6000": 1}),
    ("gres:gpu:a4000:2", {"a4000": 2}),
    ("gpu:3", {"gpu": 3}),
    ("", {}), (None, {}), ("(null)", {}),
])
def test_parse_gres(text, expected):
    assert parse_gres(text) == expected


def test_parse_tres_str():
    assert parse_tres_str("billing=21,cpu=1,gres/gpu:a4000=2,gres/gpu=2,mem=256M,node=1") == {"a4000": 2}
    assert parse_tres_str("cpu=1,gres/shard=2") == {"shard": 2}
    assert parse_tres_str("") == {} and parse_tres_str(None) == {}


def test_attempt_cancelled_while_pending_is_settled_though_qos_stays_unknown():
    """Recorded on the live cluster: `sbatch --hold`, then `scancel` — QOS reads Unknown for good."""
    from datetime import datetime, timezone

    from slurm_bridge.records import SacctRecord

    t = datetime(2026, 11, 23, 16, 37, tzinfo=timezone.utc)
    never_ran = SacctRecord(job_id=1, attempt=0, name="x", user="sw-alice", account="a", qos="",
                            state="CANCELLED", exit_code=0, signal=None, submit=t, start=t, end=t,
                            elapsed_s=0, node="", gpus={}, shards=0, comment="",
                            alloc_tres_recorded=False)
    assert never_ran.settled
    ran = SacctRecord(job_id=2, attempt=0, name="x", user="sw-alice", account="a", qos="",
                      state="COMPLETED", exit_code=0, signal=None, submit=t, start=t, end=t,
                      elapsed_s=3, node="a4k-1", gpus={}, shards=0, comment="",
                      alloc_tres_recorded=False)
    assert not ran.settled  # it ran: wait for QOS and AllocTRES
