"""sbatch's own flags for ``slipway submit``, read into a push's overrides.

``slipway submit --gres=gpu:a4000:2 -t 2:00:00 -c 8 --mem=16G -u alice -A vision job.sh`` —
the flags (and the script's ``#SBATCH`` lines, which the command line overrides, as sbatch does)
become the same overrides ``push_options.parse_push_options`` produces (``gpus`` a GpuRequest,
``time_limit_min``, ``cpus``, ``mem_mb``, ``partition``, ``emergency``, ``image``, ``compute``),
which ``policy.admission.admit`` turns into the job's compute. Who and where: ``--user``/``-u``
(the Slipway user the job runs as), ``--account``/``-A`` (a team, or its Slurm account
``team-NAME``), ``--project`` (Slipway's, default ``submit``).

Refused with a clear message: unknown flags, a GPU request without a type, a time in none of
sbatch's forms, ``--mem`` that is not a size, ``--qos`` other than normal/emergency, a node
range, and ``--array`` other than ``0-N[%M]`` (a spec Slurm would reject says why).
``--array=0-9%2`` → overrides ``array_tasks`` 10, ``max_parallel`` 2; ``--nodes=2`` → ``nodes``
(docs/SHARING.md).
No Flask, no database: plain values in, ``SbatchFlags`` out.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping

from slurm_bridge.admin_records import slurm_minutes
from slurm_bridge.request import GpuRequest

from .. import integrations as ig

#: long flag -> its one-letter sbatch form (None: none). Every flag takes a value.
FLAGS: dict[str, str | None] = {
    "gres": None, "gpus": "G", "time": "t", "cpus-per-task": "c", "mem": None,
    "partition": "p", "qos": "q", "account": "A", "user": "u", "job-name": "J", "nodes": "N",
    "array": "a", "image": None, "compute": None, "project": None,
}
SHORT = {short: long for long, short in FLAGS.items() if short}
KNOWN_TEXT = ("--gres=gpu:TYPE:COUNT (or --gpus/-G TYPE:COUNT), --time/-t, --cpus-per-task/-c, "
              "--mem, --partition/-p, --qos/-q normal|emergency, --account/-A TEAM, --user/-u USER, "
              "--job-name/-J, --nodes/-N N, --array/-a 0-N%M, --image NAME, --compute NAME, "
              "--project NAME")
MAX_ARRAY_INDEX = 1000          # Slurm's default MaxArraySize is 1001: indexes 0..1000
ARRAY_SHAPE = ("Slipway runs arrays as 0-N or 0-N%M (tasks 0..N, at most M at once; each task "
               "reads its SLURM_ARRAY_TASK_ID); write e.g. --array=0-9%2")
_ARRAY_FROM_0 = re.compile(r"^0(?:-(\d{1,9}))?(?:%(\d{1,9}))?$")
QOS_NAMES = ("normal", "emergency")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COMPUTE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ARRAY_ITEM = re.compile(r"^(\d{1,9})(?:-(\d{1,9})(?::(\d{1,9}))?)?$")


@dataclass
class SbatchFlags:
    """What the flags asked: ``overrides`` as a push's; who and where as plain names."""

    overrides: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    account: str | None = None      # a team name, or its Slurm account (``team-NAME``)
    project: str | None = None
    job_name: str | None = None
    problems: list[str] = field(default_factory=list)


def parse_time(text: str) -> int:
    """sbatch's ``--time``: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS -> minutes
    (seconds round up, as Slurm does). Raises ValueError with the forms."""
    t = text.strip()
    if t.lower() in ("unlimited", "infinite", "-1"):
        raise ValueError(f"--time={t}: Slipway jobs need a time limit (at most "
                         f"{ig.MAX_TIME_LIMIT_MIN} minutes, {ig.MAX_TIME_LIMIT_MIN // 1440} days)")
    try:   # Slurm's own time forms, read as slurm_bridge reads Slurm's answers
        minutes = slurm_minutes(t) if t[:1].isdigit() else None
    except ValueError:
        minutes = None
    if minutes is not None:
        if minutes < 1:
            raise ValueError(f"--time={t}: a time limit must be at least 1 minute")
        if minutes > ig.MAX_TIME_LIMIT_MIN:
            raise ValueError(f"--time={t} is {minutes} minutes; a job may run at most "
                             f"{ig.MAX_TIME_LIMIT_MIN} minutes ({ig.MAX_TIME_LIMIT_MIN // 1440} "
                             f"days)")
        return minutes
    raise ValueError(f"cannot read --time={t[:40]!r}; write minutes (90), MM:SS, HH:MM:SS, D-HH, "
                     f"D-HH:MM or D-HH:MM:SS (e.g. 2:00:00 or 1-12)")


def _types(gpu_limits: Mapping[str, int]) -> str:
    return ", ".join(sorted(gpu_limits)) or "none configured"


def parse_gres(text: str, gpu_limits: Mapping[str, int], flag: str = "--gres") -> GpuRequest:
    """``gpu:a4000:2`` -> a4000 x2, ``gpu:a4000`` -> a4000 x1 (Slurm's default count),
    ``none`` -> CPU only. ``gpu:2`` / ``gpu`` (no type) are refused, listing the types;
    ``--gpus``/``-G`` take ``a4000:2`` (no ``gpu:`` prefix). Raises ValueError."""
    t = text.strip().lower()
    if t == ig.NO_GPU:
        return GpuRequest(ig.CPU, 1)
    if "," in t:
        raise ValueError(f"{flag}={text[:60]}: one GPU request per job; write {flag}="
                         f"{'gpu:' if flag == '--gres' else ''}TYPE:COUNT")
    parts = t.split(":")
    if flag == "--gres":
        if parts[0] != "gpu":
            raise ValueError(f"{flag}={text[:60]}: only GPUs can be requested; write "
                             f"--gres=gpu:TYPE:COUNT (types: {_types(gpu_limits)})")
        parts = parts[1:]
    count = parts[-1] if parts and parts[-1].isdigit() else "1"
    example = f"{sorted(gpu_limits)[0] if gpu_limits else 'a4000'}:{count}"
    prefix = "gpu:" if flag == "--gres" else ""
    if not parts or not parts[0] or parts[0].isdigit():
        raise ValueError(f"{flag}={text[:60]} names no GPU type; write {flag}={prefix}TYPE:COUNT, "
                         f"e.g. {flag}={prefix}{example} (types: {_types(gpu_limits)})")
    if len(parts) == 1:
        parts.append("1")
    if len(parts) != 2:
        raise ValueError(f"cannot read {flag}={text[:60]!r}; write {flag}={prefix}TYPE:COUNT, e.g. "
                         f"{flag}={prefix}{example} (types: {_types(gpu_limits)})")
    if gpu_limits and parts[0] not in gpu_limits:
        raise ValueError(f"{flag}={text[:60]}: unknown GPU type {parts[0][:30]!r}; known types: "
                         f"{_types(gpu_limits)}")
    try:
        return GpuRequest(*ig.parse_gpus(":".join(parts), gpu_limits))
    except ig.InvalidRequest as exc:
        raise ValueError(f"{flag}={text[:60]}: {exc}") from None


def array_problem(spec: str) -> str | None:
    """Why Slurm would reject ``--array=spec`` (indexes ``1,3,5-7``, steps ``0-15:4``, a limit
    ``%4``, indexes 0..1000), or None when it is valid."""
    s = spec.strip()
    head, pct, limit = s.partition("%")
    why = None
    if not head:
        why = "it names no index"
    elif pct and not (limit.isdigit() and len(limit) <= 9 and int(limit) >= 1):
        why = f"the limit after % must be a whole number of at least 1, not {limit[:20]!r}"
    else:
        for item in head.split(","):
            m = _ARRAY_ITEM.match(item)
            if not m:
                why = (f"{item[:30]!r} is not an index (N), a range (N-M) or a stepped range "
                       f"(N-M:S)")
                break
            lo, hi, step = int(m.group(1)), m.group(2), m.group(3)
            top = int(hi) if hi is not None else lo
            if top < lo:
                why = f"the range {item} ends before it starts"
            elif step is not None and int(step) < 1:
                why = f"the step in {item} must be at least 1"
            elif top > MAX_ARRAY_INDEX:
                why = (f"index {top} is above the largest allowed, {MAX_ARRAY_INDEX} "
                       f"(Slurm's MaxArraySize is {MAX_ARRAY_INDEX + 1})")
            if why:
                break
    if why is None:
        return None
    return f"invalid --array specification {s[:60]!r}: {why} (Slurm refuses it)"


def _single_line(value: str, flag: str, max_chars: int) -> str:
    if len(value) > max_chars or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{flag}: write one line of at most {max_chars} characters")
    return value


def _nodes(value: str) -> int:
    m = re.match(r"^(\d{1,6})(?:-(\d{1,6}))?$", value.strip())
    if not m:
        raise ValueError(f"cannot read --nodes={value[:30]!r}; write --nodes=N (e.g. --nodes=2)")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if lo < 1 or hi < lo:
        raise ValueError(f"--nodes={value}: write --nodes=N with N at least 1")
    if hi != lo:
        raise ValueError(f"--nodes={value}: Slipway runs a job on an exact number of nodes; "
                         f"write --nodes={lo}")
    return lo


def _array(value: str) -> tuple[int, int | None]:
    """``0-9%2`` → (10 tasks, at most 2 at once). Other valid sbatch specs are refused with the
    shape Slipway runs (its tasks are 0..N: one row each, one results ref each)."""
    bad = array_problem(value)
    if bad:
        raise ValueError(bad)
    m = _ARRAY_FROM_0.match(value.strip())
    if not m:
        raise ValueError(f"--array={value.strip()[:60]}: {ARRAY_SHAPE}")
    return int(m.group(1) or 0) + 1, int(m.group(2)) if m.group(2) else None


def _apply(out: SbatchFlags, name: str, value: str, gpu_limits: Mapping[str, int]) -> None:
    """One flag into ``out`` (a later flag overrides an earlier one, as with sbatch)."""
    ov = out.overrides
    v = value.strip()
    if name in ("gres", "gpus"):
        ov["gpus"] = parse_gres(v, gpu_limits, f"--{name}")
    elif name == "time":
        ov["time_limit_min"] = parse_time(v)
    elif name == "cpus-per-task":
        if not (v.isdigit() and len(v) <= 6 and int(v) >= 1):
            raise ValueError(f"--cpus-per-task={v[:30]}: write a whole number of cores, at least 1")
        ov["cpus"] = int(v)
    elif name == "mem":
        try:
            ov["mem_mb"] = ig.parse_mem(v)
        except ig.InvalidRequest as exc:
            raise ValueError(f"--mem={v[:30]}: {exc}") from None
    elif name == "partition":
        if not _NAME.match(v):
            raise ValueError(f"--partition={v[:40]!r} is not a partition name")
        ov["partition"] = v
    elif name == "qos":
        if v.lower() not in QOS_NAMES:
            raise ValueError(f"--qos={v[:40]}: Slipway's QOS are {' and '.join(QOS_NAMES)} "
                             f"(emergency needs the emergency right)")
        ov["emergency"] = v.lower() == "emergency"
    elif name in ("account", "user", "project"):
        if not _NAME.match(v):
            raise ValueError(f"--{name}={v[:40]!r} is not a {name} name")
        setattr(out, name, v)
    elif name == "job-name":
        out.job_name = _single_line(v, "--job-name", 200)
    elif name == "nodes":
        ov["nodes"] = _nodes(v)
        if ov["nodes"] == 1:
            del ov["nodes"]
    elif name == "array":
        ov["array_tasks"], limit = _array(v)
        ov.pop("max_parallel", None)
        if limit:
            ov["max_parallel"] = limit
    elif name == "image":
        ov["image"] = _single_line(v, "--image", 128)
    elif name == "compute":
        if not _COMPUTE.match(v):
            raise ValueError(f"--compute={v[:40]!r} is not a compute type name (see: slipway "
                             f"compute list)")
        ov["compute"] = v


def _flag_name(token: str) -> tuple[str | None, str | None, bool]:
    """(long name or None when unknown, inline value or None, is a flag at all)."""
    if token.startswith("--") and len(token) > 2:
        name, eq, value = token[2:].partition("=")
        return (name if name in FLAGS else None), (value if eq else None), True
    if token.startswith("-") and len(token) > 1 and token != "-":
        long = SHORT.get(token[1])
        rest = token[2:]
        if rest.startswith("="):
            rest = rest[1:]
        return long, (rest if long and rest else None), True
    return None, None, False


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """sbatch's command line -> (flags, the rest): the rest starts at the first argument that
    is no flag or flag value (the script, ``-`` for standard input) or after ``--``."""
    flags: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            return flags, argv[i + 1:]
        name, inline, is_flag = _flag_name(tok)
        if not is_flag:
            return flags, argv[i:]
        if name is not None and inline is None and i + 1 < len(argv):
            flags += [tok, argv[i + 1]]
            i += 2
            continue
        flags.append(tok)
        i += 1
    return flags, []


def parse_flags(tokens: list[str], gpu_limits: Mapping[str, int]) -> SbatchFlags:
    """sbatch flags (``--time=1:00:00``, ``--time 1:00:00``, ``-t 60``, ``-t60``) -> SbatchFlags;
    every problem is collected (nothing is guessed)."""
    out = SbatchFlags()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name, value, is_flag = _flag_name(tok)
        i += 1
        if not is_flag:
            out.problems.append(f"unexpected argument {tok[:60]!r}: give sbatch flags "
                                f"(--name=value) before the script")
            continue
        if name is None:
            out.problems.append(f"unknown flag {tok.partition('=')[0][:40]!r}; slipway submit "
                                f"takes {KNOWN_TEXT}")
            continue
        if value is None:
            if i >= len(tokens):
                out.problems.append(f"--{name} needs a value")
                continue
            value, i = tokens[i], i + 1
        if not value.strip():
            out.problems.append(f"--{name} needs a value")
            continue
        try:
            _apply(out, name, value, gpu_limits)
        except ValueError as exc:
            out.problems.append(str(exc))
    return out


def script_directives(script: str) -> tuple[list[str], list[str]]:
    """The flags of the script's ``#SBATCH`` lines (sbatch reads them up to the first line that
    is neither a comment nor blank) -> (tokens, problems)."""
    tokens: list[str] = []
    problems: list[str] = []
    for n, line in enumerate(script.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if not stripped.startswith("#SBATCH"):
            continue
        try:
            tokens += shlex.split(stripped[len("#SBATCH"):], comments=True)
        except ValueError as exc:
            problems.append(f"line {n} of the script (#SBATCH): {exc}")
    return tokens, problems


def read_request(script: str, flags: list[str], gpu_limits: Mapping[str, int]) -> SbatchFlags:
    """The script's ``#SBATCH`` lines, then the command line's flags on top."""
    tokens, problems = script_directives(script)
    from_script = parse_flags(tokens, gpu_limits)
    given = parse_flags(flags, gpu_limits)
    merged = SbatchFlags(overrides={**from_script.overrides, **given.overrides},
                         problems=problems + [f"#SBATCH: {p}" for p in from_script.problems]
                         + given.problems)
    for attr in ("user", "account", "project", "job_name"):
        setattr(merged, attr, getattr(given, attr) or getattr(from_script, attr))
    return merged
