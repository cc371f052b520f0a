"""Per-invocation state (``Ctx``): who acts, where the data comes from, the services; and the few
helpers every command group shares — the Actor (the service layer's), the one check for
cluster-administrator-only commands, and service errors turned into the CLI's ``Error: …``."""
from __future__ import annotations

import click

from .. import shellquote
from ..config import ConfigError, load_config
from ..identity import users
from ..bootstrap import bootstrap
from ..services import Services
from ..teams import access, slurm_accounts
from .output import fail, warn
from .remote import RemoteSource

OPERATOR = "root"


class Ctx:
    """Per-invocation state. Tests pass ``obj=Ctx(services=svc)`` to ``CliRunner.invoke``."""

    def __init__(self, actor: str | None = None, services: Services | None = None):
        self.actor_name = actor
        self._svc: Services | None = services
        self._actor: access.Actor | None = None
        self.remote: RemoteSource | None = None
        self.command = ""

    @property
    def svc(self) -> Services:
        if self.remote is not None:
            raise click.ClickException(
                f"`slipway {self.command}` works only on the Slipway server (local mode, reading its "
                f"database); in remote mode (--url / SLIPWAY_URL = {self.remote.url}) only job, "
                "project list/create/show, team ledger, team add-funds, team request-funds, funds "
                "and token list/revoke are available")
        if self._svc is None:
            try:
                self._svc = bootstrap(load_config())
            except ConfigError as exc:
                raise click.ClickException(f"configuration: {exc}") from None
        return self._svc

    @property
    def by(self) -> str:
        return self.actor_name or OPERATOR


pass_ctx = click.make_pass_decorator(Ctx)


def no_user(name: str) -> str:
    return (f"there is no user {name!r}; create it with: "
            + shellquote.command(["slipway", "user", "add", name]))


def actor(ctx: Ctx) -> access.Actor:
    """The service layer's Actor for this invocation: the ``--as`` user, else the operator (no
    user; a cluster administrator)."""
    if ctx._actor is None:
        if ctx.actor_name is None:
            ctx._actor = access.Actor(id=0, name=OPERATOR, is_cluster_admin=True)
        else:
            with ctx.svc.db.session() as s:
                ctx._actor = users.actor_named(s, ctx.actor_name)
            if ctx._actor is None:
                fail(no_user(ctx.actor_name))
    return ctx._actor


def require_cluster_admin(ctx: Ctx, what: str) -> None:
    """The one check of the cluster-administrator-only commands (the operator is one)."""
    if not actor(ctx).is_cluster_admin:
        fail(f"only cluster administrators may {what}")


def call(fn, *a, **kw):
    """``fn(*a, **kw)`` of the service layer; its refusals become the CLI's ``Error: …``."""
    try:
        return fn(*a, **kw)
    except access.OpError as exc:
        fail(str(exc))


def sync_slurm(ctx: Ctx) -> None:
    """Converge Slurm's accounts with the teams just changed (the reconciler retries on failure)."""
    try:
        slurm_accounts.sync_accounts(ctx.svc)
    except Exception as exc:  # noqa: BLE001 — the database change stands; Slurm catches up later
        warn(f"Slurm accounts not updated yet ({exc}); the reconciler will retry")


def split_ref(ref: str) -> tuple[str, str]:
    team_name, sep, name = ref.partition("/")
    if not sep or not team_name or not name:
        fail(f"name the project as TEAM/PROJECT, not {ref!r}")
    return team_name, name
