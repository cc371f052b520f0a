"""``slipway job list|show|log|cancel|rerun|delete|output|continue`` (squeue/scancel-like); a
sweep's tasks (``show`` lists them, ``log --task I``, ``cancel --task I``) and a multi-node
job's nodes (docs/SHARING.md)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ..data.names import check_rel_path
from .context import Ctx, call, pass_ctx
from .data_common import print_sorted_json, save_stream
from .local import source
from .output import fail, print_fields, print_table, row, say, table, usd, when


@click.group()
def job():
    """Jobs (squeue/scancel-like)."""


def _cli_job_json(d: dict) -> dict:
    """The ``--json`` shape of a job (``project`` is TEAM/PROJECT), from the API's job dict."""
    keys = ("id", "project", "branch", "commit", "pusher", "state", "previous_state", "reason", "gpu_type",
            "gpu_count", "image", "time_limit_min", "slurm_job_id", "node", "port", "exit_code",
            "submitted_at", "started_at", "ended_at", "cost", "cancel_requested", "cancel_reason",
            "results_ref", "results_sha", "branch_updated", "log", "inputs", "output_state",
            "output_bytes", "continue_from", "compute_type", "asked", "qos", "partition",
            "priority", "expected_start_at", "preempted_count", "attempt", "shape")
    out = {k: (f"{d['team']}/{d['project']}" if k == "project" else d.get(k)) for k in keys}
    out.update({k: d[k] for k in ("tasks", "nodes", "attempts") if k in d})   # its parts, runs
    for k in ("shape", "tasks", "nodes", "attempts"):   # keys sorted, as the API's JSON has them
        if out.get(k) is not None:
            out[k] = _sorted_keys(out[k])
    return out


def _sorted_keys(v):
    if isinstance(v, dict):
        return {k: _sorted_keys(v[k]) for k in sorted(v)}
    return [_sorted_keys(x) for x in v] if isinstance(v, list) else v


@job.command("list")
@click.option("--team", "team_name", help="one team (default: your teams; the operator: every team)")
@click.option("--state", help="a state, or 'active'")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def job_list(ctx: Ctx, team_name, state, limit, as_json):
    rows = source(ctx).jobs(team_name, state, limit)
    if as_json:
        click.echo(json.dumps([_cli_job_json(j) for j in rows], indent=1))
        return
    t = table("Jobs", "job", "project", "branch", "state", "gpus", "slurm", "node", "cost", "reason")
    for j in rows:
        row(t, str(j["id"]), f"{j['team']}/{j['project']}", j["branch"], j["state"],
            f"{j['gpu_type']} x{j['gpu_count']}", str(j["slurm_job_id"] or ""), j["node"] or "",
            usd(j["cost"]), (j["reason"] or "").replace("\n", " "))
    print_table(t)


@job.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def job_show(ctx: Ctx, job_id, as_json):
    j = source(ctx).job(job_id)
    if as_json:
        click.echo(json.dumps(_cli_job_json(j), indent=1))
        return

    def at(key):
        t = when(j[key])
        return str(t) if t else ""

    results = f"{j['results_ref'] or ''} {j['results_sha'] or ''}".strip()
    fields = [
        ("project", f"{j['team']}/{j['project']}"), ("branch", j["branch"]), ("commit", j["commit"]),
        ("pusher", j["pusher"] or ""),
        ("state", j["state"] + (f" (was {j['previous_state']})" if j["previous_state"] else "")),
        ("reason", j["reason"] or ""), ("gpus", f"{j['gpu_type']} x{j['gpu_count']}"),
        *_compute_field(j), ("image", j["image"]),
        ("time limit", f"{j['time_limit_min']} min"), ("slurm job", str(j["slurm_job_id"] or "")),
        ("node", j["node"] or ""), ("port", str(j["port"] or "")),
        ("exit code", "" if j["exit_code"] is None else str(j["exit_code"])),
        ("submitted", at("submitted_at")), ("started", at("started_at")), ("ended", at("ended_at")),
        ("cost", usd(j["cost"])), ("cancel", j["cancel_reason"] or ""), ("results", results),
        ("branch updated", "" if j["branch_updated"] is None else ("yes" if j["branch_updated"] else "no")),
        ("log", j["log"] or ""),
        ("inputs", ", ".join(f"{i['mount']}={i['label']}" for i in j.get("inputs") or [])),
        ("/output", (j.get("output_state") or "") + (f", {j['output_bytes']} bytes"
                                                     if j.get("output_bytes") is not None else "")
         + (f" (continues job {j['continue_from']})" if j.get("continue_from") else "")),
    ]
    print_fields(f"Job {job_id}", fields)
    _print_parts(job_id, j)


def _compute_field(j: dict) -> list[tuple[str, str]]:
    """``compute  2/8 of an a6000`` / ``2 nodes × 4 a4000`` / ``6 tasks (…), each …``."""
    shape = j.get("shape") or {}
    if shape.get("kind", "single") == "single" and not j["gpu_type"].endswith("-shard"):
        return []
    return [("compute", shape.get("compute") or "")]


def _print_parts(job_id: int, j: dict) -> None:
    if j.get("tasks") is not None:
        t = table(f"Tasks of job {job_id}", "task", "state", "values", "node", "cost", "exit",
                  "results", "reason")
        for x in j["tasks"]:
            results = x["results_ref"] + (f" {x['results_sha'][:10]}" if x["results_sha"] else "")
            row(t, str(x["index"]), x["state"], x["values"], x["node"] or "", usd(x["cost"]),
                "" if x["exit_code"] is None else str(x["exit_code"]), results,
                (x["reason"] or "").replace("\n", " "))
        print_table(t)
    if j.get("nodes") is not None:
        t = table(f"Nodes of job {job_id}", "rank", "node", "state")
        for n in j["nodes"]:
            row(t, str(n["rank"]), n["node"] or "", n["state"])
        print_table(t)
    if len(j.get("attempts") or ()) > 1 or (j.get("attempt") and j.get("attempts")):
        t = table(f"Attempts of job {job_id} (requeued by Slurm)", "attempt", "node", "started",
                  "ended", "how it ended", "minutes", "cost")
        for a in j["attempts"]:
            row(t, str(a["attempt"] + 1), a["node"] or "", a["started_at"] or "",
                a["ended_at"] or "", a["ended"], str(a["minutes"]), usd(a["cost"]))
        print_table(t)


@job.command("log")
@click.argument("job_id", type=int)
@click.option("--follow/--no-follow", "-f/-F", default=True, show_default=True,
              help="keep printing the live log until the job ends (--no-follow: what is there now)")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.05, 60),
              help="seconds between polls while following")
@click.option("--task", type=click.IntRange(min=0), default=None,
              help="a sweep's task: its own log (followed until that task has ended)")
@pass_ctx
def job_log(ctx: Ctx, job_id, follow, interval, task):
    """Print job JOB_ID's log; by default follow it until the job has ended."""
    src = source(ctx)
    what = f"job {job_id}" if task is None else f"job {job_id} task {task}"
    pos = 0
    while True:
        chunk = src.log_chunk(job_id, pos) if task is None else src.log_chunk(job_id, pos, task)
        if chunk["data"]:
            sys.stdout.write(chunk["data"])
            sys.stdout.flush()
        pos = chunk["next_offset"]
        more = pos < chunk["size"]  # a big log comes in pieces: fetch the rest at once
        if more:
            continue
        if not chunk["exists"]:
            if not follow:
                fail(f"{what} has no log yet ({chunk['state']})")
            if chunk["terminal"]:
                fail(f"{what} ended ({chunk['state']}) without a log")
        if not follow or chunk["terminal"]:
            return
        time.sleep(interval)


@job.command("cancel")
@click.argument("job_id", type=int)
@click.option("--task", type=click.IntRange(min=0), default=None,
              help="cancel only this task of a sweep (the others go on)")
@pass_ctx
def job_cancel(ctx: Ctx, job_id, task):
    """Cancel a job of one of your teams (a running job still pushes its files); a sweep: all
    its tasks, or with --task I only task I."""
    src = source(ctx)
    say(src.cancel(job_id) if task is None else src.cancel(job_id, task))


@job.command("rerun")
@click.argument("job_id", type=int)
@pass_ctx
def job_rerun(ctx: Ctx, job_id):
    """Run a job again (no empty commit needed): same branch at its current tip, same GPUs,
    time limit and image; the same rules as a push."""
    click.echo(source(ctx).rerun(job_id))


@job.command("delete")
@click.argument("job_id", type=int)
@click.option("--yes", is_flag=True, help="confirm: deletion is irrecoverable")
@pass_ctx
def job_delete(ctx: Ctx, job_id, yes):
    """Delete an ENDED job: its results ref (results/BRANCH/JOB_ID), log and files, and its row;
    its charges stay in the ledger (team administrators and owners; cluster administrators)."""
    if not yes:
        fail(f"deleting job {job_id} is irrecoverable: run again with --yes to confirm; "
             "nothing was deleted")
    click.echo(source(ctx).delete_job(job_id))


@job.command("output")
@click.argument("job_id", type=int)
@click.option("--download", "download_dir", type=click.Path(file_okay=False, path_type=Path),
              help="write the output's files into this folder (made if missing)")
@click.option("--archive", "archive_file", type=click.Path(dir_okay=False, path_type=Path),
              help="write the output as one .tar file")
@click.option("--delete", "delete", is_flag=True, help="delete the kept output (with --yes)")
@click.option("--yes", is_flag=True, help="confirm --delete: deletion is irreversible")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's shape)")
@pass_ctx
def job_output(ctx: Ctx, job_id, download_dir, archive_file, delete, yes, as_json):
    """A job's /output (kept read-only when the job ends): list it, download it, or delete it."""
    if sum(bool(x) for x in (download_dir, archive_file, delete)) > 1:
        fail("choose one of --download DIR, --archive FILE and --delete")
    src = source(ctx)
    if delete:
        if not yes:
            fail(f"deleting job {job_id}'s output is irreversible: run again with --yes to confirm; "
                 "nothing was deleted")
        d = src.delete_output(job_id)
        click.echo(d.get("message") or f"the output of job {job_id} is deleted")
        return
    if archive_file is not None:
        target = save_stream(src.job_output_archive(job_id), str(archive_file), "the archive")
        click.echo(f"wrote {target}")
        return
    out = src.job_output(job_id)
    if download_dir is not None:
        _download_output(src, job_id, out, download_dir)
        return
    if as_json:
        print_sorted_json(out)
        return
    size = "" if out["size_bytes"] is None else f", {out['size_bytes']} bytes"
    click.echo(f"output of job {job_id}: {out['state']}" + (f", {out['file_count']} file(s){size}"
                                                           if out["file_count"] is not None else ""))
    t = table(f"Output of job {job_id}", "path", "size")
    for f in out["files"]:
        row(t, f["path"], str(f["size"]))
    print_table(t)


def _download_output(src, job_id: int, out: dict, dest: Path) -> None:
    """Each file of the listing into ``dest``/path (paths checked; existing files are kept)."""
    paths = [call(check_rel_path, f["path"]) for f in out["files"]]
    clash = [p for p in paths if (dest / p).exists()]
    if clash:
        fail(f"{dest / clash[0]} exists already; download into an empty folder")
    for p in paths:
        (dest / p).parent.mkdir(parents=True, exist_ok=True)
        save_stream(src.job_output_file(job_id, p), str(dest / p), p)
    click.echo(f"wrote {len(paths)} file(s) of job {job_id}'s output into {dest}")


@job.command("continue")
@click.argument("job_id", type=int)
@pass_ctx
def job_continue(ctx: Ctx, job_id):
    """A new job at job JOB_ID's commit (same branch, inputs and GPUs) whose /output starts as a
    copy of JOB_ID's kept output; JOB_ID's output never changes."""
    _new_id, message = source(ctx).continue_job(job_id)
    click.echo(message)
