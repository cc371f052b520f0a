"""The controller's queue as lean text: ``squeue --Format`` with only the fields a QueueRecord
holds, read back into the same QueueRecords ``records.parse_squeue`` makes of ``squeue --json``.

Why: ``squeue --json`` prints about 4 KB per job (every field of every job, pretty-printed) and
Python then decodes all of it; the reconciler asks once per tick for every job of the cluster.
This answer is about 250 bytes a job (bench/RESULTS.md, "Reconciler tick at scale").

The query (Slurm 22.05, checked on the local cluster):

* ``--Format=Field:0<suffix>,...``: width 0 prints a field whole; the suffix is what follows it.
  Two fields are free text that anyone who submits a job chooses (Comment, Name: newlines, ``|``,
  control characters, anything); they come LAST. Every field before them is Slurm's own (ids,
  states, times, TRES, names of partitions/accounts/users/QOS that exist) and ends with ``\\x1f``;
  Comment ends with ``\\x1f<token>\\x1f`` and Name with the record marker ``\\x1e<token>\\x1e``,
  both made of a fresh random token per call (64 bits): no job can hold a token it never saw,
  so none can fake a field or a record, and the fixed fields cost one byte of delimiter each.
  A record that does not split into every field raises (never a silently dropped job: the
  reconciler would think it ended).
* ``--states=all``: ``--json`` lists the jobs that ended within MinJobAge as well (COMPLETED,
  CANCELLED...); text squeue hides them unless asked. ``--all``: hidden partitions too.
* ``SLURM_TIME_FORMAT=%s``: StartTime/SubmitTime as epoch seconds (``N/A``: not set).
* ``SLURM_BITSTR_LEN=0``: an array's pending task list whole (Slurm cuts it at 64 characters
  with ``...`` by default, ``--json`` too; the cut list would count the wrong number of tasks).
* ``--array-unique``: an array's tasks that have not started are ONE record (ArrayTaskID
  ``2-9%2``, JobID the array's id), and a pending task the controller keeps apart (requeued, or
  its nice/priority changed) stays its own record (its own JobID), both as in ``--json``. Without
  it squeue folds such tasks back into the array's record (their ids and restart counts gone: the
  reconciler would think them ended); with ``--array`` it prints a line per pending task.

GPUs and cores. ``parse_squeue`` reads the REQUEST (``tres_req_str``); squeue's text has only
``tres-alloc`` (the allocation once a job runs, the request before). So a job that has no nodes
yet reads its request from it as is. A job that has nodes reads its requested GPUs from its
GRES request (``tres-per-node`` x nodes, ``tres-per-job``, ``tres-per-task`` x tasks), exactly what
slurmctld builds ``tres_req_str``'s ``gres/gpu:TYPE`` from: an ``--exclusive`` job is allocated
every GPU of its node, but billed on what it asked for, as before. Its cores: the allocation's
``cpu=`` (more than asked only when Slurm rounds up, e.g. ``--exclusive``; ``parse_squeue`` gives
the cores asked for there; no product code reads ``QueueRecord.cpus``).

One more difference, also harmless: the record of an array that ENDED with no task left in it
(cancelled while its tasks were pending) reads ``array_job_id`` 0: squeue prints no array id for a
record with neither a task id nor a task list (``--json`` gives the array's id, which is this
record's own ``job_id``). The reconciler reads an array from its task records and from a record's
pending task list; an ended record with neither adds nothing either way.
"""
from __future__ import annotations

import gc
import secrets
from datetime import datetime, timezone
from typing import Callable, Mapping, Sequence

from .errors import ControllerUnavailable, SlurmRejected, is_unavailable, slurm_text
from .fields import _frozen, parse_gres, parse_tres_str, tres_cpus
from .records import QueueRecord

# (squeue --Format field, what it fills); the order of the answer.
FIELDS = ("JobID", "ArrayJobID", "ArrayTaskID", "State", "Reason", "NodeList", "StartTime",
          "SubmitTime", "RestartCnt", "tres-alloc", "tres-per-node", "tres-per-job",
          "tres-per-task", "NumCPUs", "NumNodes", "NumTasks", "PriorityLong", "Nice",
          "Partition", "Account", "UserName", "QOS", "Comment", "Name")
_N = len(FIELDS)
_FIXED = "\x1f"   # ends each of Slurm's own fields (all but the last two, Comment and Name)
# what squeue prints for a field that is not set
_UNSET = frozenset({"N/A", "(null)"})
_UNSET_TIMES = frozenset({"", "N/A", "0", "Unknown", "None"})

# The environment squeue runs with, on top of the backend's own.
QUEUE_ENV = {"SLURM_TIME_FORMAT": "%s", "SLURM_BITSTR_LEN": "0"}


class QueueTextError(ValueError):
    """squeue's answer is not what the query asked for (the caller maps it to SlurmRejected)."""


def new_token() -> str:
    """A fresh token for one call: 64 random bits, so no job name or comment can hold it."""
    return secrets.token_hex(8)


def separators(token: str) -> tuple[str, str]:
    """(field delimiter, record marker) made of ``token``."""
    return "\x1f" + token + "\x1f", "\x1e" + token + "\x1e"


def queue_argv(token: str) -> list[str]:
    """``squeue`` for every job of the controller (any state, any partition), one record each."""
    if not token.isalnum():
        raise ValueError(f"token must be letters and digits, got {token!r}")
    delim, marker = separators(token)
    suffixes = [_FIXED] * (_N - 2) + [delim, marker]
    spec = ",".join(f"{name}:0{end}" for name, end in zip(FIELDS, suffixes))
    return ["squeue", "--noheader", "--all", "--states=all", "--array-unique", "--Format=" + spec]


def query(run: Callable[..., object], env: Mapping[str, str]) -> list[QueueRecord]:
    """Every record of the controller's queue: ONE squeue (``run`` is the backend's, which
    raises ControllerUnavailable when Slurm does not answer in time)."""
    token = new_token()
    argv = queue_argv(token)
    res = run(argv, env={**env, **QUEUE_ENV})
    if res.rc != 0:
        text = slurm_text(res.stderr)
        raise SlurmRejected(f"squeue failed: {text or 'exit ' + str(res.rc)}",
                            slurm_message=text, argv=tuple(argv))
    if is_unavailable(res.stderr):  # never read "no answer" as "no jobs"
        raise ControllerUnavailable(f"Slurm could not answer squeue: {slurm_text(res.stderr)}")
    try:
        return parse_queue_text(res.stdout, token)
    except QueueTextError as exc:
        raise SlurmRejected(f"squeue printed an answer that cannot be read: {exc}",
                            argv=tuple(argv)) from None


def parse_queue_text(text: str, token: str) -> list[QueueRecord]:
    """The records of ``queue_argv(token)``'s answer, in squeue's order, equal to what
    ``records.parse_squeue`` gives for ``squeue --json`` (except ``cpus`` of a running job that
    was given more cores than it asked for, and ``array_job_id`` of an ended array's empty
    record: see the module's doc). Raises QueueTextError when
    the answer does not hold whole records (cut short, or not this query's)."""
    delim, marker = separators(token)
    chunks = text.split(marker + "\n")
    tail = chunks.pop()
    if tail.strip():
        raise QueueTextError(f"squeue's answer ends inside a record: {tail[:200]!r}")
    was_on = gc.isenabled()
    gc.disable()  # 10k records: the cyclic collector would rescan them again and again
    try:
        cache: dict = {}
        return [_record(_split(chunk, delim), chunk, cache) for chunk in chunks]
    finally:
        if was_on:
            gc.enable()


def _split(chunk: str, delim: str) -> list[str]:
    """One record's fields: Slurm's own ones up to the first ``_N - 2`` one-byte delimiters, then
    Comment and Name apart at the call's own delimiter (which neither can hold)."""
    fields = chunk.split(_FIXED, _N - 2)
    if len(fields) == _N - 1:
        fields[-1:] = fields[-1].split(delim)
    return fields


def _record(f: Sequence[str], chunk: str, cache: dict) -> QueueRecord:
    if len(f) != _N or not f[0].isdigit():
        raise QueueTextError(f"squeue printed a record of {len(f)} fields, not {_N}: {chunk[:200]!r}")
    (job_id, array_job, array_task, state, reason, nodes, start, submit, restarts, tres,
     per_node, per_job, per_task, cpus, node_count, tasks, priority, nice, partition, account,
     user, qos, comment, name) = f
    nodes = "" if nodes in _UNSET else nodes
    per_node = "" if per_node in _UNSET else per_node
    tres = "" if tres in _UNSET else tres
    node_n = _num(node_count, 1) or 1
    when = _epoch(start, cache)
    if nodes:  # allocated: tres-alloc is the allocation, the request is in the GRES specs
        gpus = _requested(tres, per_node, per_job, per_task, node_n, _num(tasks, 1) or 1, cache)
    else:      # tres-alloc is the request (tres_req_str)
        gpus = _tres_gpus(tres, cache)
    if not gpus and per_node:
        gpus = _frozen(parse_gres(per_node))
    task_id, task_list = None, ""
    if array_task not in _UNSET:
        if array_task.isdigit():
            task_id = int(array_task)
        else:
            task_list = array_task
    return QueueRecord(
        job_id=int(job_id), state=state, reason=reason, node=nodes,
        start_time=when if nodes else None, submit_time=_epoch(submit, cache),
        account=_str(account), user=_str(user), qos=_str(qos), name=name,
        comment=_str(comment), partition=_str(partition), restart_count=_num(restarts),
        gpus=gpus, cpus=tres_cpus(tres) or _num(cpus), priority=_num(priority),
        nice=_num(nice), expected_start=when if state == "PENDING" else None,
        array_job_id=_num(array_job) if array_task not in _UNSET else 0,
        array_task_id=task_id, array_tasks=task_list, node_count=node_n)


def _str(text: str) -> str:
    return "" if text == "(null)" else text


def _num(text: str, default: int = 0) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _epoch(text: str, cache: dict) -> datetime | None:
    key = ("t", text)
    if key not in cache:
        cache[key] = (None if text in _UNSET_TIMES or not text.isdigit()
                      else datetime.fromtimestamp(int(text), tz=timezone.utc))
    return cache[key]


def _tres_gpus(tres: str, cache: dict):
    key = ("g", tres)
    if key not in cache:
        cache[key] = _frozen(parse_tres_str(tres))
    return cache[key]


def _requested(tres: str, per_node: str, per_job: str, per_task: str, nodes: int, tasks: int,
               cache: dict):
    """The GPUs (typed) and shards a running job asked for, as ``tres_req_str`` counts them:
    its GRES request per node x nodes, per job, per task x tasks. A request without a GPU type
    counts nothing here (``tres_req_str`` has no ``gres/gpu:TYPE`` then either)."""
    key = ("r", tres, per_node, per_job, per_task, nodes, tasks)
    if key in cache:
        return cache[key]
    out: dict[str, int] = {}
    for spec, times in ((per_node, nodes), (per_job, 1), (per_task, tasks)):
        if spec in _UNSET or not spec:
            continue
        for name, count in _typed(spec).items():
            out[name] = out.get(name, 0) + count * times
    cache[key] = _frozen(out)
    return cache[key]


def _typed(spec: str) -> dict[str, int]:
    """``gres:gpu:a4000:2,gres:shard:4`` (22.05) or ``gres/gpu:a4000=2`` -> {"a4000": 2,
    "shard": 4}: typed GPUs and shards only (``gres:gpu:2`` names no type: nothing)."""
    out: dict[str, int] = {}
    for item in spec.split(","):
        item = item.strip()
        if item.startswith(("gres:", "gres/")):
            item = item[5:]
        item = item.replace("=", ":")
        parts = item.split(":")
        if not parts[-1].isdigit():
            continue
        if parts[0] == "gpu" and len(parts) == 3:
            out[parts[1]] = out.get(parts[1], 0) + int(parts[-1])
        elif parts[0] == "shard" and len(parts) in (2, 3):
            out["shard"] = out.get("shard", 0) + int(parts[-1])
    return out
