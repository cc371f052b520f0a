"""The runner specs of shaped jobs (docs/SHARING.md): a sweep's one spec per task, and the
fields of a multi-node job's spec.

A sweep task ``i`` gets ``<job dir>/task-<i>/`` (0700, the job user's) with its ``spec.json``
and ``work/`` (its own checkout); its /output is ``<job dir>/output/task-<i>`` (so the job's
kept output holds every task's); its container gets ``SLIPWAY_TASK_ID``, ``SLIPWAY_PARAM_*``
and Slurm's ``SLURM_ARRAY_TASK_ID``; its results go to ``results/<branch>/<job>/<i>``, never to
the branch (the reconciler merges the tasks' results once they all ended). The batch command is
the same for every task: the runner reads ``task-{task}/spec.json`` with ``{task}`` =
``$SLURM_ARRAY_TASK_ID``."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from git_gateway.node.spec import RANK_ENV, TASK_ENV, RunnerSpec

from .. import integrations as ig
from ..private_files import PRIVATE_DIR, make_dir
from ..services import Services
from . import sweeps

TASK_SPEC_TEMPLATE = "task-{task}/spec.json"


def task_ref(branch: str, job_id: int, index: int) -> str:
    return f"refs/heads/results/{branch}/{job_id}/{index}"


def _own(svc: Services, path: Path, uid_gid: tuple[int, int] | None) -> None:
    if uid_gid is not None:
        os.chown(path, *uid_gid)


def task_specs(svc: Services, d: Path, spec: RunnerSpec, *, image: str, binds: list,
               passthrough: tuple[str, ...], command: list[str], base_env: dict[str, str],
               tasks: list[dict[str, str]], uid_gid: tuple[int, int] | None,
               write) -> str:
    """Write one spec per task (``write(path, spec)``); returns the batch command's spec path
    (with ``{task}``). ``spec`` is the job's spec as a single-node job would have it."""
    cfg = svc.config
    out_root = d / "output"
    for i, params in enumerate(tasks):
        tdir = d / f"task-{i}"
        make_dir(tdir, PRIVATE_DIR)
        _own(svc, tdir, uid_gid)
        t_out = out_root / f"task-{i}"
        if not t_out.is_dir():
            make_dir(t_out, 0o700)
            _own(svc, t_out, uid_gid)
        t_binds = [b for b in binds if b[1] != "/output"] + [(str(t_out), "/output", False)]
        env = {**base_env, **sweeps.task_env(params, i)}
        workdir = tdir / "work"
        argv = ig.container_argv(cfg, svc.catalog, image, str(workdir), command, env,
                                 passthrough_extra=(*passthrough, *TASK_ENV), binds=t_binds)
        t_spec = replace(spec, workdir=str(workdir), container_argv=tuple(argv),
                         env={**spec.env, **sweeps.task_env(params, i)},
                         output_dir=str(t_out), task_id=i,
                         results_ref=task_ref(spec.branch, spec.job_id, i), push_branch=False)
        write(tdir / "spec.json", t_spec)
    return str(d / TASK_SPEC_TEMPLATE)


def multinode_fields(nodes: int, master_port: int | None) -> dict:
    """The spec fields of a job on ``nodes`` nodes (none for one node)."""
    if nodes <= 1:
        return {}
    return {"nodes": nodes, "master_port": master_port}


def passthrough_for(nodes: int) -> tuple[str, ...]:
    """Variables a multi-node job's container takes from its rank's environment."""
    return tuple(RANK_ENV) if nodes > 1 else ()
