"""The environment the job's container runs in: a minimal environment + the spec's ``env``
(``child_env``), prepared for the container runtime the way ``container_images.runtime.launch_env``
does (``launch_env``; the rule is copied here because the node cannot import that package, and
tests/unit/test_git_gateway_units.py checks the two agree)."""
from __future__ import annotations

import os
import pwd

from .spec import CONTAINER_PASSTHROUGH, CONTAINER_RUNTIMES, RunnerSpec

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


def launch_env(spec: RunnerSpec, base: dict | None = None) -> dict[str, str]:
    """The environment ``container_argv`` is executed in: ``child_env`` prepared for the spec's
    container runtime. Passed through (Apptainer): the runtime's pass-through names, SLIPWAY_*
    and every name of the spec's env (PORT, ...)."""
    env = child_env(spec, base)
    runtime = runtime_of(spec)
    if runtime is None:
        return env
    names = [*spec.passthrough_env, "SLIPWAY_JOB_ID", "SLIPWAY_BRANCH", "SLIPWAY_COMMIT",
             *spec.env]
    return container_launch_env(runtime, env, names)
