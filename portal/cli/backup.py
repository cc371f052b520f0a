"""``slipway backup DIR`` and ``slipway restore DIR`` (docs/FAULTS.md §6): the server
operator's commands, on the server's own files — never remote, never ``--as`` a user.

Neither bootstraps Slipway (that would migrate the database before a backup, and create a data
directory, secrets and tables before a restore): both read the configuration only.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..backup import BackupError
from ..backup import backup as make_backup
from ..backup import restore as run_restore
from ..config import ConfigError, load_config
from .context import Ctx, pass_ctx
from .output import fail, print_json


def _config(ctx: Ctx, command: str):
    if ctx.remote is not None:
        fail(f"`slipway {command}` works only on the Slipway server (it reads the server's files "
             "and database); drop --url / SLIPWAY_URL")
    if ctx.actor_name:
        fail(f"`slipway {command}` is the server operator's command and acts on no user's "
             "behalf; drop --as / SLIPWAY_USER")
    if getattr(ctx, "_svc", None) is not None:
        return ctx._svc.config
    try:
        return load_config()
    except ConfigError as exc:
        fail(f"configuration: {exc}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.command("backup")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the backup's manifest as JSON")
@pass_ctx
def backup(ctx: Ctx, directory: Path, as_json: bool):
    """Back up Slipway into DIRECTORY (new or empty; made 0700): the database (a consistent
    copy, taken while Slipway runs), every project repository with its LFS objects, the data
    versions' manifests, the jobs' logs and the secrets. Data versions' files are not copied
    (docs/FAULTS.md §6)."""
    config = _config(ctx, "backup")
    try:
        manifest = make_backup(config, directory)
    except BackupError as exc:
        fail(str(exc))
    if as_json:
        print_json(manifest)
        return
    counts = manifest["counts"]
    repos = manifest["repos"]
    click.echo(f"backup of {config.data_dir} written to {Path(directory).absolute()} in "
               f"{manifest['seconds']:.1f} s: {len(manifest['files'])} files, "
               f"{_size(manifest['total_bytes'])}")
    click.echo(f"  schema revision {manifest['schema_revision']} ({manifest['database']['engine']})")
    click.echo(f"  {counts.get('jobs', 0)} jobs, {counts.get('ledger_entries', 0)} ledger entries, "
               f"{counts.get('teams', 0)} teams, {counts.get('users', 0)} users")
    click.echo(f"  {len(repos)} repositories ({sum(len(r['refs']) for r in repos.values())} refs, "
               f"{sum(r['lfs_objects'] for r in repos.values())} LFS objects)")
    click.echo(f"  {len(manifest['data_versions'])} data version manifests (their files are not "
               "in the backup: keep <data_dir>/datastore in your file-system backup)")
    click.echo(f"  {len(manifest['job_logs'])} jobs' logs; secrets: "
               f"{', '.join(manifest['secrets']) or 'none'}")


@click.command("restore")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@pass_ctx
def restore(ctx: Ctx, directory: Path, as_json: bool):
    """Restore the backup in DIRECTORY onto an EMPTY data directory and an empty database (the
    configured ones), migrating an older schema. Refuses a backup that does not verify, one
    made by a newer Slipway, and a target that is not empty; nothing is half-restored."""
    config = _config(ctx, "restore")
    if not Path(directory).exists():
        fail(f"{directory} does not exist: name the directory `slipway backup` wrote")
    try:
        summary = run_restore(config, directory)
    except BackupError as exc:
        fail(str(exc))
    if as_json:
        print_json(summary)
        return
    counts = summary["counts"]
    click.echo(f"restored {summary['from']} (made {summary['made_at']}) onto "
               f"{summary['data_dir']} in {summary['seconds']:.1f} s")
    migrated = (f", migrated to {summary['migrated_to']}" if summary["migrated_to"] else "")
    click.echo(f"  schema revision {summary['schema_revision']}{migrated}")
    click.echo(f"  {counts.get('jobs', 0)} jobs, {counts.get('ledger_entries', 0)} ledger entries "
               "(every balance equals its ledger), "
               f"{summary['repos']} repositories, {summary['lfs_objects']} LFS objects, "
               f"{summary['job_logs']} logs")
    data = summary["data"]
    click.echo(f"  {data['versions']} data versions, manifests verified; "
               f"{data['with_files']} with their files in the datastore")
    if data["without_files"]:
        shown = ", ".join(data["without_files"][:10])
        more = f" and {len(data['without_files']) - 10} more" if len(data["without_files"]) > 10 else ""
        click.echo(f"  files missing for: {shown}{more}: copy <data_dir>/datastore back from "
                   "your file-system backup before users read or bind them")
