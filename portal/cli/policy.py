"""``slipway compute|quota|emergency|policy log|completion`` (docs/POLICY.md): compute types,
quotas, emergency grants and the record of policy changes, in local and remote mode alike
(``policy_source``). The service layer decides and checks who may; this module parses and
prints. The queue, node and resource commands are in ``policy_queue``."""
from __future__ import annotations

import click
from click.shell_completion import BashComplete

from .context import Ctx, pass_ctx
from .data_common import print_sorted_json
from .output import fail, print_table, row, table
from .policy_source import policy_source


def print_warning(warning: str | None) -> None:
    """The change is saved; Slurm did not take it yet (``apply.converge_now``'s line)."""
    if warning:
        click.echo(f"warning: {warning}")


def _mem(mb) -> str:
    if mb is None:
        return "default"
    return f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"


# ---------------------------------------------------------------------------- compute

@click.group("compute")
def compute_group():
    """Compute types: named job shapes (GPUs, cores, memory, partition) projects and pushes pick."""


@compute_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def compute_list(ctx: Ctx, as_json):
    rows = policy_source(ctx).compute_types()
    if as_json:
        print_sorted_json(rows)
        return
    t = table("Compute types", "name", "gpus", "cpus", "mem", "partition", "rate", "description")
    for d in rows:
        row(t, d["name"], d["gpus"], str(d["cpus"]), _mem(d["mem_mb"]), d["partition"] or "",
            f"${d['hourly_rate']}/h", d["description"] or "")
    print_table(t)


@compute_group.command("define")
@click.argument("name")
@click.option("--gpus", required=True, help="TYPE:COUNT, e.g. a4000:2; none for CPU only")
@click.option("--cpus", help="cores (CPU only: the cores billed)")
@click.option("--mem", help="memory, e.g. 32G (default: Slurm's)")
@click.option("--partition", help="the resource group (Slurm partition; default: the config's)")
@click.option("--description", default="", help="what it is for (shown to users)")
@pass_ctx
def compute_define(ctx: Ctx, name, gpus, cpus, mem, partition, description):
    """Create or change the compute type NAME (cluster administrators)."""
    d = policy_source(ctx).define_compute(name, {
        "gpus": gpus, "cpus": cpus, "mem": mem, "partition": partition,
        "description": description})
    click.echo(f"compute type {d['name']}: {d['gpus']}, {d['cpus']} cores, mem {_mem(d['mem_mb'])}, "
        f"partition {d['partition'] or 'default'}, ${d['hourly_rate']}/h")


@compute_group.command("remove")
@click.argument("name")
@pass_ctx
def compute_remove(ctx: Ctx, name):
    """Remove the compute type NAME; projects that defaulted to it use their own settings."""
    projects = policy_source(ctx).remove_compute(name)
    click.echo(f"compute type {name} removed"
               + (f"; projects no longer defaulting to it: {', '.join(projects)}" if projects else ""))


# ------------------------------------------------------------------------------ quota

@click.group("quota")
def quota_group():
    """Quotas: at most so many GPUs of a type, cores, running jobs or open workspaces at once,
    per team or per member (Slurm enforces all but workspaces)."""


@quota_group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("team_name", metavar="TEAM")
@click.argument("resource", metavar="RESOURCE")
@click.argument("value", metavar="VALUE")
@click.option("--user", help="the quota of this member inside TEAM (default: the team's)")
@pass_ctx
def quota_set(ctx: Ctx, team_name, resource, value, user):
    """Set TEAM's (or --user's) RESOURCE quota: gpu:TYPE (e.g. gpu:a4000), cpu, jobs or
    workspaces, to VALUE (a whole number)."""
    d, warning = policy_source(ctx).set_quota(team_name, resource, value, user)
    who = f"{user} in team {team_name}" if user else f"team {team_name}"
    click.echo(f"quota of {who}: {d['resource']} = {d['value']}")
    print_warning(warning)


@quota_group.command("remove")
@click.argument("team_name", metavar="TEAM")
@click.argument("resource", metavar="RESOURCE")
@click.option("--user", help="the quota of this member inside TEAM (default: the team's)")
@pass_ctx
def quota_remove(ctx: Ctx, team_name, resource, user):
    """Remove TEAM's (or --user's) RESOURCE quota."""
    d, warning = policy_source(ctx).set_quota(team_name, resource, None, user)
    who = f"{user} in team {team_name}" if user else f"team {team_name}"
    click.echo(f"quota of {who}: {d['resource']} removed")
    print_warning(warning)


@quota_group.command("list")
@click.argument("team_name", metavar="TEAM")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def quota_list(ctx: Ctx, team_name, as_json):
    """TEAM's quotas and its members'."""
    rows = policy_source(ctx).quotas(team_name)
    if as_json:
        print_sorted_json(rows)
        return
    t = table(f"Quotas of {team_name}", "who", "resource", "value", "at once")
    for d in rows:
        row(t, d["user"] or f"team {d['team']}", d["resource"], str(d["value"]), d["text"])
    print_table(t)


# -------------------------------------------------------------------------- emergency

@click.group("emergency")
def emergency_group():
    """The emergency right: run jobs at the highest priority, preempting normal jobs."""


@emergency_group.command("grant")
@click.argument("who", metavar="USER")
@click.option("--team", "is_team", is_flag=True, help="USER names a team: all its members, in it")
@click.option("--until", metavar="YYYY-MM-DD", help="the right holds through this day (UTC)")
@click.option("--note", default="", help="why (recorded)")
@pass_ctx
def emergency_grant(ctx: Ctx, who, is_team, until, note):
    """Grant USER (or --team TEAM) the emergency right (cluster administrators)."""
    d, warning = policy_source(ctx).grant(who, is_team, until, note)
    click.echo(f"{d['who']} holds the emergency right "
        + (f"until {d['until']}" if d["until"] else "until revoked"))
    print_warning(warning)


@emergency_group.command("revoke")
@click.argument("who", metavar="USER")
@click.option("--team", "is_team", is_flag=True, help="USER names a team")
@pass_ctx
def emergency_revoke(ctx: Ctx, who, is_team):
    n, warning = policy_source(ctx).revoke(who, is_team)
    click.echo(f"emergency right of {'team ' if is_team else ''}{who} revoked"
        + (f" ({n} grants)" if n > 1 else ""))
    print_warning(warning)


@emergency_group.command("list")
@click.option("--all", "everything", is_flag=True, help="ended and revoked grants too")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def emergency_list(ctx: Ctx, everything, as_json):
    rows = policy_source(ctx).grants(everything)
    if as_json:
        print_sorted_json(rows)
        return
    t = table("Emergency grants", "id", "who", "until", "granted by", "granted", "state", "note")
    for d in rows:
        state = "active" if d["active"] else (f"revoked by {d['revoked_by']}" if d["revoked_at"]
                                              else "ended")
        row(t, str(d["id"]), d["who"], d["until"] or "revoked", d["granted_by"],
            (d["granted_at"] or "")[:16], state, d["note"] or "")
    print_table(t)


# --------------------------------------------------------------------------- policy log

@click.group("policy")
def policy_group():
    """The record of policy changes and administrators' actions."""


@policy_group.command("log")
@click.option("--action", help="one kind: grant, revoke, quota, shares, compute-type, top, hold, "
                               "release, requeue, drain, resume, emergency-job")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 5000))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def policy_log(ctx: Ctx, action, limit, as_json):
    rows = policy_source(ctx).events(action, limit)
    if as_json:
        print_sorted_json(rows)
        return
    t = table("Policy log", "when", "who", "action", "subject", "detail")
    for d in rows:
        row(t, (d["at"] or "")[:19].replace("T", " "), d["actor"], d["action"], d["subject"],
            d["detail"] or "")
    print_table(t)


# --------------------------------------------------------------------------- completion

@click.command("completion")
@click.argument("shell", type=click.Choice(["bash"]))
@click.pass_context
def completion(click_ctx, shell):
    """Print the shell's tab-completion script: eval "$(slipway completion bash)"."""
    if shell != "bash":  # pragma: no cover — click.Choice refuses it first
        fail(f"no completion for {shell}")
    root = click_ctx.find_root().command
    click.echo(BashComplete(root, {}, "slipway", "_SLIPWAY_COMPLETE").source(), nl=False)
