"""``slipway submit [SBATCH FLAGS] SCRIPT|-``: sbatch for cluster administrators, through Slipway.

    slipway submit --gres=gpu:a4000:2 -t 2:00:00 -c 8 --mem=16G -u alice -A vision train.sh

runs ``train.sh`` as alice in a container, billed to team vision, shown and cancellable like a
pushed job (``portal.jobs.scripted``; flags: ``portal.jobs.sbatch_flags``; ``#SBATCH`` lines in
the script count too, the command line wins). Local mode calls the service layer; remote mode
(``--url``) posts to ``/api/submit``. Both print the same lines."""
from __future__ import annotations

import sys

import click

from ..jobs import sbatch_flags, scripted
from .context import Ctx, actor, call, pass_ctx
from .output import fail

HELP = f"""Run SCRIPT (a file, or - for standard input) as a user through Slipway, with
sbatch's flags: {sbatch_flags.KNOWN_TEXT}.

The script's #SBATCH lines are read too (the command line wins). The job runs on a new branch
submit/N of the team's project (--project, default submit; created on first use), billed,
shown and cancellable like a pushed job. Cluster administrators only."""


def _read_script(path: str) -> str:
    try:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    except OSError as exc:
        fail(f"cannot read the script {path}: {exc.strerror or exc}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"the script {path} is not UTF-8 text")


@click.command("submit", help=HELP, context_settings={
    "ignore_unknown_options": True, "allow_interspersed_args": False,
    "help_option_names": ["--help"]})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="[SBATCH FLAGS] SCRIPT|-")
@pass_ctx
def submit(ctx: Ctx, argv):
    flags, rest = sbatch_flags.split_argv(list(argv))
    if not rest:
        fail("name the script to run (a file, or - for standard input): slipway submit "
             "[SBATCH FLAGS] SCRIPT")
    if len(rest) > 1:
        fail(f"arguments after the script ({' '.join(rest[1:])[:80]}) are not passed to it yet; "
             "write them into the script")
    script = _read_script(rest[0])
    if ctx.remote is not None:
        d = ctx.remote.request("POST", "/api/submit", body={"script": script, "flags": flags})
        lines, submitted, message = d["lines"], d["submitted"], d["message"]
    else:
        done = call(scripted.submit_script, ctx.svc, actor(ctx), script, flags)
        lines, submitted, message = done.lines(), done.submitted, done.message
    for line in lines:
        click.echo(line)
    if not submitted:
        fail(f"Slurm did not take the job: {message}")
