"""CliBackend: SlurmBackend spoken through Slurm's commands (JSON output, except sacct and
squeue: lean text with random separators, see records.py and queue_text.py).

Every command is an argv run through a CommandRunner (no shell). sbatch runs with a clean
environment (PATH, SLURM_CONF, LANG and the job user's HOME/USER/LOGNAME) so nothing of the
portal's own environment leaks into jobs; the job's ``env`` is exported by the script itself.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import secrets
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import queue_text, records
from .admin import AdminCommands
from .errors import (ControllerUnavailable, GresUnavailable, InvalidRequest, JobNotFound,
                     SlurmBridgeError, SlurmRejected, is_gres_refusal, is_not_found,
                     is_unavailable, slurm_text)
from .gres_refusal import GresInventory, gres_inventory, gres_refusal_message
from .records import NodeRecord, QueueRecord, SacctRecord
from .request import MAX_ARRAY_INDEX, GpuLimits, JobRequest, validate
from .runner import CommandResult, CommandRunner, SubprocessRunner
from .script import render_script, sbatch_options
from . import step_usage as _sstat

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SLURM_TIME = "%Y-%m-%dT%H:%M:%S"
NOTHING_FOUND = 9003  # slurmdb_jobs_get: "Nothing found with query" (--json, no jobs)
SACCT_MAX_IDS = 5000  # job ids per ``sacct -j``: one argv string must stay under 128 KiB
# A requeued attempt is submitted when the previous attempt ends; a job whose first attempt in
# a window was submitted later than this after the window's start has no attempt before it.
LOOKBACK_MARGIN = timedelta(minutes=10)


def _slurm_env_from_os() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "LANG": "C.UTF-8"}
    if "SLURM_CONF" in os.environ:
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return env


def _user_ids(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise InvalidRequest(f"there is no Unix user {user!r} on this host") from None


def slurm_time(when: datetime) -> str:
    """A datetime as Slurm's -S/-E wants it: local wall-clock time, no zone."""
    if when.tzinfo is not None:
        when = when.astimezone().replace(tzinfo=None)
    return when.strftime(SLURM_TIME)


class CliBackend(AdminCommands):
    """SlurmBackend over sbatch/squeue/sacct/scancel/scontrol/sinfo (and sacctmgr for sync);
    the administrator's commands (nice, priority, top, drain/resume, sshare, assoc_mgr,
    partitions) come from ``AdminCommands`` (slurm_bridge.admin).

    ``env``: the environment every Slurm command runs with (needs SLURM_CONF unless slurm.conf
    is in its default place); default: PATH and SLURM_CONF of this process.
    ``gpu_limits``: when given, ``submit`` refuses GPU requests over them before Slurm sees them.
    ``as_root``: submit with ``--uid/--gid`` of ``req.user`` (default: when running as root).
    ``gres_inventory``: GPU type (or "shard") -> most units one node has; only used to explain a
    GPU request Slurm refused (``GresUnavailable``). Without it, that explanation asks
    ``sinfo --json`` once, on the error path only.
    """

    def __init__(self, runner: CommandRunner | None = None, *, env: Mapping[str, str] | None = None,
                 gpu_limits: GpuLimits | None = None, timeout_s: float = 30.0,
                 as_root: bool | None = None,
                 user_ids: Callable[[str], Any] = _user_ids,
                 attempt_lookback: timedelta = timedelta(days=7),
                 gres_inventory: GresInventory | None = None) -> None:
        self.runner = runner or SubprocessRunner()
        self.env = dict(env) if env is not None else _slurm_env_from_os()
        self.env.setdefault("PATH", DEFAULT_PATH)
        self.gpu_limits = gpu_limits
        self.timeout_s = timeout_s
        self.as_root = (os.geteuid() == 0) if as_root is None else as_root
        self.user_ids = user_ids
        self.attempt_lookback = attempt_lookback
        self.gres_inventory = dict(gres_inventory) if gres_inventory is not None else None

    # -- plumbing ---------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, input: str | None = None,
            env: Mapping[str, str] | None = None) -> CommandResult:
        """Run a Slurm command; raise ControllerUnavailable when Slurm does not answer.

        A non-zero exit for any other reason is returned for the caller to map.
        """
        res = self.runner(argv, input=input, timeout=self.timeout_s, env=env or self.env)
        if res.timed_out:
            raise ControllerUnavailable(
                f"Slurm did not answer within {self.timeout_s:g} s ({argv[0]}); try again later")
        if res.rc != 0 and is_unavailable(res.stderr):
            raise ControllerUnavailable(
                f"Slurm is not answering ({argv[0]}): {slurm_text(res.stderr)}")
        return res

    def _json(self, argv: Sequence[str]) -> dict:
        res = self.run(argv)
        if res.rc != 0:
            raise SlurmRejected(f"{argv[0]} failed: {slurm_text(res.stderr) or 'exit ' + str(res.rc)}",
                                slurm_message=slurm_text(res.stderr), argv=tuple(argv))
        try:
            data = json.loads(res.stdout)
        except json.JSONDecodeError as exc:
            raise SlurmRejected(f"{argv[0]} printed no JSON: {exc}", argv=tuple(argv)) from None
        # sacct reports an empty answer as an error (9003 "Nothing found"): it is not one.
        errors = [e for e in data.get("errors") or []
                  if e and not (isinstance(e, dict) and e.get("error_number") == NOTHING_FOUND)]
        if errors:
            # Our queries take no user input, so an error means Slurm could not answer:
            # squeue with slurmctld stopped exits 0 with "slurm_load_jobs: Unspecified error".
            text = "; ".join(
                ": ".join(str(e[k]) for k in ("source", "error", "description") if e.get(k))
                if isinstance(e, dict) else str(e) for e in errors)
            raise ControllerUnavailable(f"Slurm could not answer {argv[0]}: {text}")
        return data

    def _job_command(self, argv: list[str], job_id: int, *, ok_if: tuple[str, ...] = ()) -> None:
        res = self.run(argv)
        if res.rc == 0:
            return
        text = slurm_text(res.stderr)
        if any(fragment in res.stderr for fragment in ok_if):
            return
        if is_not_found(res.stderr):
            raise JobNotFound(job_id, f"Slurm has no job {job_id} ({text})")
        raise SlurmRejected(f"{argv[0]} {argv[1]} refused for job {job_id}: {text}",
                            slurm_message=text, argv=tuple(argv))

    # -- submit -----------------------------------------------------------------------------
    def submit_argv(self, req: JobRequest) -> tuple[list[str], dict[str, str]]:
        """The sbatch argv and environment for ``req`` (already validated)."""
        argv = ["sbatch", "--parsable"]
        env = {k: v for k, v in self.env.items() if k in ("PATH", "SLURM_CONF", "LANG")}
        if self.as_root:
            ids = self.user_ids(req.user)
            argv += [f"--uid={ids.pw_uid}", f"--gid={ids.pw_gid}"]
            env.update(HOME=ids.pw_dir, USER=req.user, LOGNAME=req.user)
        argv += sbatch_options(req)
        return argv, env

    def submit(self, req: JobRequest) -> int:
        limits = self.gpu_limits
        if limits is None:  # no site limits: only the name checks
            limits = {req.gpus.type: req.gpus.count} if req.gpus is not None else {}
        validate(req, limits)
        argv, env = self.submit_argv(req)
        res = self.run(argv, input=render_script(req), env=env)
        if res.rc != 0:
            text = slurm_text(res.stderr) or f"sbatch exited {res.rc}"
            if req.gpus is not None and is_gres_refusal(res.stderr):
                offered = self._offered_gres()
                raise GresUnavailable(gres_refusal_message(req.gpus, offered, text),
                                      requested=req.gpus.gres, offered=offered,
                                      slurm_message=text, argv=tuple(argv))
            raise SlurmRejected(f"Slurm refused the job: {text}", slurm_message=text,
                                argv=tuple(argv))
        first = res.stdout.strip().split(";")[0]
        if not first.isdigit():
            raise SlurmRejected(f"sbatch printed no job id: {res.stdout.strip()!r}",
                                argv=tuple(argv))
        return int(first)

    def _offered_gres(self) -> dict[str, int] | None:
        """What one node offers at most, per GPU type: the given inventory, else ``sinfo``
        (error path only); None when neither answers."""
        if self.gres_inventory is not None:
            return dict(self.gres_inventory)
        try:
            return gres_inventory(self.nodes()) or None
        except SlurmBridgeError:
            return None

    # -- job control ------------------------------------------------------------------------
    def cancel(self, job_id: int, signal: str | None = None, batch_only: bool = False) -> None:
        """Cancel a job; with ``signal`` only send it (to every process with ``--full``, or to the
        batch shell only with ``batch_only``). Cancelling a job that already ended is a no-op."""
        job_id = _job_id(job_id)
        argv = ["scancel"]
        if signal is not None:
            if not signal.isalnum():
                raise InvalidRequest(f"signal {signal!r} is not a signal name")
            argv += [f"--signal={signal}", "--batch" if batch_only else "--full"]
        elif batch_only:
            argv.append("--batch")
        argv.append(str(job_id))
        self._job_command(argv, job_id, ok_if=("already completing or completed",))

    def cancel_task(self, array_job_id: int, task_id: int, signal: str | None = None) -> None:
        """Cancel one task of a job array (``scancel 123_4``); with ``signal`` only send it to
        every process of that task. The rest of the array goes on. A task that already ended
        is a no-op, as with :meth:`cancel`."""
        array_job_id = _job_id(array_job_id)
        if isinstance(task_id, bool) or not isinstance(task_id, int) or not (
                0 <= task_id <= MAX_ARRAY_INDEX):
            raise InvalidRequest(
                f"task id must be a whole number from 0 to {MAX_ARRAY_INDEX}, got {task_id!r}")
        argv = ["scancel"]
        if signal is not None:
            if not signal.isalnum():
                raise InvalidRequest(f"signal {signal!r} is not a signal name")
            argv += [f"--signal={signal}", "--full"]
        argv.append(f"{array_job_id}_{task_id}")
        self._job_command(argv, array_job_id, ok_if=("already completing or completed",))

    def hold(self, job_id: int) -> None:
        self._job_command(["scontrol", "hold", str(_job_id(job_id))], job_id)

    def release(self, job_id: int) -> None:
        self._job_command(["scontrol", "release", str(_job_id(job_id))], job_id)

    def requeue(self, job_id: int) -> None:
        self._job_command(["scontrol", "requeue", str(_job_id(job_id))], job_id)

    # -- queries ----------------------------------------------------------------------------
    def jobs(self, comment: str | None = "slipway") -> dict[int, QueueRecord]:
        """Every job the controller holds (ONE ``squeue`` call), keyed by job id.

        ``comment``: keep jobs whose comment is ``comment`` or starts with ``comment:``;
        None keeps all jobs.

        Job arrays: every record is kept under its OWN job id, a task's (``array_task_id``) as
        well as the one record of an array's still-pending tasks (``array_tasks``, keyed by the
        array's id). Slurm 22.05 gives each record of one answer its own id (the pending-tasks
        record turns into the last task and keeps the array's id), so no task is lost to a key
        collision; group by ``array_job_id`` to see an array whole.

        Asked as lean text, only the fields a QueueRecord holds (slurm_bridge.queue_text).
        """
        parsed = queue_text.query(self.run, self.env)
        out: dict[int, QueueRecord] = {}
        for rec in parsed:
            if comment is None or rec.comment == comment or rec.comment.startswith(comment + ":"):
                out[rec.job_id] = rec
        return out

    def accounting_argv(self, start: datetime, end: datetime,
                        job_ids: Iterable[int] | None = None,
                        delimiter: str = "|", names: Iterable[str] | None = None) -> list[str]:
        """``sacct`` for allocations (``-X``, every attempt with ``-D``) active in [start, end].

        ``names``: only jobs with one of these job names (``--name``). Run it with
        ``SLURM_TIME_FORMAT=%s`` in the environment (see :meth:`accounting`).
        """
        argv = ["sacct", "--parsable2", "--noheader", f"--delimiter={delimiter}", "--allusers",
                "--duplicates", "-X", "--format=" + ",".join(records.SACCT_FIELDS),
                "-S", slurm_time(start), "-E", slurm_time(end)]
        if names is not None:
            wanted = sorted({_job_name(n) for n in names})
            if not wanted:
                return []
            argv.append("--name=" + ",".join(wanted))
        if job_ids is not None:
            ids = sorted({_job_id(j) for j in job_ids})
            if not ids:
                return []
            argv += ["-j", ",".join(map(str, ids))]
        return argv

    def _sacct(self, start: datetime, end: datetime,
               job_ids: Iterable[int] | None = None,
               names: Iterable[str] | None = None) -> list[SacctRecord]:
        """One sacct call per ``SACCT_MAX_IDS`` job ids or names (one call without either)."""
        chunks: list[tuple[list[int] | None, list[str] | None]]
        if job_ids is not None:
            ids = sorted({_job_id(j) for j in job_ids})
            chunks = [(ids[i:i + SACCT_MAX_IDS], None) for i in range(0, len(ids), SACCT_MAX_IDS)]
        elif names is not None:
            wanted = sorted({_job_name(n) for n in names})
            chunks = [(None, wanted[i:i + SACCT_MAX_IDS])
                      for i in range(0, len(wanted), SACCT_MAX_IDS)]
        else:
            chunks = [(None, None)]
        found: list[SacctRecord] = []
        for chunk, name_chunk in chunks:
            # A fresh delimiter per call: no job name can hold it, so none can fake a record.
            delimiter = "\x1f" + secrets.token_hex(3) + "\x1f"
            argv = self.accounting_argv(start, end, chunk, delimiter, names=name_chunk)
            res = self.run(argv, env={**self.env, "SLURM_TIME_FORMAT": "%s"})
            if res.rc != 0:
                text = slurm_text(res.stderr) or f"exit {res.rc}"
                raise SlurmRejected(f"sacct failed: {text}", slurm_message=slurm_text(res.stderr),
                                    argv=tuple(argv))
            if is_unavailable(res.stderr):  # never read "no answer" as "no jobs"
                raise ControllerUnavailable(f"Slurm could not answer sacct: {slurm_text(res.stderr)}")
            found += records.parse_sacct(res.stdout, delimiter)
        return found

    def accounting(self, start: datetime, end: datetime,
                   job_ids: Iterable[int] | None = None,
                   names: Iterable[str] | None = None) -> list[SacctRecord]:
        """Accounting records of jobs active in [start, end], every attempt (``sacct -X -D``).

        ``names``: only jobs with one of these job names (``sacct --name``, e.g. to find a job
        whose submission had no answer); with ``job_ids`` as well, only jobs matching both.

        Read from ``sacct --parsable2`` (``sacct --json`` in 22.05 reports exit code 0 for a
        script that exited 3), times as epoch seconds (``SLURM_TIME_FORMAT=%s``: no time-zone
        guessing), returned as aware UTC datetimes.

        sacct has no restart count, so attempts are numbered from the job's records in submit
        order. A requeued attempt is submitted when the previous one ends, so only a job whose
        first record in the window was submitted before ``start`` (plus a margin) may have
        earlier attempts outside it: a second call (``-j`` those jobs only, window opened
        ``attempt_lookback`` earlier) finds them so numbers stay stable.

        Job arrays: ``job_ids`` may hold an array's id: ``sacct -j 123`` answers every task of
        array 123 (each task's own id in ``job_id``, ``array_job_id`` 123, ``array_task_id``);
        attempts are numbered per task, and the lookback asks for the array by its id. Tasks
        that never started have no record (see ``records.parse_sacct``).
        """
        if end < start:
            raise InvalidRequest("accounting window ends before it starts")
        if job_ids is not None:
            job_ids = {_job_id(j) for j in job_ids}
            if not job_ids:
                return []
        if names is not None:
            names = {_job_name(n) for n in names}
            if not names:
                return []
            if job_ids is not None:  # both: ask by id, keep the names asked for
                return [r for r in self.accounting(start, end, job_ids) if r.name in names]
        found = self._sacct(start, end, job_ids, names)
        if not found:
            return []
        horizon = start + LOOKBACK_MARGIN
        first_submit: dict[tuple[int, int], datetime | None] = {}
        for r in found:
            if r.attempt == 0:
                first_submit[_attempts_of(r)] = r.submit
        older = {k for k, s in first_submit.items() if s is None or s < horizon}
        if not older:
            return found
        wide: dict[tuple[int, int], list[SacctRecord]] = {}
        # a task is asked for by its array's id (which answers every task of the array)
        for r in self._sacct(start - self.attempt_lookback, end, {k[0] for k in older}):
            wide.setdefault(_attempts_of(r), []).append(r)
        out: list[SacctRecord] = []
        by_job: dict[tuple[int, int], list[SacctRecord]] = {}
        for r in found:
            by_job.setdefault(_attempts_of(r), []).append(r)
        for key, recs in by_job.items():
            if key in older:
                numbered = {_attempt_key(w): w for w in wide.get(key, ())}
                if all(_attempt_key(r) in numbered for r in recs):
                    recs = [numbered[_attempt_key(r)] for r in recs]
            out += recs
        return out

    def nodes(self) -> list[NodeRecord]:
        """Every node with its GPUs per type (total/allocated/free) and state (``sinfo --json``;
        ``scontrol show nodes`` has no --json in 22.05)."""
        return records.parse_nodes(self._json(["sinfo", "--json"]))

    def step_usage(self, job_ids: Iterable[int]) -> dict[int, _sstat.JobUsage]:
        """Running jobs' CPU and memory now, by job id: ONE ``sstat`` for all of them
        (slurm_bridge.step_usage); a job that is not running has no entry."""
        return _sstat.query(self.run, [_job_id(j) for j in job_ids])


def _attempts_of(rec: SacctRecord) -> tuple[int, int]:
    """Whose attempts ``rec`` is: (job id, -1), or (array job id, task id) for an array task."""
    if rec.array_task_id is not None:
        return (rec.array_job_id, rec.array_task_id)
    return (rec.job_id, -1)


def _attempt_key(rec: SacctRecord) -> tuple:
    # a requeued attempt gets a new submission time
    return (rec.job_id, rec.array_task_id, rec.submit)


_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def _job_name(name: object) -> str:
    """A job name for ``sacct --name`` (a comma-separated list: no commas, no odd characters)."""
    if not isinstance(name, str) or not _JOB_NAME.fullmatch(name):
        raise InvalidRequest(f"job name must be letters, digits, '.', '_' or '-', got {name!r}")
    return name


def _job_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id <= 0:
        raise InvalidRequest(f"job id must be a positive whole number, got {job_id!r}")
    return job_id
