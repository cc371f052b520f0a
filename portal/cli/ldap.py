"""``slipway ldap sync``: directory users become users, groups become teams (cluster
administrators and the operator)."""
from __future__ import annotations

import click
from rich.markup import escape

from ..identity.ldap_directory import DirectoryUnavailable
from ..identity.team_sync import SyncRefused, sync_ldap
from .context import Ctx, pass_ctx, require_cluster_admin
from .output import fail, say, warn


@click.group()
def ldap():
    """LDAP: directory users become users, groups become teams."""


@ldap.command("sync")
@click.option("--allow-empty", is_flag=True, help="apply even if the directory returns no users")
@pass_ctx
def ldap_sync(ctx: Ctx, allow_empty):
    """Converge users and teams with the directory now (the reconciler also does it periodically)."""
    require_cluster_admin(ctx, "sync LDAP")
    try:
        rep = sync_ldap(ctx.svc, allow_empty=allow_empty)
    except (DirectoryUnavailable, SyncRefused) as exc:
        fail(str(exc))
    # names and DNs come from the directory: never read as markup
    for change in rep.changes:
        say(escape(change))
    for change in rep.slurm_changes:
        say(f"slurm: {escape(change)}")
    for w in rep.warnings + rep.errors:
        warn(escape(w))
    say(rep.summary() if rep.changed else
        f"{rep.users_seen} LDAP users, {rep.groups_seen} groups: in step, nothing changed")
