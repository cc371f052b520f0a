"""``slipway workspace start|list|show|stop|restart|open|policy`` (docs/WORKSPACES.md): JupyterLab
and a terminal on the cluster on a project's branch. Local and remote mode alike (``source``):
the service layer decides, this module parses options and prints."""
from __future__ import annotations

import time as time_mod

import click

from ..jobs import states
from .context import Ctx, pass_ctx, split_ref
from .local import source
from .data_common import print_sorted_json as print_json
from .output import fail, print_fields, print_table, row, table, usd


@click.group()
def workspace():
    """Workspaces: JupyterLab and a terminal on the cluster (they bill while open)."""


def _compute(d: dict) -> str:
    if d.get("gpu_type") in ("cpu", "none"):  # CPU only: gpu_count is the cores
        return f"cpu x{d.get('gpu_count') or 1} (no GPU)"
    return f"{d['gpu_type']} x{d['gpu_count']}"


def _duration(seconds) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 60}m" if seconds and seconds % 60 == 0 else f"{seconds}s"


def _policy_text(p: dict) -> str:
    return (f"idle after {_duration(p['idle_seconds'])}, reminded {_duration(p['remind_seconds'])} "
            f"before, {'auto-stop' if p['auto_stop'] else 'remind only'}; at most "
            f"{p['max_per_user']} open per user, {p['max_gpus']} GPU(s) each")


def _inputs(pairs: tuple[str, ...]) -> dict[str, str] | None:
    """``input0=vision/cifar:2`` pairs (``input0=``: none in that slot)."""
    out: dict[str, str] = {}
    for pair in pairs:
        slot, sep, ref = pair.partition("=")
        if not sep or not slot.strip():
            fail(f"--input {pair!r}: write SLOT=REF, e.g. input0=vision/cifar-100:latest "
                 "(input0= binds nothing there)")
        out[slot.strip()] = ref.strip()
    return out or None


def _where(src, d: dict) -> list[str]:
    lines = [f"page: {src.workspace_page(d['page'])}"]
    if d.get("url"):
        lines.append(f"JupyterLab: {d['url']}")
    return lines


@workspace.command("start")
@click.argument("ref", metavar="TEAM/PROJECT")
@click.option("--branch", required=True, help="the branch to open (checked out at /work)")
@click.option("--gpus", help="GPU type and count, e.g. a4000:1 (default: the project's)")
@click.option("--cpus", help="CPU only: this many cores, no GPU")
@click.option("--mem", help="CPU only: memory, e.g. 16G")
@click.option("--image", help="container image (default: the project's; it must have JupyterLab)")
@click.option("--time", "time_", help="time limit, e.g. 8h (default 8h)")
@click.option("--input", "inputs", multiple=True, metavar="SLOT=REF",
              help="an input binding, e.g. input0=vision/cifar-100:latest (repeatable; "
                   "default: the project's)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def ws_start(ctx: Ctx, ref, branch, gpus, cpus, mem, image, time_, inputs, as_json):
    """Open a workspace on TEAM/PROJECT's BRANCH; prints its id, its page and, once it runs,
    its JupyterLab URL."""
    team_name, name = split_ref(ref)
    if mem and not cpus:
        fail("--mem goes with --cpus (a CPU-only workspace); a GPU workspace gets the node's share")
    if cpus and not gpus:
        gpus = "none"  # cores and memory, no GPU
    src = source(ctx)
    d, message = src.workspace_start(team_name, name, branch=branch, gpus=gpus, cpus=cpus, mem=mem,
                                     image=image, time=time_, inputs=_inputs(inputs))
    if as_json:
        print_json(d)
        return
    click.echo(message)
    click.echo(f"workspace: {d['id']}")
    for line in _where(src, d):
        click.echo(line)
    click.echo(f"it bills while it is open; stop it with: slipway workspace stop {d['id']}")


@workspace.command("list")
@click.option("--team", "team_name", help="one team (default: your teams)")
@click.option("--all", "show_all", is_flag=True, help="ended workspaces too (default: open ones)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def ws_list(ctx: Ctx, team_name, show_all, as_json):
    rows = source(ctx).workspaces(team_name, not show_all)
    rows.sort(key=lambda d: (not d["bills_while_open"], -d["id"]))
    if as_json:
        print_json(rows)
        return
    t = table("Workspaces", "workspace", "project", "branch", "user", "state", "compute", "node",
              "cost", "url")
    for d in rows:
        row(t, str(d["id"]), f"{d['team']}/{d['project']}", d["branch"], d["user"] or "",
            d["state"] + (" (idle)" if d.get("reminded_at") and d["state"] == states.RUNNING else ""),
            _compute(d), d["node"] or "", usd(d["cost"]), d["url"] or "")
    print_table(t)


@workspace.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def ws_show(ctx: Ctx, job_id, as_json):
    src = source(ctx)
    d = src.workspace(job_id)
    if as_json:
        print_json(d)
        return
    fields = [
        ("project", f"{d['team']}/{d['project']}"), ("branch", d["branch"]), ("user", d["user"] or ""),
        ("state", d["state"]), ("reason", d["reason"] or ""), ("compute", _compute(d)),
        ("image", d["image"]), ("node", d["node"] or ""),
        ("cost", usd(d["cost"]) + (" so far (it bills while it is open)" if d["bills_while_open"] else "")),
        ("started", d["started_at"] or ""), ("ended", d["ended_at"] or ""),
        ("idle policy", _policy_text(d["policy"]) if d.get("policy") else ""),
        ("reminded", d["reminded_at"] or ""), ("stopped", d["stop_reason"] or ""),
        ("/output", (d.get("output_state") or "") + (f" (continues workspace {d['continue_from']})"
                                                     if d.get("continue_from") else "")),
        ("JupyterLab", d["url"] or ""), ("page", src.workspace_page(d["page"])),
    ]
    print_fields(f"Workspace {job_id}", fields)


@workspace.command("stop")
@click.argument("job_id", type=int)
@pass_ctx
def ws_stop(ctx: Ctx, job_id):
    """Stop a workspace: its /work is committed back to the branch, its /output kept."""
    click.echo(source(ctx).workspace_stop(job_id))


@workspace.command("restart")
@click.argument("job_id", type=int)
@pass_ctx
def ws_restart(ctx: Ctx, job_id):
    """A new workspace from an ended one: same branch (its tip), compute and inputs; its
    /output continues the old one's."""
    src = source(ctx)
    d, message = src.workspace_restart(job_id)
    click.echo(message)
    click.echo(f"workspace: {d['id']}")
    for line in _where(src, d):
        click.echo(line)


@workspace.command("open")
@click.argument("job_id", type=int)
@click.option("--wait", is_flag=True, help="wait until it runs (Slurm may take a while to place it)")
@click.option("--timeout", default=600, show_default=True, type=click.IntRange(1, 86400),
              help="with --wait: give up after this many seconds")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.05, 60),
              help="with --wait: seconds between looks")
@pass_ctx
def ws_open(ctx: Ctx, job_id, wait, timeout, interval):
    """Print the JupyterLab URL of a running workspace (open it in a browser logged in to the
    portal)."""
    src = source(ctx)
    deadline = time_mod.monotonic() + timeout
    while True:
        d = src.workspace(job_id)
        if d["state"] == states.RUNNING and d.get("url"):
            click.echo(d["url"])
            return
        if d["state"] in states.TERMINAL:
            fail(f"workspace {job_id} is {d['state']}" + (f" ({d['stop_reason']})" if d.get("stop_reason")
                                                          else "") +
                 f"; start it again with: slipway workspace restart {job_id}")
        if not wait:
            fail(f"workspace {job_id} is not running yet ({d['state']}"
                 + (f": {d['reason']}" if d.get("reason") else "") + "); add --wait to wait for it")
        if time_mod.monotonic() >= deadline:
            fail(f"workspace {job_id} is still {d['state']} after {timeout} s"
                 + (f" ({d['reason']})" if d.get("reason") else ""))
        time_mod.sleep(min(interval, max(0.0, deadline - time_mod.monotonic())))


@workspace.command("policy")
@click.option("--team", "team_name", help="a team's override (default: the cluster's policy)")
@click.option("--idle", help="idle after this long, e.g. 60m, 1h30m, 90s")
@click.option("--remind", help="remind this long before, e.g. 10m")
@click.option("--auto-stop/--remind-only", "auto_stop", default=None,
              help="stop idle workspaces, or only remind their users")
@click.option("--max-per-user", type=int, help="open workspaces a user may have")
@click.option("--max-gpus", type=int, help="GPUs a workspace may use")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def ws_policy(ctx: Ctx, team_name, idle, remind, auto_stop, max_per_user, max_gpus, as_json):
    """Show the workspace policy (the cluster's, or a team's); with options, set it (cluster
    administrators)."""
    values = {k: v for k, v in (("idle_seconds", idle), ("remind_seconds", remind),
                                ("auto_stop", auto_stop), ("max_per_user", max_per_user),
                                ("max_gpus", max_gpus)) if v is not None}
    src = source(ctx)
    p = src.set_workspace_policy(team_name, values) if values else src.workspace_policy(team_name)
    if as_json:
        print_json(p)
        return
    where = f"team {team_name}" if team_name else "the cluster"
    click.echo(f"workspace policy of {where}: {_policy_text(p['effective'])}")
    if p.get("set"):
        own = ", ".join(f"{k}={v}" for k, v in p["set"].items() if v is not None) or "nothing"
        click.echo(f"set here: {own} (the rest inherited)")
