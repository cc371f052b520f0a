"""``slipway data list|create|show|push|download|share|unshare|public|delete|from-job``: data
repositories (datasets and models) and their numbered versions (docs/DATA.md). Front door only:
every rule and refusal is the service layer's (local mode) or the API's (remote mode)."""
from __future__ import annotations

import click

from ..data import names
from .context import Ctx, call, pass_ctx
from .data_common import nbytes, parse_ref, print_sorted_json, repo_ref, save_stream, short_date
from .data_push import data_push
from .local import source
from .output import fail, print_table, row, say, table


@click.group("data")
def data():
    """Data repositories: versioned datasets and models, bound at /input0-4 (-o input0=T/N:V)."""


data.add_command(data_push)


@data.command("list")
@click.option("--team", "team_name", help="one team's repositories")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def data_list(ctx: Ctx, team_name, as_json):
    """The data repositories you may read (your teams', shared with them, public)."""
    repos = source(ctx).data_list(team_name)
    if as_json:
        print_sorted_json(repos)
        return
    t = table("Data repositories", "repository", "kind", "latest", "versions", "size", "public",
              "description")
    for r in repos:
        row(t, r["ref"], r["kind"], "" if r["latest"] is None else str(r["latest"]),
            str(len(r["versions"])), nbytes(r.get("size_bytes")), "yes" if r["public"] else "",
            r["description"].replace("\n", " "))
    print_table(t)


@data.command("create")
@click.argument("ref", metavar="TEAM/NAME")
@click.option("--kind", type=click.Choice(["dataset", "model"]), required=True)
@click.option("--description", default="", help="what it holds (shown on its page)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def data_create(ctx: Ctx, ref, kind, description, as_json):
    """Create an empty data repository (any member of the team); add versions with `data push`."""
    team, name = repo_ref(ref)
    r = source(ctx).data_create(team, name, kind, description)
    if as_json:
        print_sorted_json(r)
        return
    click.echo(f"{r['kind']} {r['ref']} created; add a version with: slipway data push {r['ref']} PATH")


@data.command("show")
@click.argument("ref", metavar="TEAM/NAME[:V]")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def data_show(ctx: Ctx, ref, as_json):
    """A repository and its versions; with :V (a number or latest) that version's files."""
    team, name, version = parse_ref(ref)
    src = source(ctx)
    if ":" not in ref:
        r = src.data_show(team, name)
        if as_json:
            print_sorted_json(r)
            return
        click.echo(f"{r['kind']} {r['ref']}" + (" (public)" if r["public"] else "")
                   + (f": {r['description']}" if r["description"] else ""))
        if r.get("shared_with"):
            click.echo(f"shared with: {', '.join(r['shared_with'])}")
        t = table("Versions", "version", "files", "size", "created", "by", "source")
        for v in r["versions"]:
            row(t, str(v["number"]), str(v["file_count"]), nbytes(v["size_bytes"]), short_date(v["created_at"]),
                v["created_by"] or "", v["source"])
        print_table(t)
        return
    v = src.data_version(team, name, version)
    if as_json:
        print_sorted_json(v)
        return
    click.echo(f"{v['ref']}: {v['file_count']} file(s), {nbytes(v['size_bytes'])}, by "
               f"{v['created_by'] or '?'} from {v['source']}, {short_date(v['created_at'])}")
    t = table(f"Files of {v['ref']}", "path", "size", "sha256")
    for f in v.get("files", []):
        row(t, f["path"], str(f["size"]), f["sha256"])
    print_table(t)


@data.command("download")
@click.argument("ref", metavar="TEAM/NAME[:V]")
@click.argument("dest", required=False)
@click.option("--file", "path", help="one file of the version (its path inside it)")
@pass_ctx
def data_download(ctx: Ctx, ref, dest, path):
    """Download a version (default: the newest) as a .tar, or one file of it with --file."""
    team, name, version = parse_ref(ref)
    src = source(ctx)
    if path is not None:
        path = call(names.check_rel_path, path)
        target = save_stream(src.data_file(team, name, version, path), dest, path)
    else:
        target = save_stream(src.data_archive(team, name, version), dest, "the archive")
    click.echo(f"wrote {target} ({nbytes(target.stat().st_size)})")


@data.command("share")
@click.argument("ref", metavar="TEAM/NAME")
@click.argument("other", metavar="OTHER_TEAM")
@pass_ctx
def data_share(ctx: Ctx, ref, other):
    """Let OTHER_TEAM read and bind the repository (the team's administrators and owners)."""
    team, name = repo_ref(ref)
    r = source(ctx).data_share(team, name, other)
    say(f"{r['ref']} is shared with team {other}")


@data.command("unshare")
@click.argument("ref", metavar="TEAM/NAME")
@click.argument("other", metavar="OTHER_TEAM")
@pass_ctx
def data_unshare(ctx: Ctx, ref, other):
    """Stop sharing the repository with OTHER_TEAM."""
    team, name = repo_ref(ref)
    r = source(ctx).data_unshare(team, name, other)
    say(f"{r['ref']} is no longer shared with team {other}")


@data.command("public")
@click.argument("ref", metavar="TEAM/NAME")
@click.option("--on/--off", "on", default=None, help="readable by everybody, or not (cluster administrators)")
@pass_ctx
def data_public(ctx: Ctx, ref, on):
    """Make a repository public (readable and bindable by every user) or private again."""
    if on is None:
        fail("say --on (public) or --off (private)")
    team, name = repo_ref(ref)
    r = source(ctx).data_public(team, name, on)
    say(f"{r['ref']} is {'public' if r['public'] else 'private'}")


@data.command("delete")
@click.argument("ref", metavar="TEAM/NAME[:V]")
@click.option("--yes", is_flag=True, help="do not ask: deletion is irreversible")
@pass_ctx
def data_delete(ctx: Ctx, ref, yes):
    """Delete a repository with all its versions, or with :V one version (administrators and
    owners of its team; refused while a queued or running job binds it)."""
    team, name, version = parse_ref(ref)
    if ":" in ref and version is None:
        fail("name the version to delete by its number, not 'latest'")
    expected = name if version is None else str(version)
    what = f"{team}/{name}" + ("" if version is None else f":{version}")
    if yes:
        confirm = expected
    else:
        confirm = click.prompt(f"deleting {what} is irreversible; type "
                               + (f"its name ({expected})" if version is None else f"the version number ({expected})")
                               + " to confirm", default="", show_default=False)
        if confirm.strip() != expected:
            fail("that does not match; nothing was deleted")
    src = source(ctx)
    if version is None:
        src.data_delete(team, name, confirm)
    else:
        src.data_delete_version(team, name, version, confirm)
    say(f"deleted {what}")


@data.command("from-job")
@click.argument("job_id", metavar="JOB", type=int)
@click.argument("ref", metavar="TEAM/NAME")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def data_from_job(ctx: Ctx, job_id, ref, as_json):
    """A new version of TEAM/NAME from job JOB's kept /output."""
    team, name = repo_ref(ref)
    v = source(ctx).data_from_job(job_id, team, name)
    if as_json:
        print_sorted_json(v)
        return
    click.echo(f"{v['ref']}: {v['file_count']} file(s), {nbytes(v['size_bytes'])} from job {job_id}")
