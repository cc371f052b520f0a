"""``slipway queue [top JOB]``, ``hold|release|requeue JOB``, ``node list|drain|resume`` and
``resources`` (docs/POLICY.md): the cluster administrators' queue, node and resource-plan
commands, in local and remote mode alike. The queue and the plan are read from Slipway's
database (the reconciler's last poll); the actions go to Slurm once and are recorded."""
from __future__ import annotations

import click

from .context import Ctx, pass_ctx
from .data_common import print_sorted_json
from .output import print_table, row, table
from .policy_source import policy_source

QUEUE_COLUMNS = ("JOB", "SLURM", "TEAM", "PROJECT", "BRANCH", "USER", "STATE", "COMPUTE", "QOS",
                 "PARTITION", "POS", "START", "COST", "REASON")


def _start(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else ""


@click.group("queue", invoke_without_command=True)
@click.option("--team", "team_name", help="one team's jobs")
@click.option("--user", "user_name", help="one user's jobs")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@click.pass_context
def queue_group(click_ctx, team_name, user_name, as_json):
    """The queue, like squeue: running jobs, then pending ones in Slurm's priority order
    (cluster administrators). `slipway queue top JOB` moves a pending job to the front."""
    if click_ctx.invoked_subcommand is not None:
        return
    rows = policy_source(click_ctx.find_object(Ctx)).queue(team_name, user_name)
    if as_json:
        print_sorted_json(rows)
        return
    t = table("Queue", *QUEUE_COLUMNS)
    for d in rows:
        row(t, str(d["job"]), "" if d["slurm"] is None else str(d["slurm"]), d["team"], d["project"],
            d["branch"], d["user"], d["state"], d["compute"], d["qos"], d["partition"],
            "" if d["position"] is None else str(d["position"]), _start(d["expected_start"]),
            d["cost"], d["reason"])
    print_table(t)


def _act(ctx: Ctx, action: str, job_id: int) -> None:
    click.echo(policy_source(ctx).job_action(action, job_id))


_JOB = click.argument("job_id", metavar="JOB", type=click.IntRange(1))


@queue_group.command("top")
@_JOB
@pass_ctx
def queue_top(ctx: Ctx, job_id):
    """Move pending JOB to the front of the queue (above every other pending job)."""
    _act(ctx, "top", job_id)


@click.command("hold")
@_JOB
@pass_ctx
def hold(ctx: Ctx, job_id):
    """Hold pending JOB: Slurm does not start it until it is released."""
    _act(ctx, "hold", job_id)


@click.command("release")
@_JOB
@pass_ctx
def release(ctx: Ctx, job_id):
    """Release held JOB back into the queue."""
    _act(ctx, "release", job_id)


@click.command("requeue")
@_JOB
@pass_ctx
def requeue(ctx: Ctx, job_id):
    """Requeue running JOB: it stops and waits in the queue again."""
    _act(ctx, "requeue", job_id)


# ------------------------------------------------------------------------------- nodes

@click.group("node")
def node_group():
    """The cluster's nodes (cluster administrators): list, drain with a reason, resume."""


@node_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def node_list(ctx: Ctx, as_json):
    rows = policy_source(ctx).nodes()
    if as_json:
        print_sorted_json(rows)
        return
    t = table("Nodes", "node", "state", "flags", "partitions", "cpus", "gpus", "reason")
    for d in rows:
        row(t, d["name"], d["state"], d["flags"], d["partitions"], d["cpus"], d["gpus"],
            d["reason"] or "")
    print_table(t)


@node_group.command("drain")
@click.argument("node")
@click.option("--reason", required=True, help="why (shown to users and other administrators)")
@pass_ctx
def node_drain(ctx: Ctx, node, reason):
    """Drain NODE: its running jobs finish, no new ones start there."""
    click.echo(policy_source(ctx).node_update(node, "drain", reason))


@node_group.command("resume")
@click.argument("node")
@pass_ctx
def node_resume(ctx: Ctx, node):
    """Resume NODE: it takes jobs again."""
    click.echo(policy_source(ctx).node_update(node, "resume", None))


# --------------------------------------------------------------------------- resources

@click.command("resources")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def resources(ctx: Ctx, as_json):
    """The resource plan: each resource group (partition) and GPU type, its sharing, what uses
    it now, who may use it and the quotas on it (as Slurm had it at the last account sync)."""
    plan = policy_source(ctx).plan()
    if as_json:
        print_sorted_json(plan)
        return
    at = plan["sampled_at"]
    t = table("Resource plan" + (f" (Slurm's partitions as of {_start(at)})" if at else
                                 " (not sampled from Slurm yet: the reconciler's account sync does)"),
              "group", "GPU type", "count", "sharing", "in use", "who", "time limit", "state", "quota")
    for d in plan["rows"]:
        row(t, d["group"] + (" (default)" if d["default"] else ""), d["gpu_type"], str(d["count"]),
            d["sharing"], str(d["uses"]), d["who"], d["time_limit"], d["state"], d["quota"])
    print_table(t)
