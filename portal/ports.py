"""The ports: what the service layer needs from the world outside the database, as typed
Protocols. ``Services`` (portal/services.py) holds one adapter per port; ``bootstrap``
(portal/bootstrap.py) plugs in the real ones (portal/adapters/), unit tests the in-memory ones
(tests/support/fakes.py).

* ``SlurmJobs``: ``slurm_bridge.cli.CliBackend``; in memory ``FakeBackend``;
* ``SlurmAccounts``: ``adapters.slurm.SacctmgrAccounts``; in memory ``InMemoryAccounts``;
* ``Git``: ``adapters.git.GitRepos`` (git_gateway.repos); in memory ``InMemoryGit`` (unit tests
  mostly use real repositories under a temp dir);
* ``Containers``: ``container_images.catalog.Catalog``; in memory ``InMemoryCatalog``;
* ``Mailer``: ``adapters.mail.SmtpMailer``; in memory ``InMemoryMailer``;
* ``Metrics``: ``adapters.metrics.MetricsRegistry`` (in process already: tests use it too);
* ``PaymentProvider``: none by default (a site plugs its own: ``bootstrap(payments=…)``).

Every Protocol is ``runtime_checkable``: ``isinstance(adapter, Port)`` checks the method names
(tests/unit/test_ports.py holds each real and in-memory adapter to its port).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Mapping, Protocol, runtime_checkable

from git_gateway.sweep_merge import MergeResult
from slurm_bridge.backend import SlurmBackend
from slurm_bridge.sync import DesiredState

# ------------------------------------------------------------------------------ Slurm

#: Jobs in Slurm: submit/cancel/hold/release/requeue, the queue (squeue), accounting (sacct),
#: nodes. slurm_bridge's own Protocol is the port (``Services.backend``).
SlurmJobs = SlurmBackend


@runtime_checkable
class SlurmAccounts(Protocol):
    """Slurm's accounts, users, associations and QOS (sacctmgr)."""

    def converge(self, desired: DesiredState) -> list[str]:
        """Make Slurm's accounting database match ``desired`` (adds and removes within the
        desired state's prefix); return the changes made, one line each (empty when in step)."""


# ------------------------------------------------------------------------------- git


@runtime_checkable
class Git(Protocol):
    """The projects' bare repositories (git_gateway.repos under ``config.repos_root``)."""

    def create_repo(self, team: str, project: str) -> Path:
        """Create the bare repository with Slipway's hooks (nothing happens when it exists)."""

    def delete_repo(self, team: str, project: str) -> bool:
        """Delete the repository and its LFS objects; False when there was none."""

    def refresh_hooks(self) -> int:
        """Re-install outdated hooks in every repository (at start, after an upgrade)."""

    def repo_bytes(self, team: str, project: str) -> int:
        """Bytes on disk of the repository and its LFS objects."""

    def entrypoint_problem(self, team: str, project: str, sha: str,
                           quarantine: str | None = None) -> str | None:
        """None when slipway-entrypoint.sh is a regular file at ``sha``; else a user message."""

    def resolve_ref(self, team: str, project: str, ref: str) -> str | None:
        """The commit ``ref`` points at, or None."""

    def delete_ref(self, team: str, project: str, ref: str) -> bool:
        """Delete ``ref``; False when it did not exist."""

    def merge_sweep(self, team: str, project: str, *, branch: str, base: str,
                    tasks: Mapping[int, str], job_id: int) -> MergeResult:
        """ONE commit on ``branch`` with every task's results (``tasks``: task index -> its
        results commit; tasks without results absent) under ``sweep-<job_id>/task-<i>/``,
        relative to ``base`` (the pushed commit); moved by compare-and-swap, idempotent per job
        (git_gateway.sweep_merge.merge_tasks). ``sha`` None when ``tasks`` is empty; ValueError
        for bad input; git_gateway.sweep_merge.MergeError when it cannot be made."""


# ------------------------------------------------------------------------- containers


@runtime_checkable
class Containers(Protocol):
    """The image catalog (container_images.catalog.Catalog)."""

    @property
    def names(self) -> tuple[str, ...]:
        """Every image name, in catalog order."""

    def runtime_problem(self, name: str, runtime: str) -> str | None:
        """None when ``name`` can run under ``runtime``; else a user message."""

    def image_digest(self, name: str, runtime: str, images_root=None) -> str:
        """``sha256:<hex>`` of the image ``runtime`` runs for ``name``; OSError when unreadable."""

    def sif_path(self, name: str, images_root) -> Path:
        """Where apptainer's SIF of ``name`` lives."""

    def local_path(self, name: str, cache=None) -> Path:
        """Where charliecloud's directory image of ``name`` lives."""

    def has_jupyter(self, name: str) -> bool:
        """Whether ``name`` has JupyterLab (it can run a workspace)."""


# ----------------------------------------------------------------------- mail, metrics


@runtime_checkable
class Mailer(Protocol):
    def send(self, to: str, subject: str, body: str) -> bool | None:
        """Send a plain-text message to ``to``. Never raises: False when it could not be handed
        on (unusable address, server down or refusing: logged and counted by the adapter)."""


@runtime_checkable
class Metrics(Protocol):
    def inc(self, name: str, amount: float = 1.0, labels: Mapping[str, str] | None = None) -> None:
        """Add ``amount`` to counter ``name`` (with ``labels``)."""

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set gauge ``name`` (with ``labels``) to ``value``."""

    def render(self) -> str:
        """Every metric in Prometheus' text exposition format."""


# --------------------------------------------------------------------------- payments


@dataclass(frozen=True)
class Payment:
    """A payment the provider has settled: ``reference`` is its id at the provider."""

    reference: str
    team: str
    amount: Decimal
    payer: str


@runtime_checkable
class PaymentProvider(Protocol):
    name: str

    def settled_payment(self, reference: str) -> Payment | None:
        """The provider's record of settled payment ``reference``; None when it has none
        (unknown, not paid yet, refunded)."""


__all__ = ["SlurmJobs", "SlurmAccounts", "Git", "Containers", "Mailer", "Metrics", "Payment",
           "PaymentProvider"]
