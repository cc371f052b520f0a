"""Parsing real squeue/sinfo JSON and sacct --parsable2 text recorded from the local cluster
(tests/fixtures/slurm, record.sh)."""
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
    assert gpu.user == "sw-alice" and gpu.account == "slipway-test" and gpu.qos == "normal"
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


def sacct(name="sacct.txt"):
    return parse_sacct((FIX / name).read_text())


def test_sacct_gpu_job():
    rec = by_name(sacct())["rec-a4000"]
    assert rec.state == "COMPLETED" and rec.exit_code == 0 and rec.signal is None
    assert dict(rec.gpus) == {"a4000": 2} and rec.shards == 0
    assert rec.elapsed_s == 4 and (rec.end - rec.start).total_seconds() == 4
    assert rec.start.tzinfo == timezone.utc and rec.submit <= rec.start
    assert rec.node == "a4k-1" and rec.user == "sw-alice" and rec.account == "slipway-test"
    assert rec.qos == "normal" and rec.attempt == 0 and rec.complete and rec.settled


def test_sacct_times_are_epoch_seconds_as_aware_utc():
    line = (FIX / "sacct.txt").read_text().splitlines()[0].split("|")
    rec = sacct()[0]
    assert rec.start == datetime.fromtimestamp(int(line[4]), tz=timezone.utc)
    # without SLURM_TIME_FORMAT=%s sacct prints local wall-clock time: read as local time
    local = rec.start.astimezone().replace(tzinfo=None).isoformat()
    line[3] = line[4] = line[5] = local
    again = parse_sacct("|".join(line))[0]
    assert again.start == rec.start and again.end == rec.start


def test_sacct_exit_code_3():
    """Recorded: a batch script that exits 3; sacct --json (22.05) says return_code 0 for it."""
    rec = by_name(sacct())["rec-exit3"]
    assert rec.state == "FAILED" and rec.exit_code == 3 and rec.signal is None
    assert rec.complete and rec.settled
    bug = load("sacct_json_exit3.json")["jobs"][0]
    assert bug["name"] == "rec-exit3" and bug["exit_code"]["return_code"] == 0


def test_sacct_cancelled_running_job():
    rec = by_name(sacct())["rec-cancel"]
    assert rec.state == "CANCELLED" and rec.exit_code == 0  # "CANCELLED by 0", ExitCode 0:0
    assert rec.node == "a4k-1" and rec.elapsed_s > 0 and rec.settled and dict(rec.gpus) == {}


def test_sacct_running_job_is_not_complete():
    [rec] = sacct("sacct_running.txt")
    assert rec.state == "RUNNING" and rec.end is None and not rec.complete and not rec.settled
    assert rec.exit_code is None and rec.start is not None


def test_sacct_cancelled_while_pending_never_ran_and_is_settled():
    [rec] = sacct("sacct_cancelled_pending.txt")
    assert rec.state == "CANCELLED" and rec.start is None and rec.end is not None
    assert rec.node == "" and rec.elapsed_s == 0 and not rec.alloc_tres_recorded
    assert rec.settled
    unknown = parse_sacct((FIX / "sacct_cancelled_pending.txt").read_text().replace("|normal|", "|Unknown|"))
    assert unknown[0].qos == "" and unknown[0].settled  # QOS may stay Unknown for good


def test_sacct_shard_job():
    rec = by_name(sacct())["rec-shard"]
    assert dict(rec.gpus) == {} and rec.shards == 2 and rec.node == "a6k-1"


def test_sacct_duplicates_give_attempts_in_submit_order():
    recs = [r for r in sacct() if r.name == "rec-victim"]
    assert [(r.attempt, r.state) for r in recs] == [(0, "PREEMPTED"), (1, "CANCELLED")]
    assert recs[0].job_id == recs[1].job_id and recs[0].end <= recs[1].start
    assert recs[0].end == recs[1].submit  # a requeued attempt is submitted when the last one ends
    assert all(dict(r.gpus) == {"a6000": 2} for r in recs)
    assert recs[1].restart_count == 1
    emergency = by_name(sacct())["rec-emergency"]
    assert emergency.qos == "emergency"


def test_sacct_name_with_delimiter_and_newline():
    recs = sacct()
    odd = [r for r in recs if r.name.startswith("rec-odd")]
    assert [r.name for r in odd] == ["rec-odd|name\n99|COMPLETED|0:0"]
    assert 99 not in {r.job_id for r in recs}


def test_sacct_name_cannot_fake_a_record_with_a_private_delimiter():
    d = "\x1fa1b2c3\x1f"
    fake = "99|COMPLETED|0:0|1|1|61|60|a4k-1|gres/gpu:a4000=4|team-x|normal|sw-bob|x"
    line = d.join(["7", "COMPLETED", "0:0", "1", "1", "2", "1", "a4k-1", "cpu=1", "a", "normal",
                   "sw-alice", "evil\n" + fake]) + "\n"
    [rec] = parse_sacct(line, d)
    assert rec.job_id == 7 and rec.name == "evil\n" + fake
    assert len(parse_sacct(line.replace(d, "|"))) == 2  # why the bridge never uses a plain "|"


def test_sacct_right_after_the_end_is_settled_for_billing():
    # recorded: the first sacct answers after a job ends may carry QOS Unknown (name
    # "allocation": slurmdbd's record from the completion message); start, end, nodes and
    # AllocTRES are in, so it is billed as it is
    [rec] = sacct("sacct_unsettled.txt")
    assert rec.state == "COMPLETED" and rec.complete and rec.name == "allocation"
    assert rec.qos == "" and rec.settled
    assert dict(rec.gpus) == {"a4000": 1} and rec.elapsed_s == 2 and rec.node == "a4k-1"


def test_sacct_qos_unknown_without_alloc_tres_is_not_settled():
    text = (FIX / "sacct_unsettled.txt").read_text().replace(
        "billing=11,cpu=1,gres/gpu:a4000=1,gres/gpu=1,mem=256M,node=1", "")
    [rec] = parse_sacct(text)
    assert rec.complete and rec.qos == "" and not rec.settled


def test_sacct_empty_alloc_tres_is_not_settled():
    text = (FIX / "sacct.txt").read_text().replace(
        "billing=21,cpu=1,gres/gpu:a4000=2,gres/gpu=2,mem=256M,node=1", "")
    rec = by_name(parse_sacct(text))["rec-a4000"]
    assert rec.complete and not rec.settled and dict(rec.gpus) == {}


def test_sacct_signalled_exit():
    text = (FIX / "sacct.txt").read_text().replace("|COMPLETED|0:0|", "|FAILED|0:9|", 1)
    rec = by_name(parse_sacct(text))["rec-a4000"]
    assert rec.state == "FAILED" and rec.exit_code is None and rec.signal == 9


def test_sacct_empty_answer():
    assert parse_sacct("") == [] and parse_sacct("\n") == []


def test_record_script_asks_for_the_bridge_fields():
    from slurm_bridge.records import SACCT_FIELDS
    assert "FIELDS=" + ",".join(SACCT_FIELDS) + "\n" in (FIX / "record.sh").read_text()
    assert SACCT_FIELDS[-1] == "JobName"


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


@pytest.mark.parametrize("elapsed", ["", "Unknown", "-3"])
def test_sacct_missing_elapsed_is_none_not_zero(elapsed):
    """An ElapsedRaw sacct left empty is unknown, not 0 s: billing then uses end - start."""
    from accounting.billing import target_minutes

    line = next(l for l in (FIX / "sacct.txt").read_text().splitlines() if l.endswith("|rec-cancel"))
    fields = line.split("|")
    assert fields[6] == "134"
    fields[6] = elapsed
    [rec] = parse_sacct("|".join(fields) + "\n")
    assert rec.elapsed_s is None
    assert rec.state == "CANCELLED" and rec.settled
    assert (rec.end - rec.start).total_seconds() == 134
    assert target_minutes(rec, rec.end) == 3  # ceil(134 s / 60), from end - start
    [zero] = parse_sacct(line.replace("|134|", "|0|") + "\n")
    assert zero.elapsed_s == 0 and target_minutes(zero, zero.end) == 0  # a real 0 stays 0


def test_sacct_never_ran_with_empty_elapsed_is_settled():
    text = (FIX / "sacct_cancelled_pending.txt").read_text()
    [rec] = parse_sacct(text.replace("|0|None assigned|", "||None assigned|"))
    assert rec.elapsed_s is None and rec.start is None and rec.settled
