"""The SlurmBackend Protocol: what the portal needs from Slurm, nothing more.

``CliBackend`` (slurm_bridge.cli) implements it with Slurm's commands; a slurmrestd or
pyslurm backend can be added behind the same Protocol where versions match.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterable, Protocol, runtime_checkable

from .records import JobUsage, NodeRecord, QueueRecord, SacctRecord
from .request import JobRequest


@runtime_checkable
class SlurmBackend(Protocol):
    def submit(self, req: JobRequest) -> int:
        """Submit; return the Slurm job id.
        Raises InvalidRequest / SlurmRejected / ControllerUnavailable."""

    def cancel(self, job_id: int, signal: str | None = None, batch_only: bool = False) -> None:
        """End the job; with ``signal`` (e.g. "TERM") only send that signal."""

    def cancel_task(self, array_job_id: int, task_id: int, signal: str | None = None) -> None:
        """End one task of a job array (``scancel 123_4``); the other tasks go on. With
        ``signal`` only send that signal to the task."""

    def hold(self, job_id: int) -> None: ...

    def release(self, job_id: int) -> None: ...

    def requeue(self, job_id: int) -> None: ...

    def jobs(self, comment: str | None = "slipway") -> dict[int, QueueRecord]:
        """All jobs in the controller's queue (one call), filtered by comment, each under its own
        job id: an array's tasks and its still-pending tasks are separate records (group them
        by ``array_job_id``)."""

    def accounting(self, start: datetime, end: datetime,
                   job_ids: Iterable[int] | None = None,
                   names: Iterable[str] | None = None) -> list[SacctRecord]:
        """Accounting records (every attempt) of jobs active in [start, end]; ``names``: only
        jobs with one of these job names. An array's id in ``job_ids`` gives every task's
        records (``array_job_id``/``array_task_id``; attempts counted per task)."""

    def nodes(self) -> list[NodeRecord]: ...

    def step_usage(self, job_ids: Iterable[int]) -> dict[int, JobUsage]:
        """CPU and memory of running jobs now (ONE ``sstat`` for all of them), by job id: each
        job's running steps (slurm_bridge.step_usage). A job that is not running is absent;
        an array's id answers for each running task under the task's own job id."""
