"""``slipway alarms [--all] [--page N] [--json]`` and ``slipway alarms accept-gpus NODE``
(docs/MONITORING.md): the open alarms (with ``--all`` also the history, newest first, a page at
a time), in local mode (the database; the operator or ``--as USER``) and remote mode (``GET
/api/alarms``) alike. Cluster administrators see every alarm and how the reconciler stands;
everybody else their teams' balance and storage alarms."""
from __future__ import annotations

from datetime import datetime

import click

from ..monitoring import alarms as alarms_svc
from .context import Ctx, actor, call
from .data_common import print_sorted_json
from .output import print_table, row, table


def _seg(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def fetch(ctx: Ctx, history: bool, page: int) -> dict:
    if ctx.remote is not None:
        d = ctx.remote.request("GET", "/api/alarms",
                               params={"all": "1" if history else None, "page": page})
        d.pop("ok", None)
        return d
    return call(alarms_svc.page, ctx.svc, actor(ctx), history=history, page=page)


def _when(text: str | None) -> str:
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S") if text else ""


def _reconciler_line(r: dict | None) -> str | None:
    if not r:
        return None
    if not r.get("last_tick_at"):
        return "reconciler: no tick recorded yet"
    active = r.get("active")
    line = (f"reconciler: active on {active['holder']} since {_when(active['since'])} UTC; "
            if active else "reconciler: ")
    line += (f"last tick ended {_when(r['last_tick_at'])} UTC "
            f"({r['age_s']:.0f} s ago, took {r['last_tick_s'] or 0:.1f} s)")
    if r.get("behind"):
        line += f" — BEHIND: no tick for more than {r['limit_s']:g} s"
    return line


@click.group("alarms", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True,
              help="also the history: resolved alarms, newest first, a page at a time")
@click.option("--page", type=click.IntRange(1, 10**9), default=1, show_default=True,
              help="with --all: which page of the history")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@click.pass_context
def alarms(click_ctx, show_all, page, as_json):
    """Alarms: nodes down, drained or not responding, fewer GPUs, Slurm unreachable, the
    reconciler behind, failed jobs, low balances, storage near quota."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx = click_ctx.find_object(Ctx)
    d = fetch(ctx, show_all, page)
    if as_json:
        print_sorted_json(d)
        return
    line = _reconciler_line(d.get("reconciler"))
    if line:
        click.echo(line)
    if d["open"]:
        t = table(f"Open alarms ({len(d['open'])})", "alarm", "subject", "since (UTC)", "detail")
        for a in d["open"]:
            row(t, a["label"], a["subject"], _when(a["opened_at"]), a["detail"])
        print_table(t)
    else:
        click.echo("no open alarms")
    if show_all:
        if d["history"]:
            t = table(f"History (page {d['page']} of {d['pages']}, {d['history_total']} resolved)",
                      "alarm", "subject", "opened (UTC)", "resolved (UTC)", "detail", "then")
            for a in d["history"]:
                row(t, a["label"], a["subject"], _when(a["opened_at"]), _when(a["resolved_at"]),
                    a["detail"], a["resolution"] or "")
            print_table(t)
        else:
            click.echo("no resolved alarms" + (f" on page {d['page']}" if d["page"] > 1 else ""))


@alarms.command("accept-gpus")
@click.argument("node")
@click.pass_context
def accept_gpus(click_ctx, node):
    """Accept the GPUs NODE has now as its count (its hardware changed for good; cluster
    administrators)."""
    ctx = click_ctx.find_object(Ctx)
    if ctx.remote is not None:
        d = ctx.remote.request("POST", f"/api/alarms/nodes/{_seg(node)}/accept-gpus")
    else:
        d = call(alarms_svc.accept_gpu_count, ctx.svc, actor(ctx), node)
    click.echo(d["message"])
