"""slurm_bridge: Slipway's adapter to Slurm (no Flask, no database).

Typed requests in (JobRequest), typed records out (QueueRecord, SacctRecord, NodeRecord),
typed errors (InvalidRequest, SlurmRejected, ControllerUnavailable, JobNotFound).
"""
from .admin_records import PartitionRecord, ShareRecord
from .backend import SlurmBackend
from .cli import CliBackend
from .errors import (ControllerUnavailable, GresUnavailable, InvalidRequest, JobNotFound,
                     SlurmBridgeError, SlurmRejected)
from .records import GpuCount, NodeRecord, QueueRecord, SacctRecord
from .request import GpuLimits, GpuRequest, JobRequest, validate, validate_gpus
from .runner import CommandResult, CommandRunner, FakeRunner, SubprocessRunner
from .script import render_script, sbatch_options

__all__ = [
    "SlurmBackend", "CliBackend", "ControllerUnavailable", "GresUnavailable", "InvalidRequest",
    "JobNotFound",
    "SlurmBridgeError", "SlurmRejected", "GpuCount", "NodeRecord", "QueueRecord", "SacctRecord",
    "GpuLimits", "GpuRequest", "JobRequest", "validate", "validate_gpus", "CommandResult",
    "CommandRunner", "FakeRunner", "SubprocessRunner", "render_script", "sbatch_options",
    "PartitionRecord", "ShareRecord",
]
