"""Render a JobRequest into a batch script and the sbatch options (argv, never a shell line).

The script only exports ``env`` and ``exec``s ``command``; every value is ``shlex.quote``d,
so a hostile value arrives in the job verbatim and is never interpreted by the shell.
"""
from __future__ import annotations

import shlex

from .request import JobRequest

HEADER = "#!/bin/bash\n# Written by Slipway (slurm_bridge). Every value below is shell-quoted.\n"


def render_script(req: JobRequest) -> str:
    """The batch script text (passed to sbatch on stdin). Call ``validate`` first."""
    lines = [HEADER.rstrip("\n")]
    for key in sorted(req.env):
        lines.append(f"export {key}={shlex.quote(req.env[key])}")
    # exec: the command becomes the batch step's process and gets scancel's signals directly.
    lines.append("exec " + " ".join(shlex.quote(word) for word in req.command))
    return "\n".join(lines) + "\n"


def sbatch_options(req: JobRequest) -> list[str]:
    """sbatch options for ``req`` (without ``--parsable``/``--uid``), one argv item each.

    ``nodes`` N > 1: ``--nodes=N --ntasks=N --ntasks-per-node=1`` (``--gres`` and
    ``--cpus-per-task`` are per node, so the job holds N times them); ``array``: ``--array``.
    """
    opts = [
        f"--job-name={req.name}",
        f"--account={req.account}",
        f"--qos={req.qos}",
        f"--time={req.time_limit_min}",
        f"--cpus-per-task={req.cpus}",   # per task, so per node
        f"--ntasks={req.nodes}",
        f"--nodes={req.nodes}",
        f"--chdir={req.workdir}",
        f"--output={req.output}",
        f"--comment={req.comment}",
        "--requeue" if req.requeue else "--no-requeue",
        "--export=ALL",  # the environment sbatch runs with is a clean one (see CliBackend)
    ]
    if req.nodes > 1:  # one task (one rank) per node: srun in the batch step starts one each
        opts.append("--ntasks-per-node=1")
    if req.array is not None:
        opts.append(f"--array={req.array}")
    if req.partition:
        opts.append(f"--partition={req.partition}")
    if req.gpus is not None:
        opts.append(f"--gres={req.gpus.gres}")  # per node
    if req.mem_mb is not None:
        opts.append(f"--mem={req.mem_mb}M")
    if req.signal:
        opts.append(f"--signal={req.signal}")
    if req.hold:
        opts.append("--hold")
    if req.nice > 0:
        opts.append(f"--nice={req.nice}")
    return opts
