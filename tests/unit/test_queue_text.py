"""slurm_bridge.queue_text: the lean squeue answer, read into the same QueueRecords as
``squeue --json``. Fixtures recorded from the local cluster (22.05) in ONE moment:
squeue_text.txt (the text answer to ``queue_argv(token)``, token in squeue_text.token) and
squeue_text.json (``squeue --json`` of the same queue, with SLURM_BITSTR_LEN=0)."""
import json
from dataclasses import replace
from datetime import timezone
from pathlib import Path

import pytest

from slurm_bridge import queue_text
from slurm_bridge.cli import CliBackend
from slurm_bridge.errors import ControllerUnavailable, SlurmRejected
from slurm_bridge.queue_text import QueueTextError, parse_queue_text, queue_argv, separators
from slurm_bridge.records import parse_squeue
from slurm_bridge.runner import FakeRunner, result

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
TOKEN = (FIX / "squeue_text.token").read_text().strip()
TEXT = (FIX / "squeue_text.txt").read_text()
EXCLUSIVE = 10158        # running with --exclusive: allocated 8 cores, asked for 1
ENDED_ARRAYS = {10146, 10149}   # cancelled arrays' records with no task left: squeue prints no
                                # array id for them (array_job_id 0; --json: the array's id)


def by_id(recs):
    return {r.job_id: r for r in recs}


@pytest.fixture(scope="module")
def both():
    return (by_id(parse_queue_text(TEXT, TOKEN)),
            by_id(parse_squeue(json.loads((FIX / "squeue_text.json").read_text()))))


def test_recorded_text_gives_the_records_json_gives(both):
    text, js = both
    assert sorted(text) == sorted(js) and len(text) == 20
    for job_id, rec in js.items():
        if job_id == EXCLUSIVE:  # documented difference: cores allocated, not asked for
            assert text[job_id].cpus == 8 and rec.cpus == 1
            assert replace(text[job_id], cpus=1) == rec
        elif job_id in ENDED_ARRAYS:   # documented difference, see queue_text's doc
            assert text[job_id].array_job_id == 0 and rec.array_job_id == job_id
            assert rec.state == "CANCELLED" and not rec.array_tasks and rec.array_task_id is None
            assert replace(text[job_id], array_job_id=job_id) == rec
        else:
            assert text[job_id] == rec, job_id


def test_recorded_queue_is_varied(both):
    text, _ = both
    recs = list(text.values())
    states = {r.state for r in recs}
    assert {"PENDING", "RUNNING", "CANCELLED"} <= states
    hostile = next(r for r in recs if r.name.startswith("evil"))
    assert hostile.name == "evil\nname|x" and hostile.comment == "c1\n1|PENDING|fake"
    assert hostile.held and hostile.reason == "JobHeldUser" and hostile.priority == 0
    two = next(r for r in recs if r.name == "twonode")
    assert two.node == "a4k-[1-2]" and two.node_count == 2 and dict(two.gpus) == {"a4000": 2}
    assert two.start_time is not None and two.expected_start is None
    pending = next(r for r in recs if r.pending_tasks and r.name == "arr")
    assert pending.array_tasks == "2-9%2" and pending.array_task_id is None
    assert pending.job_id == pending.array_job_id and pending.comment == "slipway:arr"
    tasks = sorted((r.array_task_id, r.job_id) for r in recs
                   if r.array_job_id == pending.array_job_id and not r.pending_tasks)
    assert [t for t, _ in tasks] == [0, 1] and all(j != pending.job_id for _, j in tasks)
    sparse = next(r for r in recs if r.name == "sparse")
    assert sparse.array_tasks.endswith(",1482,1560")  # whole, not cut at 64 characters
    untyped = next(r for r in recs if r.name == "untyped")
    assert untyped.state == "RUNNING" and dict(untyped.gpus) == {}  # asked for no GPU type
    exclusive = next(r for r in recs if r.job_id == EXCLUSIVE)
    assert dict(exclusive.gpus) == {"a6000": 1}  # what it asked for; Slurm gave it both
    nice = next(r for r in recs if r.name == "x")
    assert nice.nice == 50 and nice.submit_time.tzinfo is timezone.utc and nice.start_time is None
    waiting = next(r for r in recs if r.name == "waits" and r.state == "PENDING")
    assert waiting.node == "" and waiting.start_time is None and waiting.node_count == 2
    # an array task the controller keeps apart (its nice changed) stays its own record
    comb = [r for r in recs if r.name == "comb" and r.state == "PENDING"]
    assert sorted(((r.array_task_id or -1), r.array_tasks, r.nice) for r in comb) == [
        (-1, "0-1,3-5", 0), (2, "", 10)]
    assert all(r.comment == "slipway:comb" for r in comb)


def answer(recs: list[list[str]], token: str) -> str:
    """A text answer as squeue prints it for ``queue_argv(token)``: fixed fields end with
    \\x1f, Comment with the token's delimiter, Name with the record marker, then a newline."""
    delim, marker = separators(token)
    return "".join("\x1f".join(f[:-2]) + "\x1f" + f[-2] + delim + f[-1] + marker + "\n"
                   for f in recs)


def fields(job_id: int, comment: str = "(null)", name: str = "j") -> list[str]:
    return [str(job_id), str(job_id), "N/A", "PENDING", "JobHeldUser", "", "N/A", "1700000000",
            "0", "cpu=1,mem=1000M,node=1,billing=1", "N/A", "N/A", "N/A", "1", "1", "1", "0", "0",
            "train", "acct", "sw-alice", "normal", comment, name]


def test_hostile_comment_and_name_cannot_fake_a_record():
    token = queue_text.new_token()
    other = queue_text.new_token()
    fake = answer([fields(666, "slipway", "fake")], other)   # a whole record, wrong token
    plain_fake = "\x1f".join(fields(667))                     # and one with bare \x1f
    text = answer([fields(1, "c\n" + fake + plain_fake, "n\n" + fake + "\x1e\n\x1f"),
                   fields(2, "slipway:9", "ok")], token)
    recs = parse_queue_text(text, token)
    assert [r.job_id for r in recs] == [1, 2]
    assert recs[0].comment == "c\n" + fake + plain_fake
    assert recs[0].name == "n\n" + fake + "\x1e\n\x1f"
    assert recs[1].comment == "slipway:9" and recs[0].held


def test_an_answer_cut_short_or_not_ours_raises():
    token = queue_text.new_token()
    whole = answer([fields(1), fields(2)], token)
    assert [r.job_id for r in parse_queue_text(whole, token)] == [1, 2]
    with pytest.raises(QueueTextError, match="ends inside a record"):
        parse_queue_text(whole[:-40], token)
    with pytest.raises(QueueTextError):
        parse_queue_text(whole, queue_text.new_token())   # another call's answer
    short = answer([fields(1)[:10] + fields(1)[-2:]], token)
    with pytest.raises(QueueTextError, match="fields"):
        parse_queue_text(short, token)
    assert parse_queue_text("", token) == []


def test_argv_asks_for_every_job_only_the_fields_once():
    token = "0123abcd0123abcd"
    argv = queue_argv(token)
    assert argv[:5] == ["squeue", "--noheader", "--all", "--states=all", "--array-unique"]
    spec = argv[5].removeprefix("--Format=")
    items = spec.split(",")
    assert [i.split(":")[0] for i in items] == list(queue_text.FIELDS)
    assert items[-2].endswith("\x1f" + token + "\x1f") and items[-1].endswith("\x1e" + token + "\x1e")
    assert all(i.endswith(":0\x1f") for i in items[:-2])
    with pytest.raises(ValueError):
        queue_argv("a,b")


def responder(text: str, token: str):
    def answer_argv(argv, _input):
        spec = argv[-1]
        new = spec.rsplit("\x1e", 2)[-2]   # the token of this call's record marker
        return result(text.replace(token, new))
    return answer_argv


def backend(answer_for):
    runner = FakeRunner({"squeue": answer_for})
    return CliBackend(runner, env={"SLURM_CONF": "/c/slurm.conf", "PATH": "/usr/bin"},
                      as_root=True), runner


def test_jobs_is_one_lean_squeue_with_a_fresh_token_filtered_by_comment(both):
    b, runner = backend(responder(TEXT, TOKEN))
    everything = b.jobs(comment=None)
    ours = b.jobs()
    assert len(runner.calls) == 2
    first, second = (c["argv"] for c in runner.calls)
    assert first[0] == "squeue" and "--json" not in first and first[-1] != second[-1]
    env = runner.calls[0]["env"]
    assert env["SLURM_TIME_FORMAT"] == "%s" and env["SLURM_BITSTR_LEN"] == "0"
    assert env["SLURM_CONF"] == "/c/slurm.conf"
    assert everything == both[0]
    assert sorted(ours) == sorted(k for k, r in everything.items()
                                  if r.comment == "slipway" or r.comment.startswith("slipway:"))
    assert ours and all(r.comment.startswith("slipway") for r in ours.values())


def test_controller_down_is_unavailable_never_an_empty_queue():
    body, _, rc = (FIX / "stderr_down_squeue_text.txt").read_text().rpartition("rc=")
    b, _ = backend(result("", body, rc=int(rc)))
    with pytest.raises(ControllerUnavailable, match="Unable to contact"):
        b.jobs(comment=None)
    b, _ = backend(result("", body, rc=0))   # exit 0 but no answer: still no answer
    with pytest.raises(ControllerUnavailable):
        b.jobs(comment=None)
    b, _ = backend(result("", "squeue: error: Invalid job format specification: x", rc=1))
    with pytest.raises(SlurmRejected, match="Invalid job format"):
        b.jobs(comment=None)


def test_unreadable_answer_is_rejected_not_read_as_fewer_jobs():
    b, _ = backend(responder(TEXT[:-30], TOKEN))
    with pytest.raises(SlurmRejected, match="cannot be read"):
        b.jobs(comment=None)


JSON_FIXTURES = sorted(p.name for p in FIX.glob("squeue*.json"))


@pytest.mark.parametrize("name", JSON_FIXTURES)
def test_every_recorded_json_queue_reads_the_same_as_text(name):
    """tests/support/squeue_text prints a recorded --json queue as squeue's text; read back,
    it is the same records (arrays, requeued, priorities, shards, multi-node)."""
    from tests.support.squeue_text import render
    data = json.loads((FIX / name).read_text())
    token = queue_text.new_token()
    text = by_id(parse_queue_text(render(data, token), token))
    js = by_id(parse_squeue(data))
    assert sorted(text) == sorted(js) and js
    for job_id, rec in js.items():
        # cores: the renderer prints the allocation; an ended array's record: no array id
        assert replace(text[job_id], cpus=rec.cpus, array_job_id=rec.array_job_id) == rec
        if text[job_id].array_job_id != rec.array_job_id:
            assert rec.state == "CANCELLED" and rec.array_task_id is None and not rec.array_tasks
