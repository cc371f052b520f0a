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


class GresUnavailable(SlurmRejected):
    """Slurm refused a job's GPU request: no node has that GPU type, or that many of it.

    Slurm itself only says "Requested node configuration is not available"; the message says
    which gres was asked for and what the cluster offers. ``requested`` is the ``--gres`` value
    (``gpu:h100:1``); ``offered`` maps each GPU type (and ``shard``) to the most one node has.
    """

    def __init__(self, message: str, *, requested: str, offered: "dict[str, int] | None" = None,
                 slurm_message: str = "", argv: tuple[str, ...] = ()):
        super().__init__(message, slurm_message=slurm_message, argv=argv)
        self.requested = requested
        self.offered = dict(offered or {})


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
    # ETIMEDOUT from connect ("... persistent connection to host:...: Connection timed out").
    # Not a bare "timed out": Slurm says "Timed out waiting for job step to complete" of a job,
    # and a job's name or a sacctmgr description could say it too.
    r"|Connection timed out",
    re.IGNORECASE,
)
# sbatch's refusals of a --gres it cannot place: an unknown type or more than a node has.
_GRES_REFUSED = re.compile(
    r"Requested node configuration is not available"
    r"|Invalid generic resource \(gres\) specification"
    r"|Invalid Trackable RESource \(TRES\) specification",
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


def is_gres_refusal(stderr: str) -> bool:
    """Slurm refused to place the job's generic resources (it does not say which or why)."""
    return bool(_GRES_REFUSED.search(stderr))
