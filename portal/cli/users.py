"""``slipway user add|passwd|list``: local accounts (cluster administrators and the operator)."""
from __future__ import annotations

import sys

import click

from ..identity import users as user_svc
from ..identity.passwords import PasswordRejected, hash_password
from .context import Ctx, call, pass_ctx, require_cluster_admin, sync_slurm
from .output import fail, print_json, print_table, row, say, table


@click.group()
def user():
    """Users."""


@user.command("add")
@click.argument("name")
@click.option("--unix-user", help="Unix account jobs run as (default: NAME)")
@click.option("--admin", is_flag=True, help="cluster administrator")
@click.option("--password", "password", default=None,
              help="local login password (visible to other local users: prefer --password-stdin)")
@click.option("--password-stdin", is_flag=True, help="read the local login password from stdin")
@pass_ctx
def user_add(ctx: Ctx, name, unix_user, admin, password, password_stdin):
    """Add a user and their personal team (NAME with '@' and '.' replaced by '-')."""
    require_cluster_admin(ctx, "add users")
    password_hash = _new_password_hash(password, password_stdin, prompt=False)
    team_name = call(user_svc.add_user, ctx.svc, name, unix_user=unix_user, admin=admin,
                     password_hash=password_hash)
    sync_slurm(ctx)
    say(f"user {name} (unix {unix_user or name}{', cluster admin' if admin else ''}), "
        f"personal team {team_name}")


def _new_password_hash(password, from_stdin: bool, *, prompt: bool) -> str | None:
    """Hash of the password given by --password / --password-stdin (or a prompt); None if none."""
    if password is not None and from_stdin:
        fail("give either --password or --password-stdin, not both")
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is None and prompt:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    if password is None:
        return None
    try:
        return hash_password(password)
    except PasswordRejected as exc:
        fail(str(exc))


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="read the new password from stdin (else prompt)")
@pass_ctx
def user_passwd(ctx: Ctx, name, password_stdin):
    """Set NAME's local login password (accounts without LDAP)."""
    if ctx.actor_name != name:
        require_cluster_admin(ctx, "set other users' passwords")
    with ctx.svc.db.session() as s:
        call(user_svc.local_account, s, name)
    password_hash = _new_password_hash(None, password_stdin, prompt=True)
    ended = call(user_svc.set_password, ctx.svc, name, password_hash)
    say(f"password of {name} set" + (f"; {ended} portal login(s) ended" if ended else ""))


@user.command("logout")
@click.argument("name")
@pass_ctx
def user_logout(ctx: Ctx, name):
    """End every portal login of NAME (a lost laptop, a shared browser): their browsers must log
    in again. Access tokens stay (revoke those with `slipway token revoke`)."""
    if ctx.actor_name != name:
        require_cluster_admin(ctx, "log other users out")
    ended = call(user_svc.end_sessions, ctx.svc, name)
    say(f"{ended} portal login(s) of {name} ended")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (full values)")
@pass_ctx
def user_list(ctx: Ctx, as_json):
    with ctx.svc.db.session() as s:
        users = user_svc.list_users(s)
    if as_json:
        print_json(users)
        return
    t = table("Users", "name", "unix user", "admin", "teams")
    for u in users:
        row(t, u["name"], u["unix_user"], "yes" if u["is_cluster_admin"] else "",
            ", ".join(f"{m['team']} ({m['role']})" for m in u["teams"]))
    print_table(t)
