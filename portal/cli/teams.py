"""``slipway team …``: teams, members and money (balance, ledger, add-funds, request-funds)."""
from __future__ import annotations

import csv
import json
import sys
from decimal import Decimal

import click

from .. import integrations as ig
from ..billing.ledger_csv import LEDGER_CSV_HEADER, ledger_csv_row
from ..teams import access, listing
from ..teams import service as teams_svc
from .context import Ctx, actor, call, pass_ctx, require_cluster_admin, sync_slurm
from .local import source
from .output import print_json, print_table, row, say, table, usd, when
from .policy import print_warning
from .policy_source import policy_source


@click.group()
def team():
    """Teams, members and money."""


@team.command("create")
@click.argument("name")
@click.option("--owner", help="user who owns the team")
@pass_ctx
def team_create(ctx: Ctx, name, owner):
    owner = owner or ctx.actor_name
    name = call(teams_svc.create_team, ctx.svc, actor(ctx), name, owner)
    sync_slurm(ctx)
    say(f"team {name} (Slurm account team-{name})" + (f", owner {owner}" if owner else ""))


@team.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (full values)")
@pass_ctx
def team_list(ctx: Ctx, as_json):
    _print_teams(ctx, as_json)


def _team_json(ctx: Ctx, tm, balance) -> dict:
    """The API's team shape (``/api/teams``) plus the member count; no actor's role here."""
    return {"name": tm.name, "personal": tm.personal, "balance": str(balance),
            "slurm_account": ctx.svc.config.slurm_account(tm.name),
            "created_at": tm.created_at.isoformat() if tm.created_at else None,
            "members": len(tm.memberships)}


def _print_teams(ctx: Ctx, as_json: bool = False) -> None:
    with ctx.svc.db.session() as s:
        rows = [_team_json(ctx, tm, b) for tm, b in listing.all_teams(s)]
    if as_json:
        print_json(rows)
        return
    t = table("Teams", "team", "personal", "members", "balance")
    for r in rows:
        row(t, r["name"], "yes" if r["personal"] else "", str(r["members"]), ig.format_usd(Decimal(r["balance"])))
    print_table(t)


@team.command("balance")
@click.argument("team_name", metavar="TEAM", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (full values)")
@pass_ctx
def team_balance(ctx: Ctx, team_name, as_json):
    if not team_name:
        require_cluster_admin(ctx, "see every team's balance")
        _print_teams(ctx, as_json)
        return
    me = actor(ctx)
    with ctx.svc.db.session() as s:
        t, _ = call(access.team_access, s, me, team_name, access.ROLE_ANY, "see the balance")
        b = teams_svc.balances_for(s, [t.id])[t.id]
        shown = _team_json(ctx, t, b)
    if as_json:
        print_json(shown)
    else:
        click.echo(f"{shown['name']}: {ig.format_usd(b)}")


@team.command("add-member")
@click.argument("team_name", metavar="TEAM")
@click.argument("username", metavar="USER")
@click.option("--role", type=click.Choice(["user", "administrator", "owner"]), default="user", show_default=True)
@pass_ctx
def team_add_member(ctx: Ctx, team_name, username, role):
    """Add USER to TEAM or change their role (the web's rules: administrators add and change
    members; granting owner or changing an owner's role needs an owner; the last owner stays)."""
    call(teams_svc.set_member, ctx.svc, actor(ctx), team_name, username, role)
    sync_slurm(ctx)
    say(f"{username} is {role} of team {team_name}")


@team.command("remove-member")
@click.argument("team_name", metavar="TEAM")
@click.argument("username", metavar="USER")
@pass_ctx
def team_remove_member(ctx: Ctx, team_name, username):
    """Remove USER from TEAM (an owner only by an owner; never the last owner)."""
    call(teams_svc.remove_member, ctx.svc, actor(ctx), team_name, username)
    sync_slurm(ctx)
    say(f"{username} removed from team {team_name}")


@team.command("add-funds")
@click.argument("team_name", metavar="TEAM")
@click.argument("amount")
@click.option("--note", default="", help="why (shown in the ledger)")
@pass_ctx
def team_add_funds(ctx: Ctx, team_name, amount, note):
    """Add AMOUNT dollars (e.g. 25.00) to TEAM's balance: cluster administrators (and the
    operator) only; team administrators and owners use `team request-funds`."""
    added, balance = source(ctx).add_funds(team_name, amount, note)
    say(f"added {usd(added)} to team {team_name}; balance {usd(balance)}")


@team.command("request-funds")
@click.argument("team_name", metavar="TEAM")
@click.argument("amount")
@click.option("--note", default="", help="why (the cluster administrators read it; 500 characters at most)")
@click.option("--json", "as_json", is_flag=True, help="the request as JSON (the API's shape)")
@pass_ctx
def team_request_funds(ctx: Ctx, team_name, amount, note, as_json):
    """Ask the cluster administrators for AMOUNT dollars (e.g. 25.00) for TEAM (its
    administrators and owners); see it with `slipway funds list --team TEAM`."""
    r = source(ctx).request_funds(team_name, amount, note)
    if as_json:
        print_json(r)
        return
    click.echo(f"fund request {r['id']}: {usd(r['amount'])} for team {r['team']} ({r['state']}); "
               "the cluster administrators approve or decline it")


@team.command("ledger")
@click.argument("team_name", metavar="TEAM")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout (the API's ledger shape)")
@pass_ctx
def team_ledger(ctx: Ctx, team_name, as_csv, as_json):
    """Every entry of TEAM's ledger: deposits and charges (job, minutes, rate)."""
    balance, entries = source(ctx).ledger(team_name)
    if as_json:
        print_json({"team": team_name, "balance": str(balance), "entries": entries})
        return
    if as_csv:  # the web export's columns and cells (formula-like text neutralised)
        w = csv.writer(sys.stdout)
        w.writerow(LEDGER_CSV_HEADER)
        for e in entries:
            w.writerow(ledger_csv_row(e))
        return
    t = table(f"Ledger of {team_name} — balance {usd(balance)}", "when", "kind", "amount", "what")
    for e in entries:
        if e["kind"] == "gpu":
            rate = usd(e["rate"]) if e["rate"] is not None else "?"
            what = (f"job {e['job']} attempt {e['attempt']}: min {e['from_minute']}-{e['to_minute']}, "
                    f"{e['gpu_count']}x {e['gpu_type']} @ {rate}/h")
        elif e["kind"] == "storage":
            what = e["note"] or e["resource"] or ""
        else:
            what = f"{e['created_by']}: {e['note']}" if e["note"] else (e["created_by"] or "")
        row(t, when(e["created_at"]).strftime("%Y-%m-%d %H:%M"), e["kind"],
            str(Decimal(e["amount"]).quantize(Decimal("0.000001"))), what)
    print_table(t)


@team.command("storage")
@click.argument("team_name", metavar="TEAM")
@click.option("--quota", default=None, metavar="SIZE|none",
              help="set the team's storage quota, e.g. 100GB or 2TiB; 'none' removes it "
                   "(cluster administrators)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def team_storage(ctx: Ctx, team_name, quota, as_json):
    """What TEAM stores (data versions and kept job outputs), against its quota."""
    src = source(ctx)
    if quota is not None:
        text = quota.strip()
        src.set_quota(team_name, None if text.lower() in ("none", "unlimited") else text)
    d = src.storage(team_name)
    d = {k: v for k, v in d.items() if k != "ok"}
    if as_json:
        print_json(json.loads(json.dumps(d, sort_keys=True)))  # the API's order, in both modes
        return
    quota_text = "no quota" if d["quota_bytes"] is None else _size(d["quota_bytes"])
    click.echo(f"team {d['team']}: {_size(d['used_bytes'])} stored; quota: {quota_text}")
    t = table("Largest", "what", "size")
    for item in d["items"][:20]:
        row(t, item["what"], _size(item["size_bytes"]))
    print_table(t)


def _size(n: int) -> str:
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


@team.command("shares")
@click.argument("team_name", metavar="TEAM")
@click.argument("shares", metavar="N", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def team_shares(ctx: Ctx, team_name, shares, as_json):
    """TEAM's fair-share: its shares, its part of the cluster, Slurm's fair-share factor and its
    share of recent usage; with N, set its shares (cluster administrators)."""
    src = policy_source(ctx)
    warning = None
    if shares is not None:
        d, warning = src.set_shares(team_name, shares)
    else:
        d = src.shares(team_name)
    if as_json:
        print_json(json.loads(json.dumps(d, sort_keys=True)))
    else:
        factor = "not sampled yet" if d["fairshare_factor"] is None else f"{d['fairshare_factor']:.3f}"
        usage = "not sampled yet" if d["usage_share"] is None else f"{d['usage_share']:.1%}"
        click.echo(f"team {d['team']}: {d['shares']} shares ({d['share_of_cluster']:.1%} of the "
                   f"cluster); fair-share factor {factor}; share of recent usage {usage}")
    print_warning(warning)
