"""The runner's spec: the JSON file the portal writes for one job (docs/ARCHITECTURE.md, "Node-side
runner spec"), read and checked (``RunnerSpec.load`` / ``from_dict``; a bad one is a SpecError)."""
from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field

from . import gitops, lfs_track, pushing, trailers
from .events import say

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Mirrors container_images.runtime.PASSTHROUGH_ENV (this program cannot import that package on
#: the node; tests/unit/test_git_gateway_units.py checks the two agree).
CONTAINER_PASSTHROUGH = ("CUDA_VISIBLE_DEVICES",)
#: What a multi-node job's container gets from ``git_gateway.node.rank`` (one set per node): the
#: portal adds these names to the container's pass-through list (docs/SHARING.md).
RANK_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK",
            "NNODES", "GPUS_PER_NODE")
#: What a sweep task's container gets from Slurm's environment when present (passed through by
#: ``container_env.launch_env``; the portal adds them to the pass-through list too).
TASK_ENV = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID")
#: The most nodes one job may span (``nodes``).
MAX_NODES = 64
#: The placeholder of a sweep's spec path, replaced by ``$SLURM_ARRAY_TASK_ID``.
TASK_PLACEHOLDER = "{task}"
RESULTS_PREFIX = "refs/heads/results/"
CONTAINER_RUNTIMES = ("apptainer", "charliecloud")
#: At most this many inputs (/input0../input4) are bound read-only into a job's container.
MAX_READONLY_PATHS = 5
#: The range a job may be moved to when its spec names none (specs written before port_min /
#: port_max existed; the portal's own defaults).
PORT_RANGE = (10000, 65535)


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class RunnerSpec:
    job_id: int
    repo_url: str
    username: str
    token: str
    commit: str
    branch: str
    workdir: str
    container_argv: tuple[str, ...]
    callback_url: str | None = None
    env: dict = field(default_factory=dict)
    lfs_threshold_bytes: int = lfs_track.DEFAULT_LFS_THRESHOLD
    grace_seconds: float = 5.0
    author_name: str = "Slipway"
    author_email: str = "slipway@localhost"
    container_runtime: str | None = None
    passthrough_env: tuple[str, ...] = CONTAINER_PASSTHROUGH
    push_retry_seconds: float = pushing.DEFAULT_PUSH_RETRY_SECONDS
    stop_push_seconds: float = 30.0
    requeue_push_seconds: float = 20.0
    port_min: int = 10000
    port_max: int = 65535
    # facts for the result commits' trailers (git_gateway.node.trailers); None: unknown
    image: str | None = None
    image_digest: str | None = None
    gpu_type: str | None = None
    gpu_count: int | None = None
    gpu_rate: str | None = None          # dollars per GPU-hour, a decimal string
    # host paths the container binds that it must see read-only (its /input0../input4; for
    # ch-run the runner mounts them read-only, git_gateway.node.readonly), and the host path of
    # its writable /output (checked before the entrypoint starts). Both already in the argv.
    readonly_paths: tuple[str, ...] = ()
    output_dir: str | None = None
    # a sweep's task (docs/SHARING.md, "Sweeps"): its index, the ref its results go to (instead
    # of results/<branch>/<job>, everywhere), and whether the runner pushes the branch (a task
    # never does: Slipway merges every task's results when the sweep ends)
    task_id: int | None = None
    results_ref: str | None = None
    push_branch: bool = True
    # a multi-node job ("Multi-node jobs"): how many nodes, the rendezvous port the portal
    # picked (MASTER_PORT), and the srun that starts one container per node
    nodes: int = 1
    master_port: int | None = None
    srun: str = "srun"

    @classmethod
    def from_dict(cls, d: dict) -> RunnerSpec:
        try:
            job_id = int(d["job_id"])
            argv = d["container_argv"]
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise SpecError("container_argv must be a non-empty list of strings")
            env = d.get("env") or {}
            if not isinstance(env, dict):
                raise SpecError("env must be an object")
            for k, v in env.items():
                if not _ENV_NAME.fullmatch(str(k)) or not isinstance(v, str) or "\0" in v:
                    raise SpecError(f"bad env entry {k!r}")
            commit = str(d["commit"])
            if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
                raise SpecError("commit must be a full hex object id")
            workdir = str(d["workdir"])
            if not os.path.isabs(workdir):
                raise SpecError("workdir must be absolute")
            runtime = d.get("container_runtime") or None
            if runtime is not None and runtime not in CONTAINER_RUNTIMES:
                raise SpecError(f"container_runtime must be one of {', '.join(CONTAINER_RUNTIMES)}"
                                f", not {runtime!r}")
            passthrough = d.get("passthrough_env", CONTAINER_PASSTHROUGH)
            if not isinstance(passthrough, (list, tuple)) or not all(
                    isinstance(n, str) and _ENV_NAME.fullmatch(n) for n in passthrough):
                raise SpecError("passthrough_env must be a list of variable names")
            times = {}
            for key, default in (("push_retry_seconds", pushing.DEFAULT_PUSH_RETRY_SECONDS),
                                 ("stop_push_seconds", 30.0), ("requeue_push_seconds", 20.0)):
                times[key] = float(d.get(key, default))
                if not 0 <= times[key] <= 3600:
                    raise SpecError(f"{key} must be between 0 and 3600 seconds")
            ports = {}
            for key, default in (("port_min", PORT_RANGE[0]), ("port_max", PORT_RANGE[1])):
                raw = d.get(key, default)
                if isinstance(raw, bool) or not isinstance(raw, int):
                    raise SpecError(f"{key} must be an integer port number, not {raw!r}")
                if not 1 <= raw <= 65535:
                    raise SpecError(f"{key} must be between 1 and 65535, not {raw}")
                ports[key] = raw
            if ports["port_min"] > ports["port_max"]:
                raise SpecError(f"port_min ({ports['port_min']}) is above port_max "
                                f"({ports['port_max']})")
            facts = _trailer_facts(d)
            binds = _bind_paths(d)
            shape = _shape_fields(d)
            return cls(job_id=job_id, repo_url=str(d["repo_url"]), username=str(d["username"]),
                       token=str(d["token"]), commit=commit, branch=str(d["branch"]),
                       workdir=workdir, container_argv=tuple(argv),
                       callback_url=d.get("callback_url") or None, env=dict(env),
                       lfs_threshold_bytes=int(d.get("lfs_threshold_bytes",
                                                     lfs_track.DEFAULT_LFS_THRESHOLD)),
                       grace_seconds=float(d.get("grace_seconds", 5)),
                       author_name=str(d.get("author_name") or "Slipway"),
                       author_email=str(d.get("author_email") or "slipway@localhost"),
                       container_runtime=runtime, passthrough_env=tuple(passthrough), **times,
                       **ports, **facts, **binds, **shape)
        except KeyError as e:
            raise SpecError(f"spec is missing {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, SpecError):
                raise
            raise SpecError(str(e)) from None

    def to_dict(self) -> dict:
        """The JSON object ``from_dict`` reads back (the portal writes it: one contract)."""
        d = asdict(self)
        d["container_argv"] = list(self.container_argv)
        d["passthrough_env"] = list(self.passthrough_env)
        d["readonly_paths"] = list(self.readonly_paths)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str) -> RunnerSpec:
        st = os.stat(path)
        if st.st_mode & 0o077:
            say(f"warning: {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                f"it holds a token and should be 0600")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def _whole(d: dict, key: str, default, low: int, high: int) -> int | None:
    raw = d.get(key, default)
    if raw is None and default is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(f"{key} must be a whole number, not {raw!r}")
    if not low <= raw <= high:
        raise SpecError(f"{key} must be between {low} and {high}, not {raw}")
    return raw


def _shape_fields(d: dict) -> dict:
    """The sweep-task and multi-node fields (docs/SHARING.md), checked; absent: a plain job."""
    task_id = _whole(d, "task_id", None, 0, 10**9)
    ref = d.get("results_ref")
    if ref is not None:
        if not isinstance(ref, str) or not ref.startswith(RESULTS_PREFIX) \
                or len(ref) == len(RESULTS_PREFIX):
            raise SpecError(f"results_ref must be a full ref under {RESULTS_PREFIX}, "
                            f"not {ref!r}")
        try:
            gitops.validate_branch(ref[len("refs/heads/"):])
        except gitops.InvalidBranch:
            raise SpecError(f"results_ref {ref!r} is not a valid ref name") from None
    push_branch = d.get("push_branch", True)
    if not isinstance(push_branch, bool):
        raise SpecError(f"push_branch must be true or false, not {push_branch!r}")
    nodes = _whole(d, "nodes", 1, 1, MAX_NODES)
    master_port = _whole(d, "master_port", None, 1, 65535)
    srun = d.get("srun", "srun")
    if not isinstance(srun, str) or not srun.strip() or "\0" in srun:
        raise SpecError(f"srun must be a program name or path, not {srun!r}")
    if nodes > 1 and task_id is not None:
        raise SpecError("a sweep task (task_id) runs on one node: nodes must be 1")
    return {"task_id": task_id, "results_ref": ref, "push_branch": push_branch,
            "nodes": nodes, "master_port": master_port, "srun": srun}


def resolve_spec_path(path: str, environ=None) -> str:
    """A sweep's spec path: ``{task}`` replaced by ``$SLURM_ARRAY_TASK_ID`` (digits only; a
    SpecError says what is wrong). A path without ``{task}`` is returned unchanged."""
    if TASK_PLACEHOLDER not in path:
        return path
    environ = os.environ if environ is None else environ
    task = environ.get("SLURM_ARRAY_TASK_ID")
    if task is None:
        raise SpecError(f"the spec path {path} names {TASK_PLACEHOLDER} but "
                        f"SLURM_ARRAY_TASK_ID is not set (not a Slurm array task)")
    if not (task.isascii() and task.isdigit()):
        raise SpecError(f"SLURM_ARRAY_TASK_ID must be digits, not {task!r}")
    return path.replace(TASK_PLACEHOLDER, str(int(task)))


def _trailer_facts(d: dict) -> dict:
    """The spec's optional facts for the trailers, checked (a wrong type is a SpecError)."""
    out = {}
    for key in ("image", "image_digest", "gpu_type"):
        value = d.get(key)
        if value is not None and not isinstance(value, str):
            raise SpecError(f"{key} must be a string, not {value!r}")
        out[key] = value or None
    count = d.get("gpu_count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise SpecError(f"gpu_count must be a whole number >= 0, not {count!r}")
    out["gpu_count"] = count
    rate = d.get("gpu_rate")
    if rate is not None and (not isinstance(rate, str) or trailers.parse_rate(rate) is None):
        raise SpecError(f"gpu_rate must be a decimal string such as \"0.50\", not {rate!r}")
    out["gpu_rate"] = rate
    return out


def _host_path(value: object, what: str) -> str:
    """An absolute, normalised host path that can go into a bind spec (``SRC:DST``)."""
    if not isinstance(value, str):
        raise SpecError(f"{what} must be a path string, not {value!r}")
    if not value.startswith("/"):
        raise SpecError(f"{what} {value!r} must be an absolute path")
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise SpecError(f"{what} {value!r} contains a NUL, newline or other control character")
    for ch in (":", ","):
        if ch in value:
            raise SpecError(f"{what} {value!r} contains {ch!r}, which separates bind specs")
    if os.path.normpath(value) != value or value.startswith("//"):
        raise SpecError(f"{what} {value!r} must be a normalised path (no '.', '..', '//', "
                        f"trailing '/')")
    if value == "/":
        raise SpecError(f"{what} cannot be '/'")
    return value


def _bind_paths(d: dict) -> dict:
    """The spec's ``readonly_paths`` and ``output_dir``, checked."""
    raw = d.get("readonly_paths") or []
    if not isinstance(raw, (list, tuple)):
        raise SpecError(f"readonly_paths must be a list of absolute paths, not {raw!r}")
    if len(raw) > MAX_READONLY_PATHS:
        raise SpecError(f"readonly_paths holds {len(raw)} paths; at most {MAX_READONLY_PATHS} "
                        f"inputs (/input0../input4) can be bound")
    paths = tuple(_host_path(p, f"readonly_paths[{i}]") for i, p in enumerate(raw))
    output = d.get("output_dir")
    if output is not None:
        output = _host_path(output, "output_dir")
    return {"readonly_paths": paths, "output_dir": output}
