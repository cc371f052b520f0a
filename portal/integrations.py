"""Every use of the sibling packages (slurm_bridge, git_gateway, container_images, accounting)
goes through the small functions in this file or through the adapters behind the ports
(``portal/ports.py``, ``portal/adapters/``: Slurm jobs and accounts, git repositories, the image
catalog), so the wiring can be adjusted in one place.

The rest of ``portal`` never imports those packages directly (except for types and errors
re-exported here).
"""
from __future__ import annotations

import functools
import hashlib
import os
import secrets
import shutil
import threading
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from accounting import gates as _gates
from accounting.billing import AttemptRecord
from accounting.biller import Biller, TickResult
from accounting.entries import Adjustment, Deposit, GpuCharge, GpuLine, StorageCharge
from accounting.money import MoneyError, parse_deposit, require_money
from accounting.rates import Rates
from accounting.storage import StorageBilled, StorageSample  # noqa: F401  (re-exported)
from slurm_bridge.errors import (ControllerUnavailable, InvalidRequest, JobNotFound,  # noqa: F401
                                 SlurmBridgeError, SlurmRejected)
from slurm_bridge.request import (CPU, MAX_TIME_LIMIT_MIN, NO_GPU, GpuRequest,  # noqa: F401
                                  JobRequest, parse_mem, validate_gpus)

from .config import Config

ENTRYPOINT = "slipway-entrypoint.sh"

# ------------------------------------------------------------------------------ slurm_bridge


def check_gpus(gpu_type: str, count: int, limits: Mapping[str, int], *,
               cpu_limit: int = 16) -> str | None:
    """None when ``count`` GPUs of ``gpu_type`` are allowed, else the bridge's message. A
    CPU-only job (``gpu_type`` ``cpu``, ``count`` = cores) may ask for 1..``cpu_limit`` cores."""
    if gpu_type == CPU:
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= cpu_limit:
            return f"a CPU-only job may ask for 1 to {cpu_limit} cores (cpus=N); you asked for {count}"
        return None
    try:
        validate_gpus(GpuRequest(gpu_type, count), limits)
    except InvalidRequest as exc:
        return str(exc)
    return None


def parse_gpus(text: str, limits: Mapping[str, int] | None = None) -> tuple[str, int]:
    """``a6000:1`` -> ("a6000", 1); raises InvalidRequest with a readable message that suggests
    only what is accepted (the types of ``limits`` when given). The count is required: ``a4000``
    alone is refused with a message showing ``a4000:1`` (loose input is refused, not guessed).
    No GPU: ``none`` -> ("cpu", 1) and ``cpu:4`` -> ("cpu", 4) (a CPU-only job's cores; a
    ``cpus=N`` push option sets them too)."""
    if text.strip().lower() == NO_GPU:
        return CPU, 1
    parts = text.strip().split(":")
    if len(parts) > 1 and parts[0].lower() == "gpu":
        parts = parts[1:]
    known = sorted(limits or {})
    example = f"{known[0]}:1" if known else "a4000:1"
    types = f" (types: {', '.join(known)})" if known else ""
    if len(parts) == 1 and parts[0].strip():
        if limits and parts[0].strip().lower() not in limits:
            raise InvalidRequest(f"unknown GPU type {parts[0].strip().lower()!r}; known types: "
                                 f"{', '.join(known)} (write TYPE:COUNT, e.g. {example})")
        raise InvalidRequest(f"GPU request {text.strip()!r} has no count; write "
                             f"{parts[0].strip().lower()}:1 for one GPU (TYPE:COUNT{types})")
    try:
        g = GpuRequest.parse(text)
    except InvalidRequest:
        raise InvalidRequest(f"cannot read GPU request {text!r}; write TYPE:COUNT, e.g. "
                             f"{example}{types}, or none for a CPU-only job") from None
    return g.type, g.count


def job_request(*, job_id: int, user: str, account: str, gpu_type: str, gpu_count: int,
                time_limit_min: int, workdir: str, output: str, command: Sequence[str],
                env: Mapping[str, str], partition: str | None, cpus: int | None = None,
                mem_mb: int | None = None, qos: str = "normal", nice: int = 0,
                array: str | None = None, nodes: int = 1) -> JobRequest:
    """A Slipway job's Slurm request. ``gpu_type`` ``cpu`` is a CPU-only job: no GPU (no
    ``--gres``), ``gpu_count`` cores; else ``cpus`` cores (default 1) beside the GPUs.
    ``mem_mb``: ``--mem`` (None: Slurm's default)."""
    cpu_only = gpu_type == CPU
    return JobRequest(
        name=slurm_job_name(job_id),
        user=user,
        account=account,
        qos=qos or "normal",
        **({"nice": nice} if nice else {}),
        partition=partition or None,
        gpus=None if cpu_only else GpuRequest(gpu_type, gpu_count),
        cpus=gpu_count if cpu_only else (cpus or 1),
        mem_mb=mem_mb,
        time_limit_min=time_limit_min,
        workdir=workdir,
        output=output,
        env=dict(env),
        command=list(command),
        requeue=True,
        comment="slipway",
        **({"array": array} if array else {}),
        **({"nodes": nodes} if nodes > 1 else {}),
    )


def slurm_job_name(job_id: int) -> str:
    """Slurm job name of a Slipway job: lets the reconciler adopt a job whose submit reply was lost."""
    return f"slipway-{job_id}"


def job_id_from_slurm_name(name: str) -> int | None:
    if name.startswith("slipway-") and name[8:].isdigit():
        return int(name[8:])
    return None


SUBMIT_ERRORS = (SlurmBridgeError,)

# ------------------------------------------------------------------------------ git_gateway


def branch_problem(name: str) -> str | None:
    """None for a branch name git accepts (``git check-ref-format --branch``) that does not begin
    with '-', else the rule it breaks (``git_gateway.refname``)."""
    from git_gateway.refname import branch_problem as check

    return check(name)


def loads_json_bounded(data: bytes | str, *, max_bytes: int | None = None):
    """``json.loads`` with bounded size and nesting depth; raises ``ValueError`` (a
    ``git_gateway.jsonbody.JsonBodyError``) whose message can be shown as it is."""
    from git_gateway.jsonbody import loads_bounded

    return loads_bounded(data, max_bytes=max_bytes)


HOOK_TEXT_TYPE = "text/x-slipway-hook"


def parse_hook_text(data: bytes) -> tuple[dict, list[str]]:
    """The bash hook's text callback as the JSON form's payload dict, and the problems of its
    input lines; raises ``ValueError`` (``git_gateway.hook_wire.HookWireError``) when malformed."""
    from git_gateway.hook_wire import parse

    return parse(data)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic …`` as the git gateway reads it (``job:<id>`` users included)."""
    from git_gateway.http import parse_basic as parse

    return parse(header)


def principal(name: str, is_job: bool):
    from git_gateway.http import Principal

    return Principal(name=name, is_job=is_job)


def access_denied(message: str = "no access") -> Exception:
    """The exception ``authenticate`` raises for valid credentials without access (git: 404)."""
    from git_gateway.http import AccessDenied

    return AccessDenied(message)


def make_git_app(config: Config, authenticate: Callable[..., Any],
                 hooks: Callable[[dict], tuple[bool, list[str], int]] | None = None):
    """git_gateway's WSGI app serving ``/git/<team>/<project>.git`` (mounted at /git); with
    ``hooks`` the git hooks' callback is answered in this process, on threads of its own
    (``git_gateway.hook_listener``), else at ``config.hook_url``."""
    from git_gateway.http import GitHttpApp

    return GitHttpApp(
        repos_root=str(config.repos_root),
        authenticate=authenticate,
        hook_url=config.hook_url,
        hook_secret=config.hook_secret,
        lfs_root=str(config.lfs_root),
        hooks=hooks,
        gateway_hooks_dir=config.data_dir / "gateway-hooks",   # the pre-receive alone
    )


def validate_name(name: str, what: str) -> str:
    """Team/project names become paths and Slurm account names: one rule for both."""
    from git_gateway import repos

    try:
        return repos.validate_name(name, what)
    except repos.InvalidName as exc:
        raise ValueError(str(exc)) from None


RUNNER_MODULE = "git_gateway.node.runner"


@functools.lru_cache(maxsize=1)
def _runner_sources() -> tuple[Path, tuple[Path, ...], str]:
    """The node program's source files (``git_gateway/node``, standard library only, importing
    nothing else of git_gateway) and their content hash, read once per process (the installed
    package does not change under a running server; a new version means a restart)."""
    import git_gateway.node

    src = Path(git_gateway.node.__file__).parent
    files = tuple(sorted(src.glob("*.py")))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()[:16]
    return src, files, digest


NODE_PACKAGE_STUB = '"""Only the node-side job program (git_gateway.node) is installed here."""\n'


_NODE_INSTALL_LOCK = threading.Lock()


def node_runtime(config: Config) -> Path:
    """Install the node-side job program where job users can import it; return the directory
    to put on PYTHONPATH.

    ``git_gateway.node`` uses only the standard library, so the compute nodes' own python runs
    it; only that subpackage is copied (under a stub ``git_gateway/__init__.py``). The copy lives
    under the data dir (shared with the nodes), world-readable (0755/0644: the one thing there
    besides a job's own directory that job users read), is built privately and opened up before
    it is renamed into place, and is refreshed when the package's files change (a content hash
    names the directory). ``<data_dir>/node`` itself is traverse-only (0711).
    """
    from .private_files import TRAVERSE_ONLY, make_dir

    _src, files, digest = _runner_sources()
    dest = config.data_dir / "node" / digest
    if (dest / "git_gateway" / "node" / "runner.py").exists():
        return dest
    with _NODE_INSTALL_LOCK:  # the first pushes of a new server all arrive here at once
        if (dest / "git_gateway" / "node" / "runner.py").exists():
            return dest
        make_dir(config.data_dir / "node", TRAVERSE_ONLY)
        # private to this call: a name of the process alone was shared by its threads, and one
        # push's clean-up removed the copy another was building (bench_push_concurrent.py)
        tmp = config.data_dir / "node" / f".{digest}.{os.getpid()}.{secrets.token_hex(6)}"
        (tmp / "git_gateway" / "node").mkdir(parents=True)
        (tmp / "git_gateway" / "__init__.py").write_text(NODE_PACKAGE_STUB)
        for p in files:
            shutil.copyfile(p, tmp / "git_gateway" / "node" / p.name)
        for d, _dirs, names in os.walk(tmp):
            os.chmod(d, 0o755)
            for n in names:
                os.chmod(os.path.join(d, n), 0o644)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process installed it first
            shutil.rmtree(tmp, ignore_errors=True)
    return dest

# ------------------------------------------------------------------------- container_images


def image_names(catalog) -> tuple[str, ...]:
    return tuple(catalog.names)


def container_argv(config: Config, catalog, image: str, workdir: str, command: Sequence[str],
                   env: Mapping[str, str], passthrough_extra: Sequence[str] = (),
                   binds: Sequence[Any] = ()) -> list[str]:
    """argv that runs ``command`` in ``image`` with cwd = the checkout (container_images.runtime);
    ``passthrough_extra`` names variables the container takes from the launching environment;
    ``binds``: ``container_images.runtime.Bind(src, dst, read_only)`` values or plain
    ``(src, dst, read_only)`` tuples (inputs read-only at /input0../input4, the output writable
    at /output; read-only for ch-run needs the spec's ``readonly_paths`` too). Bad binds raise
    ``container_images.runtime.InvalidContainerSpec`` (a ValueError)."""
    from container_images import runtime

    if config.container_runtime == "apptainer":
        image_path = catalog.sif_path(image, config.images_root)
    else:
        image_path = catalog.local_path(image, config.images_root)
    return list(runtime.container_argv(config.container_runtime, str(image_path), workdir,
                                       list(command), dict(env), binds=tuple(binds), gpus=True,
                                       passthrough=(*runtime.PASSTHROUGH_ENV, *passthrough_extra)))


# ------------------------------------------------------------------------------- accounting

CanStart = _gates.Decision
_MILL = Decimal("0.001")


def format_usd(amount: Decimal | int | str) -> str:
    """Money as Slipway shows it everywhere (pages, the API's ``*_text``, the CLI): dollars to a
    tenth of a cent, rounded half to even, with at least two decimals — ``$25.00``, ``$0.025``
    (a charge of 0.025 is not ``$0.02``), ``-$3.20``, ``$1,234.567``. The ledger keeps
    micro-dollars and the API's amounts stay exact decimal strings; ``web.common.fmt_usd_micros``
    is this function in integer arithmetic."""
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    mills = require_money(value).quantize(_MILL, rounding="ROUND_HALF_EVEN")
    text = f"{abs(mills):,.3f}"
    if text.endswith("0"):
        text = text[:-1]
    return f"{'-' if mills < 0 else ''}${text}"


def rates(config: Config) -> Rates:
    return Rates(gpu_hourly=dict(config.gpu_rates), storage_gb_month=config.storage_rate,
                 cpu_hourly=config.cpu_rate)


def can_start(balance: Decimal, team: str, minimum: Decimal) -> _gates.Decision:
    return _gates.can_start(balance, team, minimum=minimum)


def must_cut_off(balance: Decimal) -> bool:
    return _gates.must_cut_off(balance)


def must_hold(balance: Decimal, minimum: Decimal) -> bool:
    """A waiting job of a team with ``balance`` must be held: it could not start now."""
    return _gates.must_hold(balance, minimum=minimum)


def hold_message(balance: Decimal, team: str, minimum: Decimal) -> str:
    return _gates.hold_message(balance, team, minimum=minimum)


def cut_off_message(balance: Decimal, team: str) -> str:
    return _gates.cut_off_message(balance, team)


def attempt_record(*, job_id: int, attempt: int, state: str, start: datetime | None,
                   end: datetime | None, elapsed_s: int | None, gpus: Mapping[str, int],
                   team: str, cpus: int = 0, task: int | None = None) -> AttemptRecord:
    """A billing record for one attempt of a Slipway job, keyed by the *Slipway* job id
    (Slurm ids restart when a cluster's state is wiped; ours never repeat); a sweep's task
    ``task`` is billed as ``<job>_<task>`` (docs/SHARING.md).

    A CPU-only job's ``gpus`` is ``{"cpu": cores}`` (its row, when Slurm's record has no GPU);
    ``cpus`` > 0 (AllocTRES ``cpu=``) replaces those cores with the ones Slurm allocated. Cores
    beside GPUs are never billed (``accounting.billing.allocation``)."""
    gpus = {k: v for k, v in gpus.items() if v}
    if set(gpus) <= {CPU} and cpus > 0:
        gpus = {CPU: cpus}
    key = str(job_id) if task is None else f"{job_id}_{task}"   # a sweep's task: <job>_<task>
    return AttemptRecord(job_id=key, attempt=attempt, state=state, start=start, end=end,
                         elapsed_s=elapsed_s, gpus=gpus, account=team)


def ended_attempt_record(r, *, job_id: int, team: str, job_gpus: Mapping[str, int],
                         now: datetime, task: int | None = None) -> AttemptRecord | None:
    """The billing record of one attempt from sacct (``r``: a SacctRecord), or None when the
    attempt never ran (no start, or no node and no time: cancelled while pending).

    An attempt that got a node and ended within the second it started reads ElapsedRaw 0
    (Slurm keeps whole seconds, rounded down); it ran, so it is billed its started minute
    like any other attempt (a job is never free because it was quick)."""
    if r.start is None or (not r.node and not r.elapsed_s):
        return None
    elapsed = r.elapsed_s
    if r.node and elapsed == 0:
        elapsed = 1
    return attempt_record(job_id=job_id, task=task, attempt=r.attempt, state=r.state,
                          start=r.start, end=r.end or now, elapsed_s=elapsed,
                          gpus=billed_gpus(r.gpus, r.shards, job_gpus), team=team)


def billed_gpus(gpus: Mapping[str, int], shards: int, job_gpus: Mapping[str, int]) -> dict[str, int]:
    """What an attempt is billed for: Slurm's GPUs, its shards under the job's shared type
    (``a6000-shard``: Slurm counts every shard as ``gres/shard``), else the job's own row."""
    out = {k: v for k, v in gpus.items() if v and k != "shard"}
    shards = shards or gpus.get("shard", 0)
    if shards:
        name = next((k for k in job_gpus if k.endswith("-shard")), "shard")
        out[name] = shards
    return out or dict(job_gpus)


def make_biller(store, config: Config) -> Biller:
    return Biller(store, rates(config))


def storage_sample(team: str, resource: str, size_bytes: int, created_at: datetime) -> StorageSample:
    return StorageSample(team=team, resource=resource, size_bytes=size_bytes, created_at=created_at)


__all__ = [
    "Adjustment", "Deposit", "GpuCharge", "GpuLine", "StorageCharge", "MoneyError", "format_usd",
    "parse_deposit", "TickResult", "ControllerUnavailable", "InvalidRequest", "SlurmRejected",
    "JobNotFound", "MAX_TIME_LIMIT_MIN",
]
