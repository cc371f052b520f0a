"""``slipway project create|list|show|set|delete``: projects, one git repository each."""
from __future__ import annotations

import click

from .. import shellquote
from ..projects import service as projects_svc
from .context import Ctx, actor, call, pass_ctx, split_ref
from .local import source
from .output import fail, print_json, print_table, row, say, table


@click.group()
def project():
    """Projects (one git repository each)."""


@project.command("create")
@click.argument("team_name", metavar="TEAM")
@click.argument("name")
@click.option("--gpus", default="a4000:1", show_default=True, help="TYPE:COUNT, e.g. a4000:2")
@click.option("--image", default=None, help="image from the catalog (default: the config's)")
@click.option("--time", "time_", default=None, help="time limit: minutes, 30m, 2h")
@pass_ctx
def project_create(ctx: Ctx, team_name, name, gpus, image, time_):
    """Create a project and its git repository; print the remote URL (administrators and owners)."""
    p = source(ctx).create_project(team_name, name, gpus, image, time_)
    url = p["remote_url"]
    # plain echo, never rich: a console wraps long lines and a copied command would lose its end
    click.echo(f"project {p['team']}/{p['name']}: {p['gpu_type']} x{p['gpu_count']}, image {p['image']}, "
               f"{p['time_limit_min']} min")
    click.echo(f"remote: {url}\n\n  {shellquote.command(['git', 'remote', 'add', 'slipway', url])}\n"
               f"  # write slipway-entrypoint.sh at the repository root, then:\n"
               f"  git checkout -b exp-1 && git add -A && git commit -m run && git push slipway exp-1\n"
               f"  # git asks for your user name and an access token (slipway token create USER)")


@project.command("list")
@click.option("--team", "team_name")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's project shape)")
@pass_ctx
def project_list(ctx: Ctx, team_name, as_json):
    """Projects of your teams (the operator and cluster admins: every team), or of --team."""
    projects = source(ctx).projects(team_name)
    if as_json:
        print_json(projects)
        return
    t = table("Projects", "project", "gpus", "image", "time", "jobs")
    for p in projects:
        row(t, f"{p['team']}/{p['name']}", f"{p['gpu_type']} x{p['gpu_count']}", p["image"],
            f"{p['time_limit_min']} min", str(p["jobs"]))
    print_table(t)


@project.command("show")
@click.argument("ref", metavar="TEAM/PROJECT")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's project shape)")
@pass_ctx
def project_show(ctx: Ctx, ref, as_json):
    p = source(ctx).project(*split_ref(ref))
    if as_json:  # the project shape of /api/projects (remote mode's extras left out: same output)
        print_json({k: v for k, v in p.items() if k not in ("storage_bytes", "recent_jobs")})
        return
    click.echo(f"project {p['team']}/{p['name']}\n  gpus   {p['gpu_type']} x{p['gpu_count']}\n"
               f"  image  {p['image']}\n  time   {p['time_limit_min']} min\n  remote {p['remote_url']}\n"
               f"  jobs   {p['jobs']} ({p['active_jobs']} active)")
    if p.get("compute_type"):
        click.echo(f"  compute {p['compute_type']}")
    for slot, ref_text in (p.get("inputs") or {}).items():
        click.echo(f"  {slot} {ref_text}")


def _input_changes(pairs: tuple[str, ...], current: dict[str, str]) -> dict[str, str]:
    """``input0=vision/cifar-100:latest`` pairs applied to the current bindings; ``input0=``
    drops one (sent as "", which the service drops)."""
    merged = dict(current)
    for pair in pairs:
        slot, sep, value = pair.partition("=")
        if not sep or not slot.strip():
            fail(f"--input {pair!r}: write SLOT=REF, e.g. input0=vision/cifar-100:latest "
                 "(input0= removes input0)")
        merged[slot.strip().lower()] = value.strip()
    return merged


@project.command("set")
@click.argument("ref", metavar="TEAM/PROJECT")
@click.option("--gpus", default=None, help="TYPE:COUNT, e.g. a4000:2")
@click.option("--image", default=None, help="image from the catalog")
@click.option("--time", "time_", default=None, help="time limit: minutes, 30m, 2h")
@click.option("--input", "inputs", multiple=True, metavar="SLOT=REF",
              help="a default input binding, e.g. input0=vision/cifar-100:latest or input1=job:42; "
                   "input0= removes it (repeatable)")
@click.option("--compute", "compute", default=None, metavar="NAME",
              help="the default compute type of new jobs (slipway compute list); --compute '' clears it")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's project shape)")
@pass_ctx
def project_set(ctx: Ctx, ref, gpus, image, time_, inputs, compute, as_json):
    """Change a project's settings: the GPUs, image and time limit new jobs get by default, and
    the data its jobs see at /input0-4 unless a push says otherwise (-o input0=...)."""
    team_name, name = split_ref(ref)
    src = source(ctx)
    if not (gpus or image or time_ or inputs or compute is not None):
        fail("nothing to change: give --gpus, --image, --time, --compute or --input SLOT=REF")
    changes = _input_changes(inputs, src.project(team_name, name).get("inputs") or {}) if inputs else None
    p = src.update_project(team_name, name, gpus, image, time_, changes, compute_type=compute)
    if as_json:
        print_json({k: v for k, v in p.items() if k not in ("storage_bytes", "recent_jobs")})
        return
    bound = ", ".join(f"{k}={v}" for k, v in (p.get("inputs") or {}).items()) or "none"
    click.echo(f"project {p['team']}/{p['name']}: {p['gpu_type']} x{p['gpu_count']}, image {p['image']}, "
               f"{p['time_limit_min']} min; compute type: {p.get('compute_type') or 'none'}; "
               f"inputs: {bound}")


@project.command("delete")
@click.argument("ref", metavar="TEAM/PROJECT")
@click.option("--confirm", required=True, help="type TEAM/PROJECT again: deletion is irrecoverable")
@pass_ctx
def project_delete(ctx: Ctx, ref, confirm):
    """Delete a project, its repository, LFS objects and jobs — irrecoverably."""
    if confirm != ref:
        fail(f"--confirm must be exactly {ref!r}; nothing was deleted")
    team_name, name = split_ref(ref)
    # the one implementation, shared with the web page and the API
    n = call(projects_svc.delete_project, ctx.svc, actor(ctx), team_name, name, confirm)
    say(f"project {ref} deleted ({n} job(s))")
