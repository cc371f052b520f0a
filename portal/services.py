"""The bundle of collaborators every portal operation receives (built by ``create_app`` or the
CLI from one Config). Tests build it with temp dirs and a fake Slurm backend."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from .config import Config
from .db import Database, utcnow

log = logging.getLogger("slipway")


@dataclass
class Services:
    config: Config
    db: Database
    backend: Any                      # slurm_bridge SlurmBackend
    catalog: Any                      # container_images Catalog
    clock: Callable[[], datetime] = utcnow
    # chown job dirs/specs to the job user (only possible as root; off in unit tests)
    chown: bool | None = None
    extra: dict = field(default_factory=dict)
    # Set when something happened that the reconciler should look at now (a cancel, a runner's
    # finishing/results event) instead of at its next tick.
    wake: threading.Event = field(default_factory=threading.Event)

    def now(self) -> datetime:
        return self.clock()


def build_services(config: Config, *, backend: Any = None, catalog: Any = None,
                   clock: Callable[[], datetime] | None = None, upgrade: bool = True) -> Services:
    """Everything from config: dirs, secrets, database (migrated), Slurm backend, catalog."""
    from . import integrations

    config.ensure_dirs()
    config.ensure_secrets()
    db = Database(config.database_url)
    if upgrade:
        db.upgrade()
    addresses = dict(config.node_addresses)
    return Services(
        extra={"node_addresses": lambda node: addresses.get(node) or addresses.get("*") or node},
        config=config,
        db=db,
        backend=backend if backend is not None else integrations.make_backend(config),
        catalog=catalog if catalog is not None else integrations.load_catalog(config),
        clock=clock or utcnow,
    )
