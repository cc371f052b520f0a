"""Typed errors raised by slurm_bridge.

Every message is meant to be shown to a user as is: it says what was wrong and,
where Slurm refused something, carries Slurm's own text.
"""
from __future__ import annotations

import re


class SlurmBridgeError(Exception):
    """Base class of every error slurm_bridge raises."""


class InvalidRequest(SlurmBridgeError, ValueError):
    """The request was refused before reaching Slurm (bad name, too many GPUs, ...)."""


class SlurmRejected(SlurmBridgeError):
    """Slurm answered and refused (invalid gres, unknown QOS, invalid account, ...).

    ``slurm_message`` is Slurm's own text with the ``sbatch: error:`` noise removed.
    """

    def __init__(self, message: str, *, slurm_message: str = "", argv: tuple[str, ...] = ()):
        super().__init__(message)
        self.slurm_message = slurm_message
        self.argv = argv


class ControllerUnavailable(SlurmBridgeError):
    """slurmctld / slurmdbd did not answer (connection refused, timeout).

    This says nothing about any job's state: callers must keep the last known state.
    """


class JobNotFound(SlurmBridgeError):
    """Slurm does not know the job id (never existed, or purged from the controller)."""

    def __init__(self, job_id: int, message: str = ""):
        super().__init__(message or f"Slurm has no job {job_id}")
        self.job_id = job_id


# Fragments of stderr seen when the controller or the accounting daemon is not answering
# (recorded from the local cluster with daemons stopped; see tests/fixtures/slurm/).
_UNAVAILABLE = re.compile(
    r"Unable to contact slurm controller"
    r"|Connection refused"
    r"|Socket timed out"
    r"|Zero Bytes were transmitted or received"
    r"|Problem talking to the database"
    r"|slurm_persist_conn_open"
    r"|Unable to establish controller machine"
    r"|Could not establish a configuration source"
    r"|Slurm backup controller in standby mode"
    r"|Communication connection failure"
    r"|Unexpected message received"  # scontrol hold/release with slurmctld stopped
    r"|timed out",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(r"Invalid job id specified|Unknown job|job id \d+ not found", re.IGNORECASE)
# "sbatch: error: Batch job submission failed: X", "slurm_suspend error: X", "error: X"
_NOISE = re.compile(r"^(?:[a-z_]+(?: error)?: )?(?:error: |fatal: )?(?:Batch job submission failed: )?",
                    re.IGNORECASE)


def slurm_text(stderr: str) -> str:
    """Slurm's own message from stderr, without the ``sbatch: error:`` prefixes, one line."""
    lines = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line:
            continue
        lines.append(_NOISE.sub("", line, count=1).strip())
    kept: list[str] = []
    for line in lines:  # keep order; drop a line an earlier one already says
        if not any(line in k for k in kept):
            kept.append(line)
    return "; ".join(kept)


def is_unavailable(stderr: str) -> bool:
    return bool(_UNAVAILABLE.search(stderr))


def is_not_found(stderr: str) -> bool:
    return bool(_NOT_FOUND.search(stderr))
