"""``slipway funds …``: fund requests — team administrators request (``team request-funds``),
cluster administrators approve or decline, the requesting team cancels."""
from __future__ import annotations

import click

from .context import Ctx, pass_ctx
from .local import source
from .output import print_json, print_table, row, table, usd, when


@click.group("funds")
def funds_group():
    """Fund requests: team administrators request, cluster administrators approve or decline."""


@funds_group.command("list")
@click.option("--state", type=click.Choice(["pending", "approved", "declined", "cancelled", "all"]),
              default="pending", show_default=True)
@click.option("--team", "team_name", help="one team's requests (its administrators and owners)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def funds_list(ctx: Ctx, state, team_name, as_json):
    """Fund requests, oldest first: every team's for cluster administrators (and the operator),
    else those of the teams you administer."""
    rows = source(ctx).fund_requests(None if state == "all" else state, team_name)
    if as_json:
        print_json(rows)
        return
    t = table(f"Fund requests ({state})", "id", "team", "amount", "requested", "note", "state", "decided")
    for r in rows:
        decided = (f"{r['decided_by']} {when(r['decided_at']):%Y-%m-%d %H:%M}"
                   + (f": {r['decision_note']}" if r["decision_note"] else "")) if r["decided_by"] else ""
        row(t, r["id"], r["team"], usd(r["amount"]),
            f"{r['requested_by']} {when(r['created_at']):%Y-%m-%d %H:%M}", r["note"], r["state"], decided)
    print_table(t)


def _decided(r: dict) -> None:
    line = f"fund request {r['id']} of team {r['team']} ({usd(r['amount'])}): {r['state']}"
    if r["state"] == "approved":
        line += f"; ledger entry {r['ledger_entry']}"
    click.echo(line)


@funds_group.command("approve")
@click.argument("request_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--note", default="", help="a note kept with the decision")
@pass_ctx
def funds_approve(ctx: Ctx, request_id, note):
    """Approve fund request ID: its amount is deposited in the team's ledger, once (cluster
    administrators and the operator)."""
    _decided(source(ctx).decide_fund_request(request_id, "approve", note))


@funds_group.command("decline")
@click.argument("request_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--note", required=True, help="the reason, shown to the team")
@pass_ctx
def funds_decline(ctx: Ctx, request_id, note):
    """Decline fund request ID, saying why (cluster administrators and the operator)."""
    _decided(source(ctx).decide_fund_request(request_id, "decline", note))


@funds_group.command("cancel")
@click.argument("request_id", metavar="ID", type=click.IntRange(min=1))
@pass_ctx
def funds_cancel(ctx: Ctx, request_id):
    """Withdraw your team's pending fund request ID (its administrators and owners)."""
    _decided(source(ctx).decide_fund_request(request_id, "cancel", ""))
