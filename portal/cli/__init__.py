"""``slipway`` — the command line (click). Shaped after sbatch/squeue/scancel/sacctmgr.

Two modes:

* **remote** — ``--url URL`` (or ``$SLIPWAY_URL``) and an access token (``$SLIPWAY_TOKEN`` or
  ``--token-file FILE``): the user-facing commands (``job list/show/log/cancel/rerun``, ``project
  list/create/show``, ``team ledger``, ``team add-funds``, ``team request-funds``, ``funds
  list/approve/decline/cancel``, ``job delete``, ``token list/revoke``) go through the JSON API under
  ``/api/`` with ``Authorization: Bearer <token>``; the token says who is acting. The API's
  refusals (403, 404, 400, 409) are printed with its message and the command exits non-zero.
* **local** (no URL) — on the server, reading Slipway's database directly: for cluster
  administrators. ``--as USER`` (or ``$SLIPWAY_USER``) names the Slipway user the command acts as
  and permissions are checked for that user; without it the caller is the operator running the
  command on the server, treated as a cluster administrator.

Both modes build the same dictionaries (``portal.presenters``) and print them with the same
code, so their output is identical; permission rules are the web's (the service layer, ``portal.teams.access``).

This package only parses, calls the service layer and prints: ``context`` (``Ctx``, the Actor, the
one cluster-administrator check), ``local`` / ``remote`` (where the data comes from), ``output``
(tables, ``--json``, money), and one module per command group (``serve``: serve and reconcile,
``users``, ``tokens``, ``teams``, ``funds``, ``projects``, ``jobs``, ``ldap``, ``data`` with
``data_push``), registered below.
Nothing in ``portal`` imports this package.
"""
from __future__ import annotations

import click
from click.core import ParameterSource

from ..private_files import set_process_umask
from . import data, funds, jobs, ldap, policy, policy_queue, projects, serve, teams, tokens, users, workspaces
from . import alarms, monitoring, notifications
from . import backup as backup_commands
from .submit import submit as submit_command
from .context import OPERATOR, Ctx
from .local import LocalSource
from .output import fail
from .remote import RemoteSource, read_token

__all__ = ["OPERATOR", "Ctx", "LocalSource", "RemoteSource", "main"]


@click.group()
@click.option("--as", "actor", envvar="SLIPWAY_USER", default=None,
              help="local mode: act as this Slipway user (default: the operator, a cluster administrator)")
@click.option("--url", envvar="SLIPWAY_URL", default=None,
              help="remote mode: the Slipway portal's URL (e.g. http://slipway.example:8000); "
                   "needs an access token in SLIPWAY_TOKEN or --token-file")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="remote mode: file holding the access token (else $SLIPWAY_TOKEN)")
@click.option("--allow-http", is_flag=True, envvar="SLIPWAY_ALLOW_HTTP",
              help="remote mode: send the token over plain http:// to a host other than this one")
@click.pass_context
def main(click_ctx, actor, url, token_file, allow_http):
    """Slipway: push a branch, get a GPU job, get the results back on the branch."""
    # The CLI, `serve` and `reconcile` create Slipway's private files (database, secrets,
    # repositories): private by default (portal/private_files.py).
    set_process_umask()
    if isinstance(click_ctx.obj, Ctx):
        click_ctx.obj.actor_name = actor
    else:
        click_ctx.obj = Ctx(actor)
    ctx = click_ctx.obj
    ctx.command = f"{click_ctx.invoked_subcommand} …" if click_ctx.invoked_subcommand else ""
    if url:
        if actor and click_ctx.get_parameter_source("actor") == ParameterSource.COMMANDLINE:
            fail("--as works only on the server (local mode); with --url the access token says "
                 "who you are")
        ctx.actor_name = None
        ctx.remote = RemoteSource(url, read_token(token_file), allow_http=allow_http)


main.add_command(serve.serve)
main.add_command(serve.reconcile)
for _group in (users.user, tokens.token, teams.team, funds.funds_group, projects.project, jobs.job,
               ldap.ldap, data.data, workspaces.workspace):
    main.add_command(_group)
for _command in (policy.compute_group, policy.quota_group, policy.emergency_group,
                 policy.policy_group, policy.completion, policy_queue.queue_group, policy_queue.hold,
                 policy_queue.release, policy_queue.requeue, policy_queue.node_group,
                 policy_queue.resources):
    main.add_command(_command)
main.add_command(submit_command)
main.add_command(notifications.notifications)
main.add_command(alarms.alarms)
main.add_command(monitoring.monitoring_group)
main.add_command(backup_commands.backup)
main.add_command(backup_commands.restore)
