"""``slipway notifications show|set|email``: a user's notification mail (docs/MONITORING.md).

Local mode acts for ``--as USER`` (the operator is no user and gets none); remote mode
(``--url``) for the access token's user, through ``/api/notifications``."""
from __future__ import annotations

import click

from ..monitoring import notify_settings as settings
from .context import Ctx, actor, call, pass_ctx
from .output import print_json, print_table, row, table


def _show(ctx: Ctx, recent: int) -> dict:
    if ctx.remote is not None:
        return ctx.remote.request("GET", "/api/notifications", params={"recent": recent})
    me = actor(ctx)
    shown = call(settings.show, ctx.svc, me)
    return {**shown, "recent": call(settings.recent, ctx.svc, me, recent) if recent else []}


def _put(ctx: Ctx, body: dict) -> dict:
    if ctx.remote is not None:
        return ctx.remote.request("PUT", "/api/notifications", body=body)
    me = actor(ctx)
    if "email" in body:
        return call(settings.set_email, ctx.svc, me, body["email"])
    return call(settings.update, ctx.svc, me, body)


def _print(shown: dict) -> None:
    click.echo(f"{shown['user']}: {shown['note']}")
    t = table("Notifications", "kind", "on", "when")
    for k in shown["kinds"]:
        label = k["label"] + (f" ({shown['low_balance_threshold_text']})"
                              if k["kind"] == "low_balance" else "")
        row(t, k["kind"], "on" if k["enabled"] else "off", label)
    print_table(t)


@click.group("notifications")
def notifications():
    """Which notification mails you get (job ended/failed/cancelled, workspace idle, low
    balance), and where they go."""


@notifications.command("show")
@click.option("--recent", default=0, type=click.IntRange(0, 200),
              help="also list the latest N notifications (sent, waiting, or why not)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def show(ctx: Ctx, recent, as_json):
    """Each kind on or off, the address, whether mail is on at all."""
    shown = _show(ctx, recent)
    shown.pop("ok", None)
    if as_json:
        print_json(shown)
        return
    _print(shown)
    if shown.get("recent"):
        t = table("Recent", "when", "kind", "status", "subject", "detail")
        for n in shown["recent"]:
            row(t, (n["sent_at"] or n["created_at"] or "")[:16].replace("T", " "), n["kind"],
                n["status"], n["title"], n["detail"] or "")
        print_table(t)


@notifications.command("set")
@click.argument("kind", type=click.Choice(settings.KINDS))
@click.argument("switch", metavar="on|off", type=click.Choice(["on", "off"],
                                                                 case_sensitive=False))
@pass_ctx
def set_kind(ctx: Ctx, kind, switch):
    """Turn KIND on or off, e.g. `slipway notifications set job_ended off`."""
    shown = _put(ctx, {kind: switch.lower() == "on"})
    click.echo(f"{kind}: {'on' if shown['settings'][kind] else 'off'} for {shown['user']}")


@notifications.command("email")
@click.argument("address", required=False)
@click.option("--clear", is_flag=True, help="remove the address (no mail at all)")
@pass_ctx
def email(ctx: Ctx, address, clear):
    """Set the address your notifications go to (local accounts; a directory user's address
    comes from LDAP)."""
    if clear == bool(address):
        raise click.UsageError("give an ADDRESS, or --clear to remove it")
    shown = _put(ctx, {"email": None if clear else address})
    click.echo(f"{shown['user']}: {shown['note']}")
