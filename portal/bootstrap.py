"""``bootstrap`` — THE one wiring point: config (environment + file) → dirs and secrets →
database (migrated) → the real adapters (portal/adapters/) → ``Services``.

The web app (``portal.app.create_app``), the CLI, the reconciler (``slipway serve`` /
``slipway reconcile``) and the tests (``tests/support/fakes.make_services``, with in-memory
adapters passed as overrides) all build their Services here; nothing else constructs adapters.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from .adapters.containers import load_catalog
from .adapters.git import GitRepos
from .adapters.mail import SmtpMailer
from .adapters.metrics import MetricsRegistry
from .adapters.slurm import SacctmgrAccounts, make_backend
from .config import Config, load_config
from .db import Database, utcnow
from .ports import Containers, Git, Mailer, Metrics, PaymentProvider, SlurmAccounts, SlurmJobs
from .services import Services


def node_addresses(config: Config) -> Callable[[str], str]:
    """``config.node_addresses`` as the function ``Services.node_address``: a node's own entry,
    else the ``*`` entry, else the node's name."""
    addresses = dict(config.node_addresses)
    return lambda node: addresses.get(node) or addresses.get("*") or node


def bootstrap(config: Config | None = None, *, backend: SlurmJobs | None = None,
              accounts: SlurmAccounts | None = None, git: Git | None = None,
              catalog: Containers | None = None, mailer: Mailer | None = None,
              metrics: Metrics | None = None, payments: PaymentProvider | None = None,
              clock: Callable[[], datetime] | None = None, upgrade: bool = True) -> Services:
    """Everything from ``config`` (default: ``load_config()``): dirs, secrets, the database
    (migrated unless ``upgrade=False``) and an adapter per port; each override replaces the
    real adapter of its port (tests pass in-memory ones)."""
    config = config or load_config()
    config.ensure_dirs()
    config.ensure_secrets()
    db = Database(config.database_url)
    if upgrade:
        db.upgrade()
    if backend is None:
        backend = make_backend(config)
    if accounts is None:
        accounts = SacctmgrAccounts(make_backend(config), cluster=config.cluster_name or None)
    return Services(
        config=config,
        db=db,
        backend=backend,
        accounts=accounts,
        git=git if git is not None else GitRepos(config),
        catalog=catalog if catalog is not None else load_catalog(config),
        mailer=mailer if mailer is not None else _mailer(config),
        metrics=metrics if metrics is not None else MetricsRegistry(),
        payments=payments,
        clock=clock or utcnow,
        node_address=node_addresses(config),
    )


def _mailer(cfg: Config) -> Mailer | None:
    """SMTP when ``smtp_host`` is configured; else None: no mail (pages still show reminders)."""
    if not cfg.smtp_host:
        return None
    return SmtpMailer(cfg.smtp_host, cfg.smtp_port, sender=cfg.mail_from,
                      username=cfg.smtp_username, password=cfg.smtp_password,
                      starttls=cfg.smtp_starttls)
