"""slurm_bridge for issue 14: job arrays (sweeps), shards of one GPU type, multi-node jobs.

Parsing is checked on outputs recorded from the live local cluster
(tests/fixtures/slurm/record_arrays.sh): array 49 (``--array=0-5%2``; task 1 requeued once,
task 2 cancelled, task 4 exits 3), array 55 (``0-3%1``, cancelled whole while task 0 ran), two
``--gres=shard:2`` jobs of two users at once (57, 58) and a 2-node job (59).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from slurm_bridge.backend import SlurmBackend
from slurm_bridge.cli import CliBackend, slurm_time
from slurm_bridge.errors import GresUnavailable, InvalidRequest, JobNotFound, SlurmRejected
from slurm_bridge.fields import _opt_int
from slurm_bridge.records import SACCT_FIELDS, parse_sacct, parse_squeue
from slurm_bridge.request import (GpuRequest, JobRequest, array_task_count, array_throttle,
                                  validate, validate_gpus)
from slurm_bridge.runner import FakeRunner, result
from slurm_bridge.script import sbatch_options
from tests.support.fakes import T0, FakeBackend
from tests.support.squeue_text import text_answer

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
LIMITS = {"a4000": 4, "a6000": 2, "shard": 8, "a6000-shard": 8}
ALICE = SimpleNamespace(pw_uid=1001, pw_gid=1500, pw_dir="/home/sw-alice")


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def squeue(name: str):
    return parse_squeue(json.loads(fixture(name)))


def backend(responses, **kw):
    runner = FakeRunner(responses)
    kw.setdefault("gpu_limits", LIMITS)
    b = CliBackend(runner, env={"SLURM_CONF": "/c/slurm.conf", "PATH": "/usr/bin"},
                   as_root=True, user_ids=lambda u: ALICE, **kw)
    return b, runner


def req(**kw) -> JobRequest:
    base = dict(name="team/proj:main", user="sw-alice", account="team-test",
                command=["python", "-m", "x"], workdir="/tmp/w", output="/tmp/w/task-%a.log")
    base.update(kw)
    return JobRequest(**base)


# ------------------------------------------------------------------------- array specs
@pytest.mark.parametrize("spec, count, throttle", [
    ("0-5", 6, None), ("0-5%2", 6, 2), ("0,3,7", 3, None), ("1-9:2", 5, None), ("7", 1, None),
    ("0-99999", 100_000, None), ("0-3,2-5", 6, None), ("0,0,0", 1, None), ("0-9:3%1", 4, 1),
    ("99999", 1, None),
])
def test_array_task_count(spec, count, throttle):
    assert array_task_count(spec) == count
    assert array_throttle(spec) == throttle
    assert validate(req(array=spec), LIMITS).array == spec


@pytest.mark.parametrize("spec, message", [
    ("", "write task indexes like 0-5"),
    ("%2", "write task indexes like 0-5"),
    ("0-5%0", "at least 1"),
    ("0-5%", "at least 1"),
    ("0-5%2%3", "at least 1"),
    ("0-5%-1", "at least 1"),
    ("5-1", "the range 5-1 ends before it starts"),
    ("0-100000", "task indexes go from 0 to 99999, not 100000"),
    ("100000", "not 100000"),
    ("0-5:0", "the step in 0-5:0 must be at least 1"),
    ("0,,1", "write task indexes"),
    ("1-2-3", "write task indexes"),
    (" 0-5", "write task indexes"),
    ("-1", "write task indexes"),
    ("0-5;ls", "write task indexes"),
    ("0-5\n", "single line"),
    ("0,1\x00", "NUL"),
    ("1" * 5000, "at most 4096"),
])
def test_bad_array_specs_are_refused_with_a_reason(spec, message):
    with pytest.raises(InvalidRequest, match=message):
        array_task_count(spec)
    with pytest.raises(InvalidRequest, match=message):
        validate(req(array=spec), LIMITS)


@pytest.mark.parametrize("spec", [5, None, b"0-5", ["0-5"]])
def test_array_spec_must_be_text(spec):
    with pytest.raises(InvalidRequest, match="job array must be text"):
        array_task_count(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("nodes", [0, -1, 65, True, 1.5, "2"])
def test_nodes_are_a_whole_number_from_1_to_64(nodes):
    with pytest.raises(InvalidRequest, match="nodes must be"):
        validate(req(nodes=nodes), LIMITS)


def test_nodes_in_range_are_accepted():
    assert validate(req(nodes=64), LIMITS).nodes == 64
    assert req().nodes == 1 and req().array is None


# ------------------------------------------------------------------------ sbatch options
def test_single_node_job_keeps_its_options():
    opts = sbatch_options(req(gpus=GpuRequest("a4000", 2), cpus=4))
    assert "--ntasks=1" in opts and "--nodes=1" in opts
    assert not any(o.startswith(("--ntasks-per-node", "--array")) for o in opts)
    assert "--gres=gpu:a4000:2" in opts and "--cpus-per-task=4" in opts


def test_multi_node_job_has_one_task_per_node_and_per_node_gres():
    opts = sbatch_options(req(nodes=2, gpus=GpuRequest("a4000", 4), cpus=8))
    assert {"--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--gres=gpu:a4000:4",
            "--cpus-per-task=8"} <= set(opts)
    assert "--nodes=1" not in opts and "--ntasks=1" not in opts


def test_array_option():
    opts = sbatch_options(req(array="0-5%2"))
    assert "--array=0-5%2" in opts and opts.count("--array=0-5%2") == 1
    assert "--output=/tmp/w/task-%a.log" in opts


def test_submit_of_an_array_returns_the_array_id():
    b, runner = backend({"sbatch": result("812\n")})
    assert b.submit(req(array="0-5%2", gpus=GpuRequest("a6000-shard", 2))) == 812
    argv = runner.calls[0]["argv"]
    assert "--array=0-5%2" in argv and "--gres=shard:2" in argv


def test_a_bad_array_never_reaches_sbatch():
    b, runner = backend({"sbatch": result("1\n")})
    with pytest.raises(InvalidRequest, match="job array"):
        b.submit(req(array="0-5%0"))
    with pytest.raises(InvalidRequest, match="nodes"):
        b.submit(req(nodes=0))
    assert runner.calls == []


# -------------------------------------------------------------------------------- shards
def test_shards_of_a_gpu_type():
    g = GpuRequest.parse("a6000-shard:2")
    assert g == GpuRequest("a6000-shard", 2)
    assert g.gres == "shard:2" and g.is_shard and g.shared_type == "a6000" and g.unit == "shard"
    assert str(g) == "a6000-shard x2"
    plain = GpuRequest("shard", 2)
    assert plain.gres == "shard:2" and plain.is_shard and plain.shared_type is None
    whole = GpuRequest("a6000", 2)
    assert whole.gres == "gpu:a6000:2" and not whole.is_shard and whole.shared_type is None
    assert whole.unit == "GPU"
    assert not GpuRequest("-shard", 1).is_shard


def test_shard_types_are_validated_against_the_limits():
    validate_gpus(GpuRequest("a6000-shard", 8), LIMITS)
    with pytest.raises(InvalidRequest, match="a6000-shard allows at most 8 shards per job; "
                                             "you asked for 9"):
        validate_gpus(GpuRequest("a6000-shard", 9), LIMITS)
    with pytest.raises(InvalidRequest, match="unknown GPU type 'a4000-shard'"):
        validate_gpus(GpuRequest("a4000-shard", 1), LIMITS)
    validate_gpus(GpuRequest("shard", 2), LIMITS)  # the plain type, as before


def test_refused_shards_are_explained_with_the_shard_inventory():
    b, _ = backend({"sbatch": result("", "sbatch: error: Batch job submission failed: Requested "
                                         "node configuration is not available\n", rc=1)},
                   gres_inventory={"a4000": 4, "a6000": 2, "shard": 16})
    with pytest.raises(GresUnavailable) as info:
        b.submit(req(gpus=GpuRequest("a6000-shard", 2), cpus=512))
    assert "no node can run --gres=shard:2 together with the CPUs and memory" in str(info.value)
    b, _ = backend({"sbatch": result("", "sbatch: error: Batch job submission failed: Requested "
                                         "node configuration is not available\n", rc=1)},
                   gres_inventory={"a4000": 4})
    with pytest.raises(GresUnavailable, match=r"no node has shards \(you asked for a6000-shard x2"):
        b.submit(req(gpus=GpuRequest("a6000-shard", 2)))


# ------------------------------------------------------------------------ squeue parsing
def test_squeue_array_running_tasks_and_one_record_for_the_pending_ones():
    recs = [r for r in squeue("squeue_array.json") if r.array_job_id == 49]
    tasks = {r.array_task_id: r for r in recs if r.array_task_id is not None}
    assert {t: (r.job_id, r.state) for t, r in tasks.items()} == {
        0: (50, "RUNNING"), 1: (51, "RUNNING")}
    [pending] = [r for r in recs if r.array_task_id is None]
    assert pending.job_id == 49 and pending.array_tasks == "2-5%2" and pending.pending_tasks
    assert pending.state == "PENDING" and pending.reason == "JobArrayTaskLimit"
    assert array_task_count(pending.array_tasks) == 4
    assert not tasks[0].pending_tasks and tasks[0].array_tasks == ""
    assert tasks[0].comment == "slipway:arr" and tasks[0].node == "a4k-1"


def test_squeue_last_pending_task_is_a_task_under_the_array_id():
    recs = {r.job_id: r for r in squeue("squeue_array_requeued.json") if r.array_job_id == 49}
    last = recs[49]
    assert (last.array_task_id, last.array_tasks, last.state) == (5, "", "PENDING")
    requeued = recs[51]
    assert (requeued.array_task_id, requeued.state, requeued.reason, requeued.restart_count) == (
        1, "PENDING", "BeginTime", 1)
    assert sorted(r.array_task_id for r in recs.values()) == [0, 1, 2, 3, 4, 5]


def test_squeue_plain_jobs_have_no_array_fields():
    for r in squeue("squeue.json"):
        assert (r.array_job_id, r.array_task_id, r.array_tasks, r.node_count) == (0, None, "", 1)


def test_squeue_cancelled_array_keeps_its_pending_tasks_record():
    recs = {r.job_id: r for r in squeue("squeue_shard_multinode.json") if r.array_job_id == 55}
    assert recs[55].state == "CANCELLED" and recs[55].array_tasks == "1-3%1"
    assert recs[56].array_task_id == 0 and recs[56].state == "CANCELLED"


def test_squeue_shards_and_multi_node():
    recs = {r.job_id: r for r in squeue("squeue_shard_multinode.json")}
    a, b = recs[57], recs[58]
    assert a.user == "sw-alice" and b.user == "sw-bob"
    assert a.state == b.state == "RUNNING" and a.node == b.node == "a6k-1"
    assert dict(a.gpus) == dict(b.gpus) == {"shard": 2}
    multi = recs[59]
    assert multi.node == "a4k-[1-2]" and multi.node_count == 2
    assert dict(multi.gpus) == {"a4000": 2} and multi.cpus == 2  # totals over both nodes


def test_recorded_job_output_shows_shared_gpu_and_two_ranks():
    out = fixture("job_shard_multinode_output.txt").splitlines()
    assert "shard sw-alice CUDA_VISIBLE_DEVICES=0" in out and "shard sw-bob CUDA_VISIBLE_DEVICES=0" in out
    ranks = [line for line in out if line.startswith("rank=")]
    assert [line.split()[0] for line in ranks] == ["rank=0", "rank=1"]
    assert {line.split()[2] for line in ranks} == {"node=a4k-1", "node=a4k-2"}


def test_jobs_keys_every_record_by_its_own_id():
    b, _ = backend({"squeue": text_answer(fixture("squeue_array_requeued.json"))})
    jobs = b.jobs()
    arr = {k: r for k, r in jobs.items() if r.array_job_id == 49}
    assert sorted(arr) == [49, 50, 51, 52, 53, 54]
    assert all(k == r.job_id for k, r in jobs.items())
    b, _ = backend({"squeue": text_answer(fixture("squeue_array.json"))})
    arr = {k: r for k, r in b.jobs().items() if r.array_job_id == 49}
    assert sorted(arr) == [49, 50, 51] and arr[49].array_tasks == "2-5%2"


@pytest.mark.parametrize("value, expected", [
    (None, None), (3, 3), (0, 0), ("7", 7), ({"set": False, "number": 0}, None),
    ({"set": True, "number": 4}, 4), (4294967294, None), (4294967295, None), (True, None),
    ("x", None),
])
def test_optional_numbers(value, expected):
    assert _opt_int(value) == expected


# ------------------------------------------------------------------------- sacct parsing
def test_sacct_fields_name_array_tasks_and_keep_the_name_last():
    assert SACCT_FIELDS[:2] == ("JobIDRaw", "JobID") and SACCT_FIELDS[-1] == "JobName"
    assert "FIELDS=" + ",".join(SACCT_FIELDS) + "\n" in fixture("record_arrays.sh")


def test_sacct_array_tasks_and_attempts_per_task():
    recs = parse_sacct(fixture("sacct_array.txt"))
    a = [r for r in recs if r.array_job_id == 49]
    assert sorted({r.array_task_id for r in a}) == [0, 1, 2, 3, 4, 5]
    by_task = {}
    for r in a:
        by_task.setdefault(r.array_task_id, []).append(r)
    assert [(r.attempt, r.state) for r in by_task[1]] == [(0, "REQUEUED"), (1, "COMPLETED")]
    assert all(len(v) == 1 and v[0].attempt == 0 for t, v in by_task.items() if t != 1)
    assert by_task[2][0].state == "CANCELLED"
    assert by_task[4][0].state == "FAILED" and by_task[4][0].exit_code == 3
    assert by_task[5][0].job_id == 49  # the last task keeps the array's id
    assert {t: v[0].job_id for t, v in by_task.items()} == {0: 50, 1: 51, 2: 52, 3: 53, 4: 54, 5: 49}
    assert all(r.settled and r.node == "a4k-1" and r.cpus == 1 for r in a)


def test_sacct_pending_tasks_line_is_no_attempt():
    recs = parse_sacct(fixture("sacct_array.txt"))
    b = [r for r in recs if r.array_job_id == 55 or r.job_id == 55]
    # "55_[1-3%1]|CANCELLED": tasks 1-3 never started; only task 0 ran
    assert [(r.job_id, r.array_task_id, r.state) for r in b] == [(56, 0, "CANCELLED")]
    assert len(recs) == 8


def test_sacct_while_the_array_runs():
    recs = parse_sacct(fixture("sacct_array_running.txt"))
    got = sorted((r.array_task_id, r.attempt, r.state) for r in recs)
    assert got == [(0, 0, "RUNNING"), (1, 0, "REQUEUED"), (1, 1, "PENDING"), (2, 0, "RUNNING")]
    assert all(r.array_job_id == 49 for r in recs)
    assert not any(r.complete for r in recs if r.state in ("RUNNING", "PENDING"))


def test_sacct_shards_and_multi_node():
    recs = {r.job_id: r for r in parse_sacct(fixture("sacct_shard_multinode.txt"))}
    assert recs[57].shards == recs[58].shards == 2 and dict(recs[57].gpus) == {}
    assert {recs[57].user, recs[58].user} == {"sw-alice", "sw-bob"}
    assert recs[57].start == recs[58].start  # both ran at once on a6k-1
    multi = recs[59]
    assert dict(multi.gpus) == {"a4000": 2} and multi.node == "a4k-[1-2]" and multi.cpus == 2
    assert all(r.array_job_id == 0 and r.array_task_id is None for r in recs.values())


def test_sacct_reads_lines_without_the_jobid_column():
    old = parse_sacct(fixture("sacct.txt"))
    assert old and all(r.array_task_id is None and r.array_job_id == 0 for r in old)
    new_line = "7|7|COMPLETED|0:0|1|1|2|1|a4k-1|cpu=1|a|normal|sw-alice|x|y\n"
    [rec] = parse_sacct(new_line)
    assert rec.job_id == 7 and rec.name == "x|y" and rec.array_task_id is None
    old_line = "7|COMPLETED|0:0|1|1|2|1|a4k-1|cpu=1|a|normal|sw-alice|x|y\n"
    [rec] = parse_sacct(old_line)
    assert rec.job_id == 7 and rec.name == "x|y"


def test_sacct_name_with_newline_continues_in_the_new_format():
    d = "\x1fab12cd\x1f"
    line = d.join(["9", "8_1", "COMPLETED", "0:0", "1", "1", "2", "1", "a4k-1", "cpu=1", "a",
                   "normal", "sw-alice", "evil\n10" + d + "10_2" + d + "COMPLETED"]) + "\n"
    [rec] = parse_sacct(line, d)
    assert (rec.job_id, rec.array_job_id, rec.array_task_id) == (9, 8, 1)
    assert rec.name == "evil\n10" + d + "10_2" + d + "COMPLETED"


def test_sacct_name_newline_of_a_skipped_pending_line_is_not_glued_to_another_record():
    d = "\x1fab12cd\x1f"
    rest = ["0:0", "1", "1", "2", "1", "a4k-1", "cpu=1", "a", "normal", "sw-alice"]
    lines = (d.join(["9", "8_1", "COMPLETED", *rest, "first"]) + "\n"
             + d.join(["8", "8_[2-3]", "PENDING", *rest, "two\nlines"]) + "\n")
    [rec] = parse_sacct(lines, d)
    assert rec.name == "first" and rec.array_task_id == 1


# -------------------------------------------------------------------- accounting (cli)
def answer_in_delimiter(text: str):
    def answer(argv, _):
        d = next(a for a in argv if a.startswith("--delimiter=")).removeprefix("--delimiter=")
        return result(text.replace("|", d))
    return answer


def test_accounting_of_an_array_id_returns_every_task():
    text = fixture("sacct_array.txt")
    b, runner = backend({"sacct": answer_in_delimiter(text)})
    start = datetime.fromtimestamp(1796563563 - 3600, tz=timezone.utc)
    recs = b.accounting(start, start + timedelta(hours=2), job_ids=[49])
    assert runner.calls[0]["argv"][-2:] == ("-j", "49")
    assert len(runner.calls) == 1  # submitted well inside the window: no lookback
    assert {r.array_task_id for r in recs if r.array_job_id == 49} == {0, 1, 2, 3, 4, 5}


def test_accounting_lookback_asks_for_the_array_and_keeps_task_attempt_numbers():
    """A window that holds only task 1's second attempt: the lookback (-j the ARRAY's id,
    window opened earlier) finds the first, so that attempt keeps number 1."""
    full = fixture("sacct_array.txt")
    narrow = "".join(line + "\n" for line in full.splitlines()
                     if line.startswith("51|49_1|COMPLETED"))
    start = datetime.fromtimestamp(1796563564, tz=timezone.utc)
    b, runner = backend({"sacct": lambda argv, _: answer_in_delimiter(
        narrow if argv[argv.index("-S") + 1] == slurm_time(start) else full)(argv, _)})
    recs = b.accounting(start, start, job_ids=[49])
    assert len(runner.calls) == 2
    wide = runner.calls[1]["argv"]
    assert wide[-2:] == ("-j", "49")
    assert [(r.array_task_id, r.attempt, r.state) for r in recs] == [(1, 1, "COMPLETED")]


# ----------------------------------------------------------------------------- cancel_task
@pytest.mark.parametrize("kw, expected", [
    ({}, ("scancel", "812_3")),
    ({"signal": "TERM"}, ("scancel", "--signal=TERM", "--full", "812_3")),
])
def test_cancel_task_argv(kw, expected):
    b, runner = backend({"scancel": result()})
    b.cancel_task(812, 3, **kw)
    assert runner.calls[0]["argv"] == expected


def test_cancel_task_refuses_bad_input_without_calling_slurm():
    b, runner = backend({"scancel": result()})
    for args in [(0, 1), (-5, 1), ("812", 1), (812, -1), (812, 100_000), (812, True), (812, "3")]:
        with pytest.raises(InvalidRequest):
            b.cancel_task(*args)
    with pytest.raises(InvalidRequest, match="not a signal name"):
        b.cancel_task(812, 3, signal="TERM;ls")
    assert runner.calls == []


def test_cancel_task_maps_errors_like_cancel():
    b, _ = backend({"scancel": result("", "scancel: error: Kill job error on job id 812_3: "
                                          "Invalid job id specified\n", rc=1)})
    with pytest.raises(JobNotFound):
        b.cancel_task(812, 3)
    b, _ = backend({"scancel": result("", "scancel: error: Kill job error on job id 812_3: "
                                          "Job/step already completing or completed\n", rc=1)})
    b.cancel_task(812, 3)  # already ended: nothing to do
    b, _ = backend({"scancel": result("", "scancel: error: Access/permission denied\n", rc=1)})
    with pytest.raises(SlurmRejected, match="812"):
        b.cancel_task(812, 3)


def test_cancel_task_is_part_of_the_protocol():
    assert "cancel_task" in SlurmBackend.__dict__
    assert isinstance(CliBackend(FakeRunner(), env={}), SlurmBackend)
    assert isinstance(FakeBackend(), SlurmBackend)


# ------------------------------------------------------------------------------ FakeBackend
def test_fake_backend_arrays():
    fake = FakeBackend()
    array_id = fake.submit(req(array="0-5%2"))
    assert fake.submits[-1] == (array_id, req(array="0-5%2"))
    fake.set_pending_tasks(array_id, "2-5%2", name="sweep")
    t0 = fake.set_task_queue(array_id, 0, "RUNNING", start=T0, gpus={"a4000": 1})
    t1 = fake.set_task_queue(array_id, 1, "RUNNING", start=T0)
    assert len({array_id, t0, t1}) == 3
    # the same task again (e.g. requeued): the same job id, the record replaced
    assert fake.set_task_queue(array_id, 0, "RUNNING", start=T0, gpus={"a4000": 1},
                               restart_count=1) == t0
    jobs = fake.jobs()
    assert jobs[array_id].array_tasks == "2-5%2" and jobs[array_id].array_task_id is None
    assert (jobs[t0].array_job_id, jobs[t0].array_task_id, jobs[t0].node) == (array_id, 0, "a4k-1")
    assert dict(jobs[t0].gpus) == {"a4000": 1} and jobs[t0].restart_count == 1
    assert sorted(r.array_task_id for r in jobs.values() if r.array_task_id is not None) == [0, 1]
    fake.finish_task(array_id, 0, "COMPLETED", start=T0, end=T0 + timedelta(minutes=3))
    assert t0 not in fake.jobs()
    [rec] = fake.accounting(T0, T0 + timedelta(hours=1), job_ids=[array_id])
    assert (rec.job_id, rec.array_job_id, rec.array_task_id, rec.elapsed_s) == (t0, array_id, 0, 180)
    assert fake.accounting(T0, T0 + timedelta(hours=1), job_ids=[t0]) == [rec]
    fake.set_pending_tasks(array_id, "")
    assert array_id not in fake.jobs()
    fake.cancel_task(array_id, 1)
    fake.cancel_task(array_id, 2, signal="TERM")
    assert fake.task_cancels == [(array_id, 1, None), (array_id, 2, "TERM")]
    assert fake.cancels == []
