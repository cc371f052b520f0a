"""Typed records parsed from Slurm's output (Slurm 22.05).

squeue and sinfo: their JSON (OpenAPI v0.0.38). sacct: ``--parsable2`` text, because
``sacct --json`` in 22.05 reports a wrong exit code (``return_code`` 0, ``status`` SUCCESS for a
batch script that exited 3, while ``-o ExitCode`` says ``3:0``). Parsers take the decoded JSON
document (or the text) and return frozen dataclasses; they never run commands (fixtures recorded
from the live cluster: tests/fixtures/slurm/). AllocTRES ``cpu=N`` bills CPU-only jobs."""
from __future__ import annotations

import gc
from operator import itemgetter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Mapping

from .fields import (_frozen, _int, _opt_int, _text, _time, parse_gres, parse_tres_str,
                     tres_cpus)
from .step_usage import JobUsage, StepUsage, parse_sstat  # noqa: F401  (sstat's records)

__all__ = ["TERMINAL_STATES", "UNSETTLED_QOS", "QueueRecord", "SacctRecord", "GpuCount",
           "NodeRecord", "SACCT_FIELDS", "parse_squeue", "parse_sacct", "parse_nodes",
           "parse_gres", "parse_tres_str", "tres_cpus"]

# Job states after which an attempt will not run again by itself.
TERMINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "OUT_OF_MEMORY", "REQUEUED", "REVOKED", "SPECIAL_EXIT",
})
UNSETTLED_QOS = frozenset({"", "Unknown"})  # --parsable2 prints "Unknown"; parse_sacct gives ""


# --------------------------------------------------------------------------------- squeue
@dataclass(frozen=True)
class QueueRecord:
    """One job as the controller sees it now (``squeue --json``)."""

    job_id: int
    state: str                  # PENDING, RUNNING, COMPLETING, ...
    reason: str                 # e.g. Resources, Priority, JobHeldUser; "None" when running
    node: str                   # node list ("" while pending)
    start_time: datetime | None
    submit_time: datetime | None
    account: str
    user: str
    qos: str
    name: str
    comment: str = ""
    partition: str = ""
    restart_count: int = 0
    gpus: Mapping[str, int] = field(default_factory=dict)  # requested GPU type -> count
    cpus: int = 0               # cores asked for (tres_req_str cpu=, else the job's cpus)
    priority: int = 0           # the job's priority now (0 while held)
    nice: int = 0               # its nice value (squeue --json leaves 0 out)
    expected_start: datetime | None = None  # a pending job: Slurm's expected start, if known
    array_job_id: int = 0               # the job array this record belongs to (0: not an array)
    array_task_id: int | None = None    # the task it is (None: not a task, or pending tasks)
    array_tasks: str = ""               # stands for still-pending tasks: their indexes, "2-5%2"
    node_count: int = 1                 # nodes asked for (a multi-node job: more than 1)

    @property
    def held(self) -> bool:
        return self.reason.startswith("JobHeld")

    @property
    def pending_tasks(self) -> bool:
        """This record is an array's still-pending tasks (``array_tasks``), not one job or task."""
        return bool(self.array_tasks)


def parse_squeue(data: Mapping[str, Any]) -> list[QueueRecord]:
    """One record per job record of the controller, in squeue's order.

    A job array (Slurm 22.05, recorded in tests/fixtures/slurm/squeue_array*.json) is one record
    per task that has started or was requeued (its own ``job_id``, ``array_job_id`` and
    ``array_task_id``) plus, while two or more tasks have not started, ONE record for them all
    (``array_tasks`` "2-5%2", ``array_task_id`` None, state PENDING, reason e.g.
    JobArrayTaskLimit) whose ``job_id`` is the array's id. That record turns into the last
    task: with one task left it reads ``array_task_id`` 5, ``array_tasks`` "", and keeps the
    array's id as its ``job_id`` when it runs. So ``job_id`` is unique within one answer.
    A multi-node job is one record: ``node`` is the node list ("a4k-[1-2]"), ``gpus`` the
    total over its nodes (``tres_req_str``), ``node_count`` its nodes.
    """
    out = []
    for j in data.get("jobs") or []:
        gpus = parse_tres_str(j.get("tres_req_str")) or parse_gres(j.get("tres_per_node"))
        out.append(QueueRecord(
            job_id=_int(j.get("job_id")),
            state=_text(j.get("job_state")),
            reason=_text(j.get("state_reason")),
            node=_text(j.get("nodes")),
            start_time=_time(j.get("start_time")) if _text(j.get("nodes")) else None,
            submit_time=_time(j.get("submit_time")),
            account=_text(j.get("account")),
            user=_text(j.get("user_name")),
            qos=_text(j.get("qos")),
            name=_text(j.get("name")),
            comment=_text(j.get("comment")),
            partition=_text(j.get("partition")),
            restart_count=_int(j.get("restart_cnt")),
            gpus=_frozen(gpus),
            cpus=tres_cpus(j.get("tres_req_str")) or _int(j.get("cpus")),
            priority=_int(j.get("priority")),
            nice=_int(j.get("nice")),
            # a pending job's start_time is the scheduler's estimate (0: none yet, e.g. held)
            expected_start=(_time(j.get("start_time"))
                            if _text(j.get("job_state")) == "PENDING" else None),
            array_job_id=_int(j.get("array_job_id")),
            array_task_id=_opt_int(j.get("array_task_id")),
            array_tasks=_text(j.get("array_task_string")),
            node_count=_int(j.get("node_count"), 1) or 1,
        ))
    return out


# ---------------------------------------------------------------------------------- sacct
@dataclass(frozen=True)
class SacctRecord:
    """One attempt of a job in accounting (``sacct -X -D``: requeued attempts repeat the id).

    ``attempt`` counts from 0 in submit order among the records of that job in one answer
    (of that task, for a task of a job array: ``array_job_id``/``array_task_id``, read from
    sacct's JobID ``123_4``; ``job_id`` is then the task's own id, JobIDRaw).
    ``settled`` is False while Slurm is still filling in fields of a finished attempt
    (QOS reads ``Unknown`` and AllocTRES is empty for the first seconds; End reads ``Unknown``
    for an attempt that ended while slurmdbd was down): wait for it.
    """

    job_id: int
    attempt: int
    name: str
    user: str
    account: str
    qos: str
    state: str                  # COMPLETED, FAILED, CANCELLED, PREEMPTED, REQUEUED, RUNNING, ...
    exit_code: int | None       # None while running or when killed by a signal
    signal: int | None          # the signal that ended the job, if any
    submit: datetime | None
    start: datetime | None
    end: datetime | None
    elapsed_s: int | None       # ElapsedRaw; None when sacct left it empty (use end - start)
    node: str
    gpus: Mapping[str, int]     # GPU type -> count from AllocTRES gres/gpu:TYPE (no "shard")
    shards: int = 0
    comment: str = ""

    @property
    def complete(self) -> bool:
        """The attempt has ended (it may still be unsettled)."""
        return self.state in TERMINAL_STATES

    alloc_tres_recorded: bool = True  # AllocTRES held anything at all (cpu=...)
    cpus: int = 0                      # cores allocated (AllocTRES cpu=N; 0 when not recorded)
    array_job_id: int = 0              # the job array of this task (0: not an array task)
    array_task_id: int | None = None   # its task index (None: not an array task)

    @property
    def settled(self) -> bool:
        """Ended, and every field billing reads (start, end, nodes, AllocTRES) is in. A record
        that never ran (no node, nothing allocated, 0 s) keeps QOS ``Unknown`` and no AllocTRES
        for good: nothing to wait for. QOS ``Unknown`` (JobName ``allocation``) with the rest in
        is slurmdbd's record from the completion message, before the start message (recorded:
        fixtures/slurm/sacct_unsettled.txt, 0-3 s after an end): start, end, nodes and AllocTRES
        are final; only name and QOS, never billed, come later."""
        if not self.complete:
            return False
        if not self.node and not self.alloc_tres_recorded and not self.elapsed_s:
            return True
        if self.start is not None and self.end is None:
            # ended while slurmdbd was away: the state arrives before the end time, and until
            # then ElapsedRaw is "now - start" and grows (measured, 22.05; docs/FAULTS.md §5)
            return False
        if self.qos in UNSETTLED_QOS and not (self.start is not None and self.node
                                              and self.alloc_tres_recorded):
            return False
        return self.start is None or self.alloc_tres_recorded

    @property
    def restart_count(self) -> int:
        return self.attempt


# The fields ``sacct --parsable2`` is asked for, in order. JobName is LAST: it is free text (it
# may hold the delimiter or newlines) and is whatever follows the other fields on the line.
# Comment is not asked for: slurmdbd stores it only with AccountingStoreFlags=job_comment, and it
# is free text too (only one free-text field can be parsed safely, the last one).
# JobID (second) names array tasks: "123_4" (JobIDRaw is the task's own id), "123_[2-5%2]" for
# tasks that have not started. Lines without it (JobIDRaw then State) are read as well.
SACCT_FIELDS = ("JobIDRaw", "JobID", "State", "ExitCode", "Submit", "Start", "End", "ElapsedRaw",
                "NodeList", "AllocTRES", "Account", "QOS", "User", "JobName")
_NFIELDS = len(SACCT_FIELDS)
_UNSET_TIMES = frozenset({"", "Unknown", "None", "0"})


def _sacct_time(text: str, cache: dict) -> datetime | None:
    """sacct time with ``SLURM_TIME_FORMAT=%s`` (epoch seconds) -> aware UTC datetime.

    ``Unknown``/``None``/empty -> None. Without that variable sacct prints the cluster's local
    wall-clock time with no zone (``2024-05-01T10:00:05``): read as this host's local time.
    """
    when = cache.get(text, _MISSING)
    if when is _MISSING:
        if text in _UNSET_TIMES:
            when = None
        elif text.isdigit():
            when = datetime.fromtimestamp(int(text), tz=timezone.utc)
        else:
            try:
                when = datetime.fromisoformat(text).astimezone(timezone.utc)
            except ValueError:
                when = None
        cache[text] = when
    return when


_MISSING = object()


def parse_sacct(text: str, delimiter: str = "|") -> list[SacctRecord]:
    """Records of ``sacct --parsable2 --noheader -X -D --format=<SACCT_FIELDS>``.

    ``attempt`` numbers each job's records in submit order: sacct has no restart count, and a
    requeued attempt is a new record whose submission time is the requeue time. Numbering is
    right when every attempt of the job is in ``text``. An array task's attempts are numbered
    per (array job, task).

    Job arrays (recorded: tests/fixtures/slurm/sacct_array*.txt): each task that started is a
    line with JobID ``123_4``; tasks that have not started yet share ONE line, JobID
    ``123_[2-5%2]`` (state PENDING, or CANCELLED when the array was cancelled before they
    ran). Such a line is skipped: it is no attempt of any task (nothing ran, nothing to bill).
    Lines of the older format without the JobID column (JobIDRaw, then State) are read too.

    Each line is split at most ``len(SACCT_FIELDS) - 1`` times, so a job name holding the
    delimiter stays whole. A job name may also hold newlines (sacct prints them as is): a line
    that does not hold every field continues the previous record's name. With a delimiter no job
    name can contain (the bridge passes a fresh random one per call), a name can never pass
    itself off as a record; with ``|`` a name shaped like a whole sacct line could.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    gc_was_on = gc.isenabled()
    gc.disable()  # 100k records: the cyclic collector would rescan them again and again
    try:
        return _parse_sacct_lines(lines, delimiter)
    finally:
        if gc_was_on:
            gc.enable()


def _parse_sacct_lines(lines: list[str], delimiter: str) -> list[SacctRecord]:
    rows: list[list] = []
    times: dict = {}
    tget = times.get
    tres_cache: dict = {}
    last = _NFIELDS - 1
    terminal = TERMINAL_STATES
    named: list | None = None  # the row a line holding no record continues (its job name)
    for line in lines:
        f = line.split(delimiter, last)
        if len(f) > 1 and f[1][:1].isdigit():  # JobID after JobIDRaw (a State never is digits)
            job_text = f.pop(1)
        else:  # the format without JobID: one field fewer
            f = line.split(delimiter, last - 1)
            job_text = ""
        if len(f) != _NFIELDS - 1 or not f[0].isdigit():
            if named is not None:  # a newline inside the previous job's name
                named[1] += "\n" + line
            continue
        array_job_id, task_id = 0, None
        if "_" in job_text:
            array_text, _, task_text = job_text.partition("_")
            if not task_text.isdigit() or not array_text.isdigit():
                named = None  # "123_[2-5%2]": tasks that have not started (no attempt)
                continue
            array_job_id, task_id = int(array_text), int(task_text)
        state = f[1]
        if " " in state:  # "CANCELLED by 0"
            state = state.split(" ", 1)[0]
        code, _, sig = f[2].partition(":")
        signal = int(sig) if sig != "0" and sig.isdigit() else None
        if signal is None and state in terminal and code.isdigit():
            exit_code: int | None = int(code)
        else:
            exit_code = None
        tres = f[8]
        alloc = tres_cache.get(tres)
        if alloc is None:
            g = parse_tres_str(tres)
            shards = g.pop("shard", 0)
            alloc = tres_cache[tres] = (_frozen(g), shards, tres_cpus(tres))
        node = f[7]
        if node == "None assigned":
            node = ""
        qos = f[10]
        if qos == "Unknown":
            qos = ""
        elapsed = f[6]
        submit = tget(f[3], _MISSING)
        if submit is _MISSING:
            submit = _sacct_time(f[3], times)
        start = tget(f[4], _MISSING)
        if start is _MISSING:
            start = _sacct_time(f[4], times)
        end = tget(f[5], _MISSING)
        if end is _MISSING:
            end = _sacct_time(f[5], times)
        job_id = int(f[0])
        rows.append([job_id, f[12], f[11], f[9], qos, state, exit_code, signal, submit, start,
                     end, int(elapsed) if elapsed.isdigit() else None, node, alloc[0], alloc[1],
                     bool(tres), alloc[2], array_job_id, task_id,
                     (array_job_id, task_id) if task_id is not None else (job_id, -1)])
        named = rows[-1]
    rows.sort(key=_attempts_of)  # stable: a job's records keep sacct's order until sorted below
    out: list[SacctRecord] = []
    append = out.append
    i, n = 0, len(rows)
    while i < n:
        key = rows[i][19]
        j = i + 1
        while j < n and rows[j][19] == key:
            j += 1
        group = rows[i:j] if j - i == 1 else sorted(rows[i:j], key=_attempt_order)
        for attempt, (job_id, name, user, account, qos, state, exit_code, signal, submit, start,
                      end, elapsed_s, node, gpus, shards, recorded, cpus, array_job_id, task_id,
                      _) in enumerate(group):
            append(SacctRecord(job_id, attempt, name, user, account, qos, state, exit_code,
                               signal, submit, start, end, elapsed_s, node, gpus, shards, "",
                               recorded, cpus, array_job_id, task_id))
        i = j
    return out


_attempts_of = itemgetter(19)  # (job id, -1), or (array job id, task id) for an array task


def _attempt_order(row: list) -> tuple:
    return (row[8] or _EPOCH, row[9] or _EPOCH)


_EPOCH = datetime.fromtimestamp(0, tz=timezone.utc)


# ---------------------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class GpuCount:
    total: int
    allocated: int

    @property
    def free(self) -> int:
        return max(self.total - self.allocated, 0)


@dataclass(frozen=True)
class NodeRecord:
    name: str
    state: str                       # idle, mixed, allocated, down, ...
    flags: tuple[str, ...]           # DRAIN, NOT_RESPONDING, ...
    reason: str
    partitions: tuple[str, ...]
    cpus: int
    alloc_cpus: int
    gpus: Mapping[str, GpuCount]     # GPU type (or "shard") -> total/allocated/free
    cpu_load: float | None = None    # load average (sinfo's cpu_load / 100); None: not reported
    real_memory_mb: int = 0          # configured memory (RealMemory)
    alloc_memory_mb: int = 0         # memory allocated to jobs (AllocMem)
    # the latest time slurmctld heard from slurmd that sinfo --json 22.05 tells: the later of
    # LastBusyTime (last_busy) and SlurmdStartTime (its registration); None when neither is set
    last_heard: datetime | None = None

    @property
    def available(self) -> bool:
        """Up and accepting jobs (not down, drained or failing)."""
        bad = {"DOWN", "DRAIN", "DRAINING", "DRAINED", "FAIL", "FAILING", "NOT_RESPONDING",
               "FUTURE", "UNKNOWN", "INVAL", "POWERED_DOWN", "MAINTENANCE", "RESERVED"}
        return self.state.upper() not in bad and not (bad & {f.upper() for f in self.flags})


def parse_nodes(data: Mapping[str, Any]) -> list[NodeRecord]:
    out = []
    for n in data.get("nodes") or []:
        # tres/tres_used count shards right; gres_used shows shards per device index
        total = parse_tres_str(n.get("tres")) or parse_gres(n.get("gres"))
        used = parse_tres_str(n.get("tres_used")) if n.get("tres") else parse_gres(n.get("gres_used"))
        state = n.get("state")
        flags = tuple(n.get("state_flags") or ())
        if isinstance(state, list):
            state, flags = (state[0] if state else ""), tuple(state[1:]) + flags
        out.append(NodeRecord(
            name=_text(n.get("name")), state=_text(state), flags=flags,
            reason=_text(n.get("reason")), partitions=tuple(n.get("partitions") or ()),
            cpus=_int(n.get("cpus")), alloc_cpus=_int(n.get("alloc_cpus")),
            gpus=MappingProxyType({k: GpuCount(v, used.get(k, 0)) for k, v in total.items()}),
            cpu_load=None if (load := _opt_int(n.get("cpu_load"))) is None else load / 100,
            real_memory_mb=_int(n.get("real_memory")), alloc_memory_mb=_int(n.get("alloc_memory")),
            last_heard=max((t for t in (_time(n.get("last_busy")),
                                        _time(n.get("slurmd_start_time"))) if t), default=None),
        ))
    return out
