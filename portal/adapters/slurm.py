"""Slurm's adapters: jobs through slurm_bridge's ``CliBackend`` (Slurm's commands with JSON
output), accounts through ``sacctmgr`` (slurm_bridge.sync's read, plan and apply)."""
from __future__ import annotations

from slurm_bridge.cli import CliBackend
from slurm_bridge.sync import DesiredState, sync

from ..config import Config


def make_backend(config: Config) -> CliBackend:
    """The production Slurm backend (Slurm's commands: JSON, or lean text for squeue and sacct)."""
    return CliBackend(gpu_limits=dict(config.gpu_limits))


class SacctmgrAccounts:
    """``SlurmAccounts`` with ``sacctmgr`` run through ``runner`` (a CliBackend: its ``run``
    shares the backend's environment and timeouts) on cluster ``cluster``."""

    def __init__(self, runner: CliBackend, cluster: str | None = None):
        self.runner = runner
        self.cluster = cluster or None

    def converge(self, desired: DesiredState) -> list[str]:
        return [str(c) for c in sync(self.runner, desired, cluster=self.cluster)]
