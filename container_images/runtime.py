"""Container command builders: the argv that runs a job's command inside its image.

    container_argv(runtime, image_path, workdir, command, env, binds=(), gpus=False) -> list[str]

Only argv lists come out of here, never a string for a shell. Everything that cannot be passed
safely is refused with ``InvalidContainerSpec`` before any argv is produced.

The job sees: its workdir at ``/work`` (read-write, the initial directory), ``/input0``..``/input4``
and ``/output`` from ``binds`` (see ``job_binds``), exactly the ``env`` it was given (values
verbatim), ``CUDA_VISIBLE_DEVICES`` from the environment the argv is executed in (Slurm sets it
on the node), and nothing else of the host environment.

Run the argv as the job's Unix user with ``env=launch_env(runtime, os.environ)`` (it supplies
``$USER``, which ch-run requires, and carries the pass-through variables across Apptainer's
``--cleanenv``). The image must be readable by that user.

apptainer (production)::

    apptainer exec [--nv] --cleanenv --containall --bind W:/work --pwd /work
        [--bind SRC:DST:ro | --bind SRC:DST]... IMAGE.sif [/usr/bin/env K=V...] CMD...

  The env goes through ``/usr/bin/env`` inside the container, not ``--env``: Apptainer's
  ``--env`` is a pflag string map (a value with one ``=`` has its ``"`` trimmed; with more it is
  CSV-parsed and split at commas) and Apptainer shell-evaluates escaped ``$`` in it, so values
  would not arrive verbatim. ``--cleanenv`` drops CUDA_VISIBLE_DEVICES; ``launch_env`` re-exports
  it as ``APPTAINERENV_CUDA_VISIBLE_DEVICES``, which Apptainer passes through.

charliecloud (this machine; ch-run 0.31 on a directory or SquashFS image)::

    ch-run --unset-env=GLOB... --env-no-expand --set-env=PATH='...' --set-env=HOME='/tmp'
        [--set-env=K='V']... --private-tmp --bind=W:/work [--bind=SRC:DST]... --cd=/work
        IMAGE_DIR -- CMD...

  * ``--unset-env`` globs match every variable name except the pass-through names (ch-run has no
    "keep" option; ``--unset-env='*'`` when there is nothing to keep).
  * ``--env-no-expand`` stops ch-run expanding ``$X`` in values; ch-run strips one pair of single
    quotes around a value, so every value is wrapped in ``'...'`` and arrives verbatim.
  * ch-run 0.31 has no read-only bind, so the argv binds ``Bind(read_only=True)`` plainly and the
    node runner makes it read-only: it starts ch-run through ``git_gateway.node.readonly``, which
    enters a new user+mount namespace (uid/gid mapped to themselves) and bind-mounts each such
    source onto itself read-only (the spec's ``readonly_paths``), so writes to /input0..4 fail
    with "Read-only file system". Where user namespaces are off it warns and runs anyway: stage
    inputs not writable by the job user (root-owned 0444 files, 0555 dirs). The image itself is
    mounted read-only; ``DST`` must already exist in it (``build`` makes /work, /output,
    /input0../input4 and /mnt/0../mnt/9).
  * /dev, /proc, /sys are the host's (GPUs are visible as /dev/nvidia*; Slurm's device cgroup
    limits access); the driver libraries must be in the image (``ch-fromhost --nvidia``).
"""
from __future__ import annotations

import os
import posixpath
import pwd
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

__all__ = [
    "Bind",
    "CONTAINER_WORKDIR",
    "DEFAULT_PATH",
    "INPUT_MOUNTS",
    "InvalidContainerSpec",
    "OUTPUT_MOUNT",
    "PASSTHROUGH_ENV",
    "RUNTIMES",
    "container_argv",
    "job_binds",
    "launch_env",
]

RUNTIMES = ("apptainer", "charliecloud")
CONTAINER_WORKDIR = "/work"
INPUT_MOUNTS = tuple(f"/input{i}" for i in range(5))
OUTPUT_MOUNT = "/output"
#: Host variables that reach the container from the environment the argv runs in.
PASSTHROUGH_ENV: tuple[str, ...] = ("CUDA_VISIBLE_DEVICES",)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: HOME for ch-run jobs: the private /tmp, so dot-files never land in /work (committed back).
CHARLIECLOUD_HOME = "/tmp"

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]")


class InvalidContainerSpec(ValueError):
    """The container spec cannot be turned into a safe argv; the message says what to fix."""


@dataclass(frozen=True)
class Bind:
    """Host ``src`` mounted at container ``dst`` (read-only unless ``read_only=False``)."""

    src: str
    dst: str
    read_only: bool = True


def job_binds(inputs: Sequence[str] = (), output: str | None = None) -> tuple[Bind, ...]:
    """Slipway's standard binds: inputs at /input0../input4 (read-only), output at /output."""
    inputs = list(inputs)
    if len(inputs) > len(INPUT_MOUNTS):
        raise InvalidContainerSpec(
            f"at most {len(INPUT_MOUNTS)} inputs can be mounted (/input0../input4); got {len(inputs)}"
        )
    binds = [Bind(src, dst, True) for src, dst in zip(inputs, INPUT_MOUNTS)]
    if output is not None:
        binds.append(Bind(output, OUTPUT_MOUNT, False))
    return tuple(binds)


# -- validation -------------------------------------------------------------------------------
def _path(value: object, what: str) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidContainerSpec(f"{what} must be a path string, not {type(value).__name__}")
    s = os.fspath(value)
    if not isinstance(s, str):
        raise InvalidContainerSpec(f"{what} must be a text path")
    if not s:
        raise InvalidContainerSpec(f"{what} is empty")
    if "\x00" in s:
        raise InvalidContainerSpec(f"{what} contains a NUL byte")
    if _CTRL_RE.search(s):
        raise InvalidContainerSpec(f"{what} {s!r} contains a control character")
    if not s.startswith("/"):
        raise InvalidContainerSpec(f"{what} {s!r} must be an absolute path")
    return s


def _bind_path(value: object, what: str) -> str:
    s = _path(value, what)
    for ch in (":", ","):
        if ch in s:
            raise InvalidContainerSpec(
                f"{what} {s!r} contains {ch!r}, which the runtimes use to separate bind specs; "
                f"rename or symlink the directory"
            )
    return s


def _container_dst(value: object, what: str) -> str:
    s = _bind_path(value, what)
    norm = posixpath.normpath(s)
    if norm in ("/", "//"):
        raise InvalidContainerSpec(f"{what} cannot be '/'")
    if norm != s.rstrip("/") or "//" in s or ".." in s.split("/"):
        raise InvalidContainerSpec(f"{what} {s!r} must be a normalised absolute path (no '.', '..', '//')")
    return norm


def _env_items(env: Mapping[str, str] | None) -> list[tuple[str, str]]:
    if env is None:
        return []
    if not isinstance(env, Mapping):
        raise InvalidContainerSpec(f"env must be a mapping of NAME -> value, not {type(env).__name__}")
    items = []
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
            raise InvalidContainerSpec(
                f"environment variable name {name!r} is not allowed (use [A-Za-z_][A-Za-z0-9_]*)"
            )
        if not isinstance(value, str):
            raise InvalidContainerSpec(f"environment variable {name} must be a string, not {type(value).__name__}")
        if "\x00" in value:
            raise InvalidContainerSpec(f"environment variable {name} contains a NUL byte")
        items.append((name, value))
    return sorted(items)


def _command(command: object) -> list[str]:
    if isinstance(command, (str, bytes)) or not isinstance(command, Iterable):
        raise InvalidContainerSpec("command must be a list of arguments (argv), not a string")
    argv = list(command)
    if not argv:
        raise InvalidContainerSpec("command is empty")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise InvalidContainerSpec(f"command[{i}] must be a string, not {type(arg).__name__}")
        if "\x00" in arg:
            raise InvalidContainerSpec(f"command[{i}] contains a NUL byte")
    if not argv[0]:
        raise InvalidContainerSpec("command[0] (the program) is empty")
    if argv[0].startswith("-") or "=" in argv[0]:
        raise InvalidContainerSpec(
            f"command[0] {argv[0]!r} must name a program (no leading '-', no '=')"
        )
    return argv


def _binds(binds: Iterable[Bind | tuple]) -> list[Bind]:
    out: list[Bind] = []
    seen = {CONTAINER_WORKDIR}
    for i, b in enumerate(binds or ()):
        if isinstance(b, tuple) and not isinstance(b, Bind) and len(b) in (2, 3):
            b = Bind(*b)
        if not isinstance(b, Bind):
            raise InvalidContainerSpec(f"binds[{i}] must be a Bind(src, dst, read_only)")
        if not isinstance(b.read_only, bool):
            raise InvalidContainerSpec(f"binds[{i}].read_only must be True or False")
        src = _bind_path(b.src, f"bind source binds[{i}]")
        dst = _container_dst(b.dst, f"bind destination binds[{i}]")
        if dst in seen:
            raise InvalidContainerSpec(
                f"bind destination {dst} is used twice" + (" (it is the job's workdir)" if dst == CONTAINER_WORKDIR else "")
            )
        seen.add(dst)
        out.append(Bind(src, dst, b.read_only))
    return out


def _passthrough(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(names))
    for n in names:
        if not isinstance(n, str) or not _ENV_NAME_RE.match(n):
            raise InvalidContainerSpec(f"pass-through variable name {n!r} is not allowed")
    return names


# -- ch-run's --unset-env globs that keep a set of names ----------------------------------------
def unset_globs_except(keep: Iterable[str]) -> list[str]:
    """fnmatch globs matching every variable name except those in ``keep``.

    Walk the trie of the kept names: at each prefix P, ``P[!abc]*`` covers names that leave the
    trie after P, and the bare prefix P (when P itself is not kept) covers the name P. Names only
    use [A-Za-z0-9_], so no glob metacharacter needs escaping.
    """
    keep = sorted(set(keep))
    if not keep:
        return ["*"]
    globs: list[str] = []

    def walk(prefix: str, names: list[str]) -> None:
        children = sorted({n[len(prefix)] for n in names if len(n) > len(prefix)})
        if prefix and prefix not in names:
            globs.append(prefix)
        if children:
            globs.append(f"{prefix}[!{''.join(children)}]*")
        else:  # prefix is a kept name and nothing longer is kept
            globs.append(f"{prefix}?*")
            return
        for c in children:
            walk(prefix + c, [n for n in names if n.startswith(prefix + c)])

    walk("", keep)
    return globs


# -- the public builders ------------------------------------------------------------------------
def container_argv(
    runtime: str,
    image_path: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    command: Sequence[str],
    env: Mapping[str, str] | None,
    binds: Iterable[Bind] = (),
    gpus: bool = False,
    *,
    passthrough: Iterable[str] = PASSTHROUGH_ENV,
    executable: str | None = None,
) -> list[str]:
    """The argv that runs ``command`` in ``image_path`` with ``workdir`` at /work.

    ``runtime`` is ``"apptainer"`` (``image_path`` = a .sif) or ``"charliecloud"``
    (``image_path`` = a directory image from ``container_images/build``, or a .sqfs).
    ``executable`` overrides the program path (default ``apptainer`` / ``ch-run``).
    Raises ``InvalidContainerSpec`` for anything that cannot be passed safely.
    """
    if runtime not in RUNTIMES:
        raise InvalidContainerSpec(f"unknown container runtime {runtime!r}; use one of: {', '.join(RUNTIMES)}")
    image = _path(image_path, "image path")
    wd = _bind_path(workdir, "workdir")
    argv_cmd = _command(command)
    env_items = _env_items(env)
    bind_list = _binds(binds)
    keep = _passthrough(passthrough)
    if not isinstance(gpus, bool):
        raise InvalidContainerSpec("gpus must be True or False")

    if runtime == "apptainer":
        argv = [executable or "apptainer", "exec"]
        if gpus:
            argv.append("--nv")
        argv += ["--cleanenv", "--containall",
                 "--bind", f"{wd}:{CONTAINER_WORKDIR}", "--pwd", CONTAINER_WORKDIR]
        for b in bind_list:
            argv += ["--bind", f"{b.src}:{b.dst}:ro" if b.read_only else f"{b.src}:{b.dst}"]
        argv.append(image)
        if env_items:
            argv += ["/usr/bin/env", *(f"{k}={v}" for k, v in env_items)]
        return argv + argv_cmd

    # charliecloud
    argv = [executable or "ch-run"]
    argv += [f"--unset-env={g}" for g in unset_globs_except(keep)]
    argv.append("--env-no-expand")
    base = {"PATH": DEFAULT_PATH, "HOME": CHARLIECLOUD_HOME}
    for k, v in [*sorted(base.items()), *env_items]:
        argv.append(f"--set-env={k}='{v}'")  # ch-run strips exactly one pair of outer quotes
    argv.append("--private-tmp")
    argv.append(f"--bind={wd}:{CONTAINER_WORKDIR}")
    for b in bind_list:
        argv.append(f"--bind={b.src}:{b.dst}")  # read-only: the runner's namespace step (module doc)
    argv += [f"--cd={CONTAINER_WORKDIR}", image, "--", *argv_cmd]
    return argv


def launch_env(
    runtime: str,
    environ: Mapping[str, str] | None = None,
    passthrough: Iterable[str] = PASSTHROUGH_ENV,
) -> dict[str, str]:
    """The environment to execute ``container_argv`` in (as the job user, on the node).

    Starts from ``environ`` (default ``os.environ``: Slurm's job environment), makes sure ``USER``
    is set (ch-run refuses to start without it) and, for Apptainer, re-exports each pass-through
    variable as ``APPTAINERENV_<NAME>`` so it survives ``--cleanenv``.

    The node-side runner (``git_gateway.node.container_env.container_launch_env``) applies this
    same rule -- it cannot import this package on the node -- to the job's CUDA_VISIBLE_DEVICES,
    PORT and SLIPWAY_* variables; tests/unit/test_git_gateway_units.py keeps the two equal.
    """
    if runtime not in RUNTIMES:
        raise InvalidContainerSpec(f"unknown container runtime {runtime!r}; use one of: {', '.join(RUNTIMES)}")
    out = dict(os.environ if environ is None else environ)
    if not out.get("USER"):
        try:
            out["USER"] = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            out["USER"] = str(os.getuid())
    if runtime == "apptainer":
        for name in _passthrough(passthrough):
            if name in out:
                out[f"APPTAINERENV_{name}"] = out[name]
    return out
