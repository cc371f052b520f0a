"""``slipway monitoring cluster|usage|compact`` (docs/MONITORING.md): the cluster dashboard's
numbers and the usage statistics, locally (the database) or remotely (``/api/cluster``,
``/api/usage``) with the same output; ``compact`` runs the hourly downsampling and retention
pass now (local mode, cluster administrators). Nothing here asks Slurm."""
from __future__ import annotations

import click

from ..monitoring import sample_retention, sample_views, usage
from .context import Ctx, actor, call, pass_ctx, require_cluster_admin
from .output import print_json, print_table, row, table


@click.group("monitoring")
def monitoring_group():
    """The cluster's state and history, and usage statistics (from Slipway's database)."""


@monitoring_group.command("cluster")
@click.option("--range", "range_name", default="hour", show_default=True,
              type=click.Choice(list(sample_views.RANGES)), help="the series' range (--json)")
@click.option("--json", "as_json", is_flag=True, help="the API's JSON (GET /api/cluster)")
@pass_ctx
def cluster(ctx: Ctx, range_name, as_json):
    """The latest cluster sample and the node table (cluster administrators)."""
    if ctx.remote is not None:
        data = ctx.remote.request("GET", "/cluster", params={"range": range_name})
        data.pop("ok", None)
    else:
        data = call(sample_views.dashboard, ctx.svc, actor(ctx), range_name)
    if as_json:
        print_json(data)
        return
    now = data["now"]
    if now is None:
        click.echo("no sample yet: the reconciler records one a minute")
        return
    click.echo(f"as Slurm said at {now['at']}"
               + (f" ({now['note']})" if now.get("note") else ""))
    click.echo(f"jobs: {_n(now['jobs_running'])} running, {_n(now['jobs_pending'])} pending; "
               f"cores {_n(now['cpus_alloc'])}/{_n(now['cpus_total'])}; memory "
               f"{_n(now['mem_alloc_mb'])}/{_n(now['mem_total_mb'])} MB; storage "
               f"{_n(now['storage_bytes'])} bytes")
    t = table("GPUs", "type", "allocated", "idle", "down", "total")
    for gpu_type, g in (now["gpus"] or {}).items():
        row(t, gpu_type, g["alloc"], g["idle"], g["down"], g["total"])
    print_table(t)
    t = table("Nodes", "node", "state", "reason", "gpus used/total", "cores", "load",
              "memory MB", "last heard from")
    for n in data["nodes"]:
        row(t, n["name"], "+".join([n["state"], *n["flags"]]).lower(), n["reason"],
            f"{n['gpus_used']}/{n['gpus_total']}", f"{n['alloc_cpus']}/{n['cpus']}",
            "not reported" if n["cpu_load"] is None else f"{n['cpu_load']:.2f}",
            f"{n['alloc_memory_mb']}/{n['real_memory_mb']}", n["responding_at"] or "never")
    print_table(t)


@monitoring_group.command("usage")
@click.option("--scope", default=None, help="cluster | team:NAME | user:NAME (default: the "
              "cluster for administrators, else yourself)")
@click.option("--period", default="day", show_default=True,
              type=click.Choice(["day", "week", "month"]))
@click.option("--start", default=None, help="first day, YYYY-MM-DD")
@click.option("--end", default=None, help="last day, YYYY-MM-DD (default: today)")
@click.option("--csv", "as_csv", is_flag=True, help="the CSV the usage page downloads")
@click.option("--json", "as_json", is_flag=True, help="the API's JSON (GET /api/usage)")
@pass_ctx
def usage_command(ctx: Ctx, scope, period, start, end, as_csv, as_json):
    """GPU-hours by type, spend, jobs by final state and queue wait per period."""
    if ctx.remote is not None:
        stats = ctx.remote.request("GET", "/usage", params={
            "scope": scope, "period": period, "start": start, "end": end})["usage"]
    else:
        stats = call(usage.statistics, ctx.svc, actor(ctx), scope, period, start, end)
    if as_json:
        print_json(stats)
        return
    if as_csv:
        click.echo(usage.csv_text(stats), nl=False)
        return
    types = list(stats["gpu_hours"])
    t = table(f"Usage of {stats['label']} per {stats['period']}, {stats['start']} to "
              f"{stats['end']}", "period", *[f"{ty} GPU-h" for ty in types], "spend",
              "succeeded", "failed", "cancelled", "wait median", "wait p95")
    for i, label in enumerate(stats["buckets"]):
        row(t, label, *[f"{stats['gpu_hours'][ty][i]:.2f}" for ty in types],
            f"${stats['spend_usd'][i]}", stats["jobs"]["succeeded"][i],
            stats["jobs"]["failed"][i], stats["jobs"]["cancelled"][i],
            _dur(stats["wait_median_s"][i]), _dur(stats["wait_p95_s"][i]))
    print_table(t)
    tot = stats["totals"]
    click.echo(f"total: spend ${tot['spend_usd']}; " + ", ".join(
        f"{ty} {h:.2f} GPU-h" for ty, h in tot["gpu_hours"].items()) +
        f"; wait median {_dur(tot['wait_median_s'])}, p95 {_dur(tot['wait_p95_s'])}")
    for p in stats["top_projects"]:
        click.echo(f"  {p['team']}/{p['project']}: ${p['spend_usd']}, {p['gpu_hours']:.2f} GPU-h")


@monitoring_group.command("compact")
@pass_ctx
def compact(ctx: Ctx):
    """Fold complete hours into hourly samples and prune old ones now (normally hourly)."""
    require_cluster_admin(ctx, "compact the cluster samples")
    done = sample_retention.maybe_run(ctx.svc, ctx.svc.now(), force=True)
    click.echo(f"hourly rows written: {done['hours']}; minute rows pruned: "
               f"{done['pruned_minutes']}; hourly rows pruned: {done['pruned_hours']}; "
               f"job usage rows refreshed: {done['jobs']}")


def _n(value) -> str:
    return "?" if value is None else str(value)


def _dur(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
