"""The lean queue query against the live cluster: for a varied queue (pending for resources,
held, running, an array with started and still-pending tasks, a long sparse array, a 2-node job,
an untyped GPU job, a job whose name and comment try to fake records), CliBackend.jobs()
(squeue --Format, slurm_bridge.queue_text) gives the SAME QueueRecords as records.parse_squeue
gives for ``squeue --json`` of the same queue."""
from __future__ import annotations

import json
import os
from dataclasses import replace
import time

import pytest

from slurm_bridge import records
from slurm_bridge.cli import CliBackend
from slurm_bridge.queue_text import QUEUE_ENV

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

HOSTILE_NAME = "evil\nname\x1f|x"
HOSTILE_COMMENT = "c1\n1|PENDING|fake\x1e\n\x1fslipway:1"


def _sbatch(cluster, *args: str) -> int:
    out = cluster.run("sbatch", "--parsable", "--output=/dev/null", "--chdir=/tmp", *args).stdout
    return int(out.strip().split(";")[0].split("_")[0])


def _same(text: records.QueueRecord, js: records.QueueRecord) -> bool:
    """Equal, but for the two differences slurm_bridge.queue_text documents: the cores of a
    job given more than it asked for, and an ended array's empty record (no array id)."""
    if text.state == "RUNNING" and text.cpus > js.cpus:
        text = replace(text, cpus=js.cpus)
    if (text.array_job_id == 0 and js.array_job_id == js.job_id and js.array_task_id is None
            and not js.array_tasks and js.state != "PENDING"):
        text = replace(text, array_job_id=js.array_job_id)
    return text == js


def _json_records(cluster) -> dict[int, records.QueueRecord]:
    out = cluster.run("squeue", "--json", timeout=60).stdout
    return {r.job_id: r for r in records.parse_squeue(json.loads(out))}


@pytest.fixture
def varied_queue(slurm_cluster):
    c = slurm_cluster
    ids = [
        _sbatch(c, "--gres=gpu:a4000:1", "--comment=slipway:1", "-J", "sw1", "--wrap", "sleep 300"),
        _sbatch(c, "--gpus=1", "-J", "untyped", "--wrap", "sleep 300"),
        _sbatch(c, "-N", "2", "--gres=gpu:a4000:1", "-J", "twonode", "--wrap", "sleep 300"),
        _sbatch(c, "--array=0-7%2", "--comment=slipway:arr", "-J", "arr", "--wrap", "sleep 300"),
        _sbatch(c, "--hold", "--array=" + ",".join(str(i * i + i) for i in range(1, 40)),
                "-J", "sparse", "--wrap", "sleep 1"),
        _sbatch(c, "--hold", "-J", HOSTILE_NAME, "--comment", HOSTILE_COMMENT, "--wrap", "sleep 1"),
        _sbatch(c, "-p", "dev", "--gres=shard:2", "-J", "shard", "--wrap", "sleep 300"),
        _sbatch(c, "-N", "2", "--gres=gpu:a4000:4", "-J", "waits", "--wrap", "sleep 300"),
        _sbatch(c, "--hold", "--nice=50", "-J", "niced", "--wrap", "sleep 1"),
        _sbatch(c, "--hold", "--array=0-5", "--comment=slipway:comb", "-J", "comb",
                "--wrap", "sleep 1"),
    ]
    # a pending task whose nice changes becomes a record of its own (--json keeps it apart)
    c.run("scontrol", "update", f"JobId={ids[-1]}_2", "Nice=10")
    try:
        yield ids
    finally:
        c.run("scancel", *map(str, ids), check=False)


def test_text_and_json_give_equal_records_for_a_varied_queue(slurm_cluster, varied_queue):
    backend = CliBackend(env={**slurm_cluster.env, "PATH": os.environ["PATH"]})
    # --json cuts a long array task list at 64 characters unless told; the text query never does
    os.environ["SLURM_BITSTR_LEN"] = QUEUE_ENV["SLURM_BITSTR_LEN"]
    try:
        deadline = time.monotonic() + 60
        while True:
            # the queue moves (jobs start): compare only a text answer taken between two equal
            # JSON answers
            before = _json_records(slurm_cluster)
            text = backend.jobs(comment=None)
            after = _json_records(slurm_cluster)
            started = all(before.get(i) and before[i].state != "PENDING"
                          for i in varied_queue[:3])
            # a job the scheduler has not looked at yet says reason "None": wait for its word
            judged = before.get(varied_queue[7]) is not None and \
                before[varied_queue[7]].reason != "None"
            if before == after and started and judged:
                break
            assert time.monotonic() < deadline, "the queue did not settle in 60 s"
            time.sleep(1)
    finally:
        os.environ.pop("SLURM_BITSTR_LEN", None)
    assert set(varied_queue) <= set(text) and sorted(text) == sorted(before)
    for job_id, rec in before.items():
        assert _same(text[job_id], rec), job_id

    sw1, untyped, two, arr, sparse, hostile, shard, waits, niced, comb = varied_queue
    assert text[hostile].name == HOSTILE_NAME and text[hostile].comment == HOSTILE_COMMENT
    assert sum(1 for r in text.values() if r.name == HOSTILE_NAME) == 1
    assert text[two].node_count == 2 and dict(text[two].gpus) == {"a4000": 2}
    assert text[two].state == "RUNNING" and "a4k-" in text[two].node
    assert dict(text[untyped].gpus) == {} and dict(text[shard].gpus) == {"shard": 2}
    pending = text[arr]
    assert pending.pending_tasks and pending.array_tasks == "2-7%2"
    assert sorted(r.array_task_id for r in text.values()
                  if r.array_job_id == arr and not r.pending_tasks) == [0, 1]
    assert text[sparse].array_tasks.endswith(",1482,1560") and text[sparse].held
    assert text[waits].reason in ("Resources", "Priority") and text[waits].node == ""
    assert text[niced].nice == 50 and text[niced].held
    split = [r for r in text.values() if r.array_job_id == comb and r.state == "PENDING"]
    assert sorted(((r.array_task_id or -1), r.array_tasks, r.nice) for r in split) == [
        (-1, "0-1,3-5", 0), (2, "", 10)]
    ours = backend.jobs()   # the default: Slipway's comment only
    assert sw1 in ours and arr in ours and hostile not in ours and untyped not in ours
