"""Typed job requests and their validation.

``validate(req, limits)`` refuses anything that cannot be passed to Slurm safely or that
breaks the site's GPU limits, with a message a user can act on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

from .errors import InvalidRequest

GpuLimits = Mapping[str, int]
"""GPU type -> most units one job may ask for, e.g. {"a4000": 4, "a6000": 2, "a6000-shard": 8}."""

SHARD = "shard"
SHARD_SUFFIX = "-shard"   # "a6000-shard": shards of one a6000 (a share of that GPU type)
CPU = "cpu"          # not a GPU type: a CPU-only job's compute ("cpu x4" = 4 cores, no GPU)
NO_GPU = "none"      # what a user writes for a CPU-only job (gpus=none)

# Strict patterns for names Slurm stores and prints back.
_GPU_TYPE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
_UNIX_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_SLURM_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,63}$")  # account, qos, partition
_JOB_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+/:=@-]{0,199}$")  # e.g. team/proj:branch
_COMMENT = re.compile(r"^[A-Za-z0-9_.+/:=@-]{0,250}$")
_SIGNAL = re.compile(r"^(?:[BR]:)?(?:SIG)?(?:[A-Z][A-Z0-9]{1,7}|\d{1,2})(?:@\d{1,6})?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

# Variables that would change how the batch shell (or anything it starts) behaves.
RESERVED_ENV = frozenset({
    "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "CDPATH",
    "GLOBIGNORE", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PATH", "HOME", "USER",
    "LOGNAME", "SHELL", "CUDA_VISIBLE_DEVICES",
})

MAX_VALUE_CHARS = 65_536          # one env value or one command word
MAX_SCRIPT_CHARS = 1_000_000      # Slurm's default max_script_size is 4 MB
MAX_TIME_LIMIT_MIN = 60 * 24 * 14
MAX_SIGNAL_LEAD_S = 65535   # sbatch --signal=[B:]SIG@N: N at most 0xffff seconds
MAX_CPUS = 1024
MAX_NICE = 2_147_483_645   # sbatch --nice: +/- 2147483645
MAX_NODES = 64
MAX_ARRAY_INDEX = 99_999   # slurm.conf MaxArraySize must be above it (the template: 100001)
MAX_ARRAY_SPEC_CHARS = 4096


@dataclass(frozen=True)
class GpuRequest:
    """``type`` is a GPU type ("a4000", "a6000"), a share of one ("a6000-shard": shards of an
    a6000) or plain "shard" (shards of whichever GPU has them); ``count`` >= 1."""

    type: str
    count: int

    @property
    def is_shard(self) -> bool:
        """Shards (a share of one GPU, no isolation between the jobs on it), not whole GPUs."""
        return self.type == SHARD or (self.type.endswith(SHARD_SUFFIX)
                                      and len(self.type) > len(SHARD_SUFFIX))

    @property
    def shared_type(self) -> str | None:
        """The GPU type the shards are of ("a6000" for "a6000-shard"); None for whole GPUs and
        for plain "shard" (any GPU that has shards)."""
        if self.type != SHARD and self.is_shard:
            return self.type[:-len(SHARD_SUFFIX)]
        return None

    @property
    def gres(self) -> str:
        """The ``--gres`` value: ``gpu:a4000:2``, or ``shard:2`` for shards (of any type)."""
        if self.is_shard:
            return f"{SHARD}:{self.count}"
        return f"gpu:{self.type}:{self.count}"

    @property
    def unit(self) -> str:
        return "shard" if self.is_shard else "GPU"

    def __str__(self) -> str:
        return f"{self.type} x{self.count}"

    @classmethod
    def parse(cls, text: str) -> "GpuRequest":
        """Parse ``a4000:2``, ``gpu:a4000:2``, ``a4000`` (one GPU), ``a6000-shard:2`` or
        ``shard:2``."""
        parts = text.strip().split(":")
        if parts and parts[0] == "gpu" and len(parts) > 1:
            parts = parts[1:]
        if len(parts) == 1:
            parts.append("1")
        if len(parts) != 2 or not parts[1].isdigit() or not parts[0]:
            raise InvalidRequest(
                f"cannot read GPU request {text!r}; write TYPE:COUNT, e.g. a4000:2")
        return cls(type=parts[0].lower(), count=int(parts[1]))


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    """One batch job. ``command`` is an argv run with ``env`` exported (never via a shell)."""

    name: str
    user: str
    account: str
    command: Sequence[str]
    workdir: str
    output: str
    qos: str = "normal"
    partition: str | None = None
    gpus: GpuRequest | None = None
    cpus: int = 1
    mem_mb: int | None = None
    time_limit_min: int = 60
    env: Mapping[str, str] = field(default_factory=dict)
    requeue: bool = True
    comment: str = "slipway"
    signal: str | None = None   # sbatch --signal, e.g. "B:USR1@120" (the time-limit warning)
    hold: bool = False           # submit held (sbatch --hold)
    nice: int = 0                # sbatch --nice: lowers the job's priority by this much
    array: str | None = None     # a job array (sbatch --array): "0-5", "0-5%2", "0,3,7", "1-9:2"
    nodes: int = 1               # nodes, one task each; --gres and --cpus-per-task are per node

    def __post_init__(self) -> None:
        # Freeze the mutable inputs so a request cannot change after validation.
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))


_ARRAY_PART = re.compile(r"^(\d{1,6})(?:-(\d{1,6})(?::(\d{1,6}))?)?$")


def _array_bitmap(spec: object) -> tuple[bytearray, int | None]:
    """The task indexes of an array spec as a bitmap, and its throttle (``%N``) or None."""
    what = f"job array {spec!r}"
    _check_text("job array", spec, max_chars=MAX_ARRAY_SPEC_CHARS, allow_newline=False)
    text, sep, throttle_text = str(spec).partition("%")
    throttle = None
    if sep:
        if not throttle_text.isdigit() or len(throttle_text) > 6 or int(throttle_text) < 1:
            raise InvalidRequest(
                f"{what}: the most tasks at once (after %) must be a whole number of at least 1")
        throttle = int(throttle_text)
    bits = bytearray(MAX_ARRAY_INDEX + 1)
    for part in text.split(","):
        m = _ARRAY_PART.match(part)
        if not m:
            raise InvalidRequest(
                f"{what} is not allowed: write task indexes like 0-5, 0-5%2, 0,3,7 or 1-9:2")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        step = int(m.group(3)) if m.group(3) is not None else 1
        if last > MAX_ARRAY_INDEX:
            raise InvalidRequest(f"{what}: task indexes go from 0 to {MAX_ARRAY_INDEX}, "
                                 f"not {last}")
        if last < first:
            raise InvalidRequest(f"{what}: the range {part} ends before it starts")
        if step < 1:
            raise InvalidRequest(f"{what}: the step in {part} must be at least 1")
        bits[first:last + 1:step] = b"\x01" * ((last - first) // step + 1)
    return bits, throttle


def array_task_count(spec: str) -> int:
    """How many tasks a job array spec makes: ``0-5%2`` -> 6, ``0,3,7`` -> 3, ``1-9:2`` -> 5
    (an index named twice counts once, as in Slurm). Raises ``InvalidRequest`` for a bad spec."""
    return _array_bitmap(spec)[0].count(1)


def array_throttle(spec: str) -> int | None:
    """The most tasks of the array that run at once (``0-5%2`` -> 2); None when not limited."""
    return _array_bitmap(spec)[1]


def validate_array(spec: object) -> str:
    """Raise ``InvalidRequest`` unless ``spec`` is a job array spec sbatch takes; return it."""
    _array_bitmap(spec)
    return spec  # type: ignore[return-value]


_MEM = re.compile(r"^(\d{1,9})\s*([mgt]i?b?|b)?$")
_MEM_MB = {"m": 1, "g": 1024, "t": 1024 * 1024}


def parse_mem(text: str) -> int:
    """``16G`` -> 16384, ``512M`` / ``512`` -> 512, ``1T`` -> 1048576 (megabytes, as sbatch's
    ``--mem`` reads them: K/M/G/T are powers of 1024). Raises ``InvalidRequest``."""
    m = _MEM.match(str(text).strip().lower())
    if not m or m.group(2) == "b":
        raise InvalidRequest(f"cannot read memory {text!r}; write megabytes (512), 512M or 16G")
    mb = int(m.group(1)) * _MEM_MB[(m.group(2) or "m")[0]]
    if mb < 1:
        raise InvalidRequest("memory must be at least 1M")
    return mb


def _check_text(what: str, value: object, *, max_chars: int = MAX_VALUE_CHARS,
                allow_newline: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be text, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidRequest(f"{what} contains a NUL byte, which cannot be passed to a job")
    if not allow_newline and ("\n" in value or "\r" in value):
        raise InvalidRequest(f"{what} must be a single line")
    if len(value) > max_chars:
        raise InvalidRequest(f"{what} is {len(value)} characters long; at most {max_chars} allowed")
    return value


def _check_pattern(what: str, value: object, pattern: re.Pattern[str], hint: str) -> None:
    _check_text(what, value, max_chars=256, allow_newline=False)
    if not pattern.match(value):  # type: ignore[arg-type]
        raise InvalidRequest(f"{what} {value!r} is not allowed: {hint}")


def _check_path(what: str, value: object) -> None:
    _check_text(what, value, max_chars=4096, allow_newline=False)
    if not value.startswith("/"):  # type: ignore[union-attr]
        raise InvalidRequest(f"{what} must be an absolute path, got {value!r}")


def _check_int(what: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{what} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise InvalidRequest(f"{what} must be between {low} and {high}, got {value}")


def validate_gpus(gpus: GpuRequest, limits: GpuLimits) -> None:
    """Refuse unknown GPU types and counts above the per-job limit."""
    if not isinstance(gpus.type, str) or not _GPU_TYPE.match(gpus.type):
        raise InvalidRequest(f"GPU type {gpus.type!r} is not a valid name")
    if gpus.type not in limits:
        known = ", ".join(sorted(limits)) or "none"
        raise InvalidRequest(f"unknown GPU type {gpus.type!r}; known types: {known}")
    if isinstance(gpus.count, bool) or not isinstance(gpus.count, int) or gpus.count < 1:
        raise InvalidRequest(f"GPU count must be a whole number of at least 1, got {gpus.count!r}")
    most = limits[gpus.type]
    if gpus.count > most:
        raise InvalidRequest(
            f"{gpus.type} allows at most {most} {gpus.unit}s per job; you asked for {gpus.count}")


def validate(req: JobRequest, limits: GpuLimits) -> JobRequest:
    """Raise ``InvalidRequest`` for anything unsafe or over the limits; return ``req``."""
    _check_pattern("job name", req.name, _JOB_NAME,
                   "use letters, digits and . _ + / : = @ - (at most 200, not starting with a symbol)")
    _check_pattern("user", req.user, _UNIX_USER, "not a valid Unix user name")
    _check_pattern("account", req.account, _SLURM_NAME,
                   "use lowercase letters, digits, . _ - (at most 64)")
    _check_pattern("QOS", req.qos, _SLURM_NAME, "use lowercase letters, digits, . _ -")
    if req.partition is not None:
        _check_pattern("partition", req.partition, _SLURM_NAME, "use lowercase letters, digits, . _ -")
    _check_pattern("comment", req.comment, _COMMENT, "use letters, digits and . _ + / : = @ -")
    if req.signal is not None:
        _check_pattern("signal", req.signal, _SIGNAL, "write e.g. USR1@120 or B:TERM@60")
        _, _, lead = req.signal.partition("@")
        if lead and not 0 < int(lead) <= MAX_SIGNAL_LEAD_S:
            raise InvalidRequest(f"signal {req.signal!r}: the time before the limit must be 1 to "
                                 f"{MAX_SIGNAL_LEAD_S} seconds")
    _check_path("working directory", req.workdir)
    _check_path("output path", req.output)
    _check_int("cpus", req.cpus, 1, MAX_CPUS)
    _check_int("time limit (minutes)", req.time_limit_min, 1, MAX_TIME_LIMIT_MIN)
    _check_int("nice", req.nice, 0, MAX_NICE)
    if req.mem_mb is not None:
        _check_int("memory (MB)", req.mem_mb, 1, 16 * 1024 * 1024)
    if req.gpus is not None:
        validate_gpus(req.gpus, limits)
    _check_int("nodes", req.nodes, 1, MAX_NODES)
    if req.array is not None:
        validate_array(req.array)

    if not req.command:
        raise InvalidRequest("command is empty; give the program to run")
    total = 0
    for i, word in enumerate(req.command):
        total += len(_check_text(f"command word {i}", word))
    if not req.command[0]:
        raise InvalidRequest("command word 0 (the program) is empty")
    for key, value in req.env.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise InvalidRequest(
                f"environment variable name {key!r} is not allowed: use letters, digits and _, "
                "not starting with a digit")
        if key in RESERVED_ENV or key.startswith(("SLURM_", "SBATCH_", "BASH_FUNC_")):
            raise InvalidRequest(f"environment variable {key} is reserved and cannot be set")
        total += len(_check_text(f"environment variable {key}", value))
    if total > MAX_SCRIPT_CHARS:
        raise InvalidRequest(
            f"command and environment are {total} characters in all; at most {MAX_SCRIPT_CHARS}")
    return req
