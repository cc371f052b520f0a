"""Cluster administration through Slurm's commands: job priority and nice, node drain/resume,
and the read-only views of fair share, account usage and partitions.

``AdminCommands`` is a mixin of ``CliBackend`` (it uses the backend's ``run``, ``jobs`` and
``nodes``); every command is an argv, never a shell line, and every name is checked first.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

from . import admin_records
from .admin_records import PartitionRecord, ShareRecord
from .errors import InvalidRequest, JobNotFound, SlurmRejected, is_not_found, slurm_text
from .runner import CommandResult

if TYPE_CHECKING:  # the methods the mixin borrows from CliBackend
    from .records import NodeRecord, QueueRecord

MAX_NICE = 2_147_483_645           # |nice|, as sbatch --nice and scontrol allow
MAX_PRIORITY = 4_294_967_293       # Slurm's largest settable job priority (NO_VAL - 2)
NODE_STATES = ("drain", "resume")
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REASON = re.compile(r"^[A-Za-z0-9 _.,:;/@()#+=-]{1,200}$")
_FOR_JOB = re.compile(r"for job (\d+)")


def _job_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id <= 0:
        raise InvalidRequest(f"job id must be a positive whole number, got {job_id!r}")
    return job_id


def _whole(what: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return value


class AdminCommands:
    """Administrator's commands of ``CliBackend`` (see the module docstring)."""

    if TYPE_CHECKING:
        def run(self, argv: Sequence[str], *, input: str | None = None,
                env=None) -> CommandResult: ...

        def jobs(self, comment: str | None = "slipway") -> dict[int, QueueRecord]: ...

        def nodes(self) -> list[NodeRecord]: ...

    # -- plumbing -------------------------------------------------------------------------
    def _stdout(self, argv: list[str]) -> str:
        res = self.run(argv)
        if res.rc != 0:
            text = slurm_text(res.stderr) or f"exit {res.rc}"
            raise SlurmRejected(f"{argv[0]} failed: {text}", slurm_message=text, argv=tuple(argv))
        return res.stdout

    def _update_jobs(self, ids: list[int], setting: str) -> None:
        argv = ["scontrol", "update", "JobId=" + ",".join(map(str, ids)), setting]
        res = self.run(argv)
        if res.rc == 0:
            return
        text = slurm_text(res.stderr) or f"exit {res.rc}"
        if is_not_found(res.stderr):
            m = _FOR_JOB.search(res.stderr)
            missing = int(m.group(1)) if m else ids[0]
            raise JobNotFound(missing, f"Slurm has no job {missing} ({text})")
        raise SlurmRejected(f"Slurm refused {setting} for job(s) {','.join(map(str, ids))}: {text}",
                            slurm_message=text, argv=tuple(argv))

    # -- job priority ---------------------------------------------------------------------
    def set_nice(self, job_ids: Sequence[int], nice: int) -> None:
        """Set the nice value of these jobs (ONE ``scontrol update JobId=1,2,3 Nice=N`` call);
        a higher nice lowers a job's priority by that much. No ids: nothing is run."""
        ids = sorted({_job_id(j) for j in job_ids})
        nice = _whole("nice", nice, -MAX_NICE, MAX_NICE)
        if ids:
            self._update_jobs(ids, f"Nice={nice}")

    def set_priority(self, job_id: int, priority: int) -> None:
        """Fix a job's priority (Slurm stops recomputing it; its nice is reset to 0)."""
        priority = _whole("priority", priority, 1, MAX_PRIORITY)
        self._update_jobs([_job_id(job_id)], f"Priority={priority}")

    def top(self, job_id: int) -> int:
        """Give a pending job a priority one above the highest of every other pending job (of
        anyone) and return it. Raises JobNotFound, or InvalidRequest when it is not pending."""
        job_id = _job_id(job_id)
        queue = self.jobs(comment=None)
        job = queue.get(job_id)
        if job is None:
            raise JobNotFound(job_id, f"Slurm has no job {job_id} in its queue")
        if job.state != "PENDING":
            raise InvalidRequest(f"job {job_id} is {job.state}: only a pending job can go to the top")
        highest = max((r.priority for r in queue.values()
                       if r.state == "PENDING" and r.job_id != job_id), default=0)
        priority = min(highest + 1, MAX_PRIORITY)
        self.set_priority(job_id, priority)
        return priority

    # -- nodes ----------------------------------------------------------------------------
    def update_node(self, name: str, state: str, reason: str | None = None) -> None:
        """``drain`` a node (no new jobs; running ones finish; a reason is required) or
        ``resume`` it (back in service)."""
        if not isinstance(name, str) or not _NODE.match(name):
            raise InvalidRequest(f"node name {name!r} is not valid")
        if state not in NODE_STATES:
            raise InvalidRequest(f"node state must be one of {', '.join(NODE_STATES)}, got {state!r}")
        argv = ["scontrol", "update", f"NodeName={name}", f"State={state.upper()}"]
        if reason is not None or state == "drain":
            reason = (reason or "").strip()
            if not reason:
                raise InvalidRequest(f"say why node {name} is drained (a reason is required)")
            if not _REASON.match(reason):
                raise InvalidRequest(
                    "the reason must be one line of at most 200 letters, digits, spaces and "
                    "simple punctuation")
            argv.append(f"Reason={reason}")
        res = self.run(argv)
        if res.rc == 0:
            return
        text = slurm_text(res.stderr) or f"exit {res.rc}"
        if "Invalid node name" in res.stderr:
            raise SlurmRejected(f"Slurm has no node {name} ({text})", slurm_message=text,
                                argv=tuple(argv))
        if state == "resume" and "Invalid node state" in res.stderr:
            raise SlurmRejected(f"node {name} is not drained or down: there is nothing to resume "
                                f"({text})", slurm_message=text, argv=tuple(argv))
        raise SlurmRejected(f"Slurm refused to {state} node {name}: {text}", slurm_message=text,
                            argv=tuple(argv))

    # -- views ----------------------------------------------------------------------------
    def shares(self) -> list[ShareRecord]:
        """Every association's fair-share state (``sshare -P -n -a``); account rows have
        user ""."""
        return admin_records.parse_sshare(self._stdout(
            ["sshare", "--parsable2", "--noheader", "--all",
             "--format=" + ",".join(admin_records.SSHARE_FIELDS)]))

    def assoc_usage(self) -> dict[str, int]:
        """Account -> billing-minutes used, as the controller counts them against
        ``GrpTRESMins=billing=N`` (``scontrol show assoc_mgr flags=assoc``)."""
        return admin_records.parse_assoc_usage(
            self._stdout(["scontrol", "show", "assoc_mgr", "flags=assoc"]))

    def partitions(self) -> list[PartitionRecord]:
        """Every partition with its nodes, limits and GPU totals (``scontrol show partition -o``
        and ``sinfo --json``)."""
        text = self._stdout(["scontrol", "--oneliner", "show", "partition"])
        return admin_records.parse_partitions(text, self.nodes())
