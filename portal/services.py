"""The bundle of collaborators every portal operation receives: the config, the database, the
clock and one adapter per port (``portal/ports.py``). ``portal.bootstrap.bootstrap`` builds it
(the real adapters from one Config); tests build it through the same function with in-memory
adapters (``tests/support/fakes.make_services``)."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from .config import Config
from .db import Database, utcnow
from .ports import Containers, Git, Mailer, Metrics, PaymentProvider, SlurmAccounts, SlurmJobs

log = logging.getLogger("slipway")


def same_node(node: str) -> str:
    """The default ``node_address``: a node is reached by its name."""
    return node


@dataclass
class Caches:
    """In-process caches of one Services (one per server or CLI process)."""

    # (the config values it was built from, identity.ldap_directory.Directory)
    ldap_directory: tuple[tuple, Any] | None = None
    # (team, project) -> (time.monotonic() of the measurement, bytes or None): projects.service
    storage: dict[tuple[str, str], tuple[float, int | None]] = field(default_factory=dict)
    # billing.queries.daily_spending's cache (the billing page's chart)
    spending: dict = field(default_factory=dict)


@dataclass
class Services:
    config: Config
    db: Database
    backend: SlurmJobs                # jobs in Slurm (submit, cancel, squeue, sacct)
    accounts: SlurmAccounts           # Slurm's accounts and associations (sacctmgr)
    git: Git                          # the projects' bare repositories
    catalog: Containers               # the container image catalog
    mailer: Mailer | None          # None: mail is not configured (smtp_host)
    metrics: Metrics
    payments: PaymentProvider | None = None   # portal.billing.payments; none by default
    clock: Callable[[], datetime] = utcnow
    # chown job dirs/specs to the job user (only possible as root; off in unit tests)
    chown: bool | None = None
    # node name -> the address the job proxy connects to (config.node_addresses)
    node_address: Callable[[str], str] = same_node
    cache: Caches = field(default_factory=Caches)
    # Set when something happened that the reconciler should look at now (a cancel, a runner's
    # finishing/results event) instead of at its next tick.
    wake: threading.Event = field(default_factory=threading.Event)

    def now(self) -> datetime:
        return self.clock()
