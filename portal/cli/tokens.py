"""``slipway token create|list|revoke``: access tokens (the git password and the API's Bearer)."""
from __future__ import annotations

import click
from rich.markup import escape

from ..identity import users as user_svc
from ..teams.access import NotFound, OpError
from .context import Ctx, actor, no_user, pass_ctx
from .local import source
from .output import fail, print_json, print_table, row, table, when


@click.group()
def token():
    """Access tokens (git password)."""


@token.command("create")
@click.argument("username")
@click.option("--name", default="default", show_default=True)
@pass_ctx
def token_create(ctx: Ctx, username, name):
    """Create an access token; it is printed once and never stored in clear."""
    try:
        tok = user_svc.create_token_for(ctx.svc, actor(ctx), username, name)
    except NotFound:
        fail(no_user(username))
    except OpError as exc:
        fail(str(exc))
    click.echo(tok)
    click.echo(f"(token {name!r} for {username}; use it as the git password — it is not shown again)",
               err=True)


@token.command("list")
@click.argument("username", metavar="[USER]", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's token shape)")
@pass_ctx
def token_list(ctx: Ctx, username, as_json):
    """Your access tokens (cluster administrators: USER's): id, name, prefix, created, last used,
    revoked. Never the secret: it is shown once, at creation, and stored only as a hash."""
    tokens = source(ctx).tokens(username)
    if as_json:
        print_json(tokens)
        return
    t = table(f"Tokens of {escape(username)}" if username else "Tokens", "id", "name", "prefix", "created",
              "last used", "revoked")

    def at(v):
        return when(v).strftime("%Y-%m-%d %H:%M") if v else ""

    for k in tokens:
        row(t, str(k["id"]), k["name"], k["prefix"], at(k["created_at"]), at(k["last_used_at"]),
            at(k["revoked_at"]))
    print_table(t)


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@pass_ctx
def token_revoke(ctx: Ctx, token_id):
    """Revoke access token ID (see `slipway token list`): your own; a cluster administrator
    anyone's. Git and the API refuse it from now on."""
    source(ctx).revoke_token(token_id)
    click.echo(f"token {token_id} revoked")
