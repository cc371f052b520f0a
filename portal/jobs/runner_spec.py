"""The files a job gets and its runner spec.

A job's directory ``<jobs_dir>/<id>`` (0700, owned by the pusher's Unix user) holds
``spec.json`` (mode 0600: the job's token is in it) and ``output.log``. The spec is what the
node-side program (``git_gateway.node.runner``) needs to check out the commit, run the container
and push the results back: the portal builds the node program's own ``RunnerSpec``
(``git_gateway.node.spec``: one contract, written with ``to_json()``, read with ``from_dict()``). The submission (``jobs.submit``) reads what it needs of the job once
(``JobSnapshot``), then builds the spec and the batch command from it (``prepare_job``).
"""
from __future__ import annotations

import hashlib
import os
import pwd
import random
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from git_gateway.node.spec import RunnerSpec  # the one contract with the node program
from slurm_bridge.request import GpuRequest

from .. import integrations as ig
from ..db import ACTIVE_STATES, Job
from ..private_files import PRIVATE_DIR, make_dir
from ..services import Services
from . import shaped_spec, trailer_facts


@dataclass(frozen=True)
class JobSnapshot:
    """What a submission reads of a job (and its project, team and pusher) in one transaction."""

    job_id: int
    team: str
    project: str
    branch: str
    commit: str
    port: int
    image: str
    unix_user: str
    account: str
    gpus: GpuRequest                      # "cpu x4": a CPU-only job's 4 cores, no GPU
    time_limit_min: int
    team_id: int = 0
    continue_from: int | None = None      # the job whose kept /output this one starts from
    cpus: int = 1                         # cores (a CPU-only job: gpus.count)
    mem_mb: int | None = None             # --mem (None: Slurm's default)
    kind: str = "task"                    # or "workspace": JupyterLab instead of the entrypoint
    tasks: tuple = ()                     # a sweep: one dict of values per task (docs/SHARING.md)
    nodes: int = 1                        # a multi-node job's nodes
    master_port: int | None = None        # its ranks' rendezvous port


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def pick_port(session: Session, svc: Services, avoid=()) -> int:
    """A random port in the configured range that no active job holds (nor one of ``avoid``,
    picked in this transaction and not flushed): one lookup per draw, not a read of every
    active job's port."""
    rng = random.SystemRandom()
    lo, hi = svc.config.port_min, svc.config.port_max
    conn = session.connection()
    for _ in range(1000):
        port = rng.randint(lo, hi)
        if port not in avoid and conn.execute(_PORT_TAKEN, {"port": port}).first() is None:
            return port
    raise RuntimeError("no free port for the job")


# built once: is this port held by an active job (one row at most)
_PORT_TAKEN = (select(Job.id).where(Job.port == bindparam("port"),
                                    Job.state.in_(ACTIVE_STATES)).limit(1))


def job_dir(svc: Services, job_id: int) -> Path:
    return Path(svc.config.jobs_dir) / str(job_id)


def log_path(svc: Services, job_id: int) -> Path:
    return job_dir(svc, job_id) / "output.log"


def task_log_pattern(svc: Services, job_id: int) -> Path:
    """A sweep's Slurm output files: one per task (``%a`` = the task's index)."""
    return job_dir(svc, job_id) / "task-%a.log"


def task_log_path(svc: Services, job_id: int, index: int) -> Path:
    return job_dir(svc, job_id) / f"task-{index}.log"


def _should_chown(svc: Services) -> bool:
    return svc.chown if svc.chown is not None else os.geteuid() == 0


def _ids(unix_user: str) -> tuple[int, int]:
    pw = pwd.getpwnam(unix_user)
    return pw.pw_uid, pw.pw_gid


def write_spec(svc: Services, path: Path, spec: RunnerSpec, unix_user: str) -> None:
    """The runner spec: JSON, mode 0600, owned by the job user."""
    data = spec.to_json().encode()
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        if _should_chown(svc):
            os.fchown(fd, *_ids(unix_user))
    finally:
        os.close(fd)
    os.replace(tmp, path)


# The entrypoint runs under bash where the image has it (the documented contract), else under
# the image's POSIX sh (minimal images such as busybox). A fixed string: no user data in it.
ENTRYPOINT_COMMAND = ["/bin/sh", "-c", 'if command -v bash >/dev/null 2>&1; then exec bash "$0"; '
                      'else exec sh "$0"; fi', ig.ENTRYPOINT]


# A workspace runs JupyterLab on the job's $PORT under the portal gateway's path; its credential
# comes in the environment (JUPYTER_TOKEN, passed through: never in an argv). A fixed string.
WORKSPACE_COMMAND = ["/bin/sh", "-c", 'exec jupyter lab --no-browser --ip=0.0.0.0 --port="$PORT" '
                     '--ServerApp.base_url="/workspaces/$SLIPWAY_JOB_ID/lab/" '
                     "--ServerApp.root_dir=/work --ServerApp.allow_origin='*' "
                     "--ServerApp.allow_remote_access=True --ServerApp.open_browser=False"]


def prepare_job(svc: Services, snap: JobSnapshot, token: str, *, mounts=None
                ) -> tuple[Path, RunnerSpec, list[str]]:
    """Create the job dir and runner spec; return (spec path, spec, batch command).
    ``mounts``: the job's bindings when the caller read them already (``data.bindings``)."""
    cfg = svc.config
    d = job_dir(svc, snap.job_id)
    # 0700 from the start (mkdir's mode, not a chmod after): the job's Unix user alone, once
    # chowned; the jobs dir above is traverse-only (0711, portal/private_files.py).
    make_dir(d, PRIVATE_DIR)
    if _should_chown(svc):
        os.chown(d, *_ids(snap.unix_user))
    workdir = d / "work"
    binds, readonly = job_mounts(svc, snap, d, mounts)
    # What the container must see goes in the argv (both runtimes clean the environment); the
    # runner also re-exports these for Apptainer (APPTAINERENV_*), with CUDA_VISIBLE_DEVICES.
    # PORT is passed through from the runner's environment instead: the runner may move the job
    # to another port when this one is taken on the node it lands on.
    env = {"SLIPWAY_JOB_ID": str(snap.job_id), "SLIPWAY_BRANCH": snap.branch,
           "SLIPWAY_COMMIT": snap.commit}
    spec_env = {"PORT": str(snap.port), **env}
    passthrough, command = ("PORT", *shaped_spec.passthrough_for(snap.nodes)), ENTRYPOINT_COMMAND
    if snap.kind == "workspace":
        from ..workspaces import credential
        spec_env[credential.ENV_NAME] = credential.token(cfg.secret_key, snap.job_id)
        passthrough, command = ("PORT", credential.ENV_NAME), WORKSPACE_COMMAND
    argv = ig.container_argv(cfg, svc.catalog, snap.image, str(workdir), command, env,
                             passthrough_extra=passthrough, binds=binds)
    spec = RunnerSpec(
        job_id=snap.job_id,
        repo_url=cfg.repo_url(snap.team, snap.project),
        username=f"job:{snap.job_id}",
        token=token,
        commit=snap.commit,
        branch=snap.branch,
        workdir=str(workdir),
        container_argv=tuple(argv),
        container_runtime=cfg.container_runtime,
        env=spec_env,
        port_min=cfg.port_min,
        port_max=cfg.port_max,
        lfs_threshold_bytes=1024 * 1024,
        grace_seconds=5.0,
        callback_url=cfg.job_events_url(snap.job_id),
        readonly_paths=tuple(readonly),
        output_dir=str(d / "output"),
        author_name="Slipway",
        author_email="slipway@localhost",
        # image, image_digest, gpu_type, gpu_count, gpu_rate
        **trailer_facts.spec_fields(svc, snap.image, snap.gpus),
        **shaped_spec.multinode_fields(snap.nodes, snap.master_port),
    )
    spec_path = d / "spec.json"
    if snap.tasks:   # a sweep: one spec per task, the batch command names them by {task}
        path_arg = shaped_spec.task_specs(
            svc, d, spec, image=snap.image, binds=binds, passthrough=passthrough,
            command=command, base_env=env, tasks=list(snap.tasks),
            uid_gid=_ids(snap.unix_user) if _should_chown(svc) else None,
            write=lambda path, sp: write_spec(svc, path, sp, snap.unix_user))
    else:
        write_spec(svc, spec_path, spec, snap.unix_user)
        path_arg = str(spec_path)
    command = [cfg.node_python, "-m", ig.RUNNER_MODULE, path_arg]
    return spec_path, spec, command


def job_mounts(svc: Services, snap: JobSnapshot, d: Path, mounts=None
               ) -> tuple[list[tuple], list[str]]:
    """The job's binds: its inputs read-only at /input<slot> and its /output (made here, empty
    or a copy of the kept output it continues from), with the gates letting its team in.
    Raises ValueError when a bound version or output is gone since the push."""
    from ..data import bindings, gates, outputs, outputs_fs
    from ..data.store import DataStore
    store = DataStore.for_services(svc)
    if mounts is None:
        with svc.db.session() as s:
            mounts = bindings.mounts_for_job(s, store, snap.job_id)
    if mounts.unkept:   # ended, not kept yet: keep them now and look again
        for src in mounts.unkept:
            outputs.ensure_kept(svc, src)
        with svc.db.session() as s:
            mounts = bindings.mounts_for_job(s, store, snap.job_id)
    if mounts.problems:
        raise ValueError("; ".join(mounts.problems))
    out = d / "output"
    if not out.is_dir() or out.is_symlink():
        copy_from = None
        if snap.continue_from is not None:
            if outputs.ensure_kept(svc, snap.continue_from) != "kept":
                raise ValueError(f"job {snap.continue_from}'s /output is not kept; it cannot be continued")
            copy_from = outputs.kept_dir(svc, snap.team_id, snap.continue_from)
        uid, gid = _ids(snap.unix_user) if _should_chown(svc) else (os.getuid(), os.getgid())
        outputs_fs.make_output(store, out, uid, gid, copy_from, _should_chown(svc))
    if mounts.inputs:   # what it binds lets its team in (nothing bound: nothing to open)
        gates.sync_for_job(svc, mounts.repo_ids, snap.team_id)
    binds = [(path, f"/input{slot}", True) for slot, path in mounts.inputs]
    binds.append((str(out), "/output", False))
    return binds, [path for _slot, path in mounts.inputs]
