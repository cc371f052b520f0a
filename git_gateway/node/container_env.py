"""The environment the job's container runs in: a minimal environment + the spec's ``env``
(``child_env``), prepared for the container runtime the way ``container_images.runtime.launch_env``
does (``launch_env``; the rule is copied here because the node cannot import that package, and
tests/unit/test_git_gateway_units.py checks the two agree), and the command that runs it
(``container_command``: the spec's argv, through ``readonly`` for ch-run with read-only inputs)."""
from __future__ import annotations

import os
import pwd

from . import readonly
from .spec import CONTAINER_PASSTHROUGH, CONTAINER_RUNTIMES, TASK_ENV, RunnerSpec

_PASS_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "HOME", "TMPDIR",
             "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES",
             "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
_PASS_PREFIX = ("SLURM_",)
_RUNTIME_PROGRAMS = {"apptainer": "apptainer", "singularity": "apptainer",
                     "ch-run": "charliecloud"}


def child_env(spec: RunnerSpec, base: dict | None = None) -> dict[str, str]:
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items()
           if k in _PASS_ENV or any(k.startswith(p) for p in _PASS_PREFIX)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update({"PYTHONUNBUFFERED": "1", "SLIPWAY_JOB_ID": str(spec.job_id),
                "SLIPWAY_BRANCH": spec.branch, "SLIPWAY_COMMIT": spec.commit})
    env.update(spec.env)
    return env


def runtime_of(spec: RunnerSpec) -> str | None:
    """The container runtime that ``container_argv`` runs (None: a plain host command)."""
    if spec.container_runtime:
        return spec.container_runtime
    return _RUNTIME_PROGRAMS.get(os.path.basename(spec.container_argv[0]))


def container_launch_env(runtime: str, environ: dict, passthrough=CONTAINER_PASSTHROUGH
                         ) -> dict[str, str]:
    """Same rule as ``container_images.runtime.launch_env`` (kept equal by a unit test): ``USER``
    set (ch-run refuses to start without it); for Apptainer each pass-through variable present
    is re-exported as ``APPTAINERENV_<NAME>``, which ``--cleanenv`` lets through."""
    if runtime not in CONTAINER_RUNTIMES:
        raise ValueError(f"unknown container runtime {runtime!r}")
    out = dict(environ)
    if not out.get("USER"):
        try:
            out["USER"] = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            out["USER"] = str(os.getuid())
    if runtime == "apptainer":
        for name in dict.fromkeys(passthrough):
            if name in out:
                out[f"APPTAINERENV_{name}"] = out[name]
    return out


def launch_env(spec: RunnerSpec, base: dict | None = None,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``container_argv`` is executed in: ``child_env`` prepared for the spec's
    container runtime, plus ``extra`` (a multi-node rank's RANK, MASTER_ADDR, ...). Passed
    through (Apptainer): the runtime's pass-through names, SLIPWAY_*, every name of the spec's
    env (PORT, ...), a sweep task's SLURM_ARRAY_TASK_ID/SLURM_ARRAY_JOB_ID (``TASK_ENV``, from
    ``base`` when set there) and every name of ``extra``."""
    base = os.environ if base is None else base
    env = child_env(spec, base)
    env.update({k: base[k] for k in TASK_ENV if k in base})
    env.update(extra or {})
    runtime = runtime_of(spec)
    if runtime is None:
        return env
    names = [*spec.passthrough_env, "SLIPWAY_JOB_ID", "SLIPWAY_BRANCH", "SLIPWAY_COMMIT",
             *spec.env, *TASK_ENV, *(extra or {})]
    return container_launch_env(runtime, env, names)


def container_command(spec: RunnerSpec) -> list[str]:
    """``container_argv``; for ch-run with read-only inputs, through the namespace wrapper
    (git_gateway.node.readonly: Apptainer's argv has its own ``:ro`` binds)."""
    argv = list(spec.container_argv)
    if spec.readonly_paths and runtime_of(spec) == "charliecloud":
        return readonly.wrapper_argv(spec.readonly_paths, argv)
    return argv


def bind_problem(spec: RunnerSpec) -> str | None:
    """Why the job's /output or inputs cannot be used on this node (None: they can): the output
    directory must be a directory this user can write, each input readable."""
    out = spec.output_dir
    if out is not None:
        if not os.path.isdir(out):
            return (f"its /output directory {out} does not exist on this node" if not
                    os.path.lexists(out) else f"its /output {out} is not a directory")
        if not os.access(out, os.W_OK | os.X_OK):
            return f"its /output directory {out} is not writable by this user (uid {os.getuid()})"
    for path in spec.readonly_paths:
        if not os.path.exists(path):
            return f"its input {path} does not exist on this node"
        need = os.R_OK | (os.X_OK if os.path.isdir(path) else 0)
        if not os.access(path, need):
            return f"its input {path} is not readable by this user (uid {os.getuid()})"
    return None
