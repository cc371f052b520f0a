"""Push options and a job's settings: what a push (or a re-run, or a project's form) asks for.

``git push -o gpus=a6000:1 -o time=2h -o image=pytorch`` → ``parse_push_options`` → overrides of
the project's defaults (``effective_settings``) → ``JobSettings``, checked by ``settings_problems``
(GPU type/count within limits, time limit sane, the image built for the container runtime). The
same checks serve the push hook (``jobs.push``), a re-run (``jobs.rerun``) and a project's
settings (``projects.settings``).

A GPU request is a ``slurm_bridge.request.GpuRequest`` from the push option on: the overrides
hold it under ``gpus``, ``JobSettings.gpus`` gives it back, the submission's snapshot
(``jobs.runner_spec.JobSnapshot``) carries it to Slurm's ``JobRequest``.

CPU-only jobs (``gpus=none``, optional ``cpus=N``, default 1, at most config ``cpu_limit``) are
the pseudo GPU type ``cpu`` with the cores as count: ``JobSettings("cpu", 4, ...)``, stored so in
the job row (``gpu_type`` "cpu", ``gpu_count`` = cores; no migration needed), shown as
``cpu x4``, sent to Slurm with no ``--gres`` and ``--cpus-per-task=4``, billed per core-hour
(config ``cpu_rate``). ``cpus=N`` beside GPUs and ``mem=16G`` (at most config ``mem_limit_mb``)
live in ``JobSettings.cpus`` / ``mem_mb``; they reach a job only where the job row has ``cpus`` /
``mem_mb`` columns (``row_fields``); without them they are refused with a clear message.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from slurm_bridge.request import GpuRequest

from .. import integrations as ig
from ..data import bindings
from ..teams.access import OpError
from ..db import Project
from ..services import Services

PUSH_OPTIONS_HELP = ("compute=NAME (a compute type), "
                     "gpus=TYPE:COUNT (e.g. gpus=a6000:1) or gpus=none (CPU only), cpus=N, mem=16G, "
                     "time=30m|2h|90 (minutes), image=NAME, "
                     "input0..input4=TEAM/DATA:VERSION|job:N (read-only inputs), continue=JOB "
                     "(start from that job's /output), strict=yes (refuse instead of adjusting a request "
                     "down to what is allowed), emergency=yes (holders of the emergency right), "
                     "run=no (update the branch without starting a job), "
                     'sweep="lr=0.1,0.01;bs=32,64" (one task per combination), max-parallel=N, '
                     "nodes=N (one job on N nodes), gpus=a6000-shard:2 (a share of one GPU)")
_TIME_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m?)?$")


@dataclass(frozen=True)
class JobSettings:
    """``gpu_type`` "cpu": a CPU-only job with ``gpu_count`` cores (``cpus`` is then the same)."""

    gpu_type: str
    gpu_count: int
    time_limit_min: int
    image: str
    cpus: int = 1
    mem_mb: int | None = None

    def __post_init__(self) -> None:
        if self.gpu_type == ig.CPU:
            object.__setattr__(self, "cpus", self.gpu_count)

    @property
    def gpus(self) -> GpuRequest:
        """The compute as shown and snapshotted: ``a4000 x2`` or ``cpu x4`` (CPU only)."""
        return GpuRequest(self.gpu_type, self.gpu_count)

    @property
    def cpu_only(self) -> bool:
        return self.gpu_type == ig.CPU

    @property
    def gpu_units(self) -> int:
        """GPUs asked for (0 for a CPU-only job): what GPU caps compare against."""
        return 0 if self.cpu_only else self.gpu_count

    def row_fields(self) -> dict[str, Any]:
        """The job row's compute columns: ``Job(**st.row_fields(), ...)``."""
        return {"gpu_type": self.gpu_type, "gpu_count": self.gpu_count, "image": self.image,
                "time_limit_min": self.time_limit_min, "cpus": self.cpus, "mem_mb": self.mem_mb}


def job_compute(job: Any) -> tuple[int, int | None]:
    """(cores, memory MB or None) of a job row: a CPU-only job's cores are its ``gpu_count``;
    else the row's ``cpus`` (1 unless asked) and ``mem_mb`` (None: Slurm's default)."""
    cpus = job.gpu_count if job.gpu_type == ig.CPU else (job.cpus or 1)
    return cpus, job.mem_mb


def parse_time(text: str) -> int:
    """``90`` / ``90m`` -> 90, ``2h`` -> 120, ``1h30m`` -> 90 (minutes)."""
    t = text.strip().lower()
    m = _TIME_RE.match(t)
    if not t or not m or (m.group(1) is None and m.group(2) is None):
        raise ValueError(f"cannot read time {text!r}; write minutes (90), 30m, 2h or 1h30m")
    minutes = int(m.group(1) or 0) * 60 + int(m.group(2) or 0)
    if minutes < 1:
        raise ValueError("time must be at least 1 minute")
    return minutes


def parse_push_options(options: list[str], gpu_limits: Mapping[str, int] | None = None
                       ) -> tuple[dict[str, Any], list[str]]:
    """-> (overrides {gpus: GpuRequest, time_limit_min, image}, problems). ``gpus=TYPE``
    without a count is refused with a message showing ``TYPE:1``; ``gpu_limits`` names the
    accepted types in messages."""
    overrides: dict[str, Any] = {}
    problems: list[str] = []
    for opt in options:
        opt = opt.strip()
        if not opt:
            continue
        key, sep, value = opt.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if not sep or (not value and not key.startswith("input")):
            problems.append(f"slipway: push option {opt!r} needs a value; known options: {PUSH_OPTIONS_HELP}")
            continue
        if key in ("gpus", "gpu", "gres"):
            try:
                overrides["gpus"] = GpuRequest(*ig.parse_gpus(value, gpu_limits))
            except ig.InvalidRequest as exc:
                problems.append(f"slipway: push option gpus: {exc}")
        elif key in ("cpus", "cpu", "cores"):
            if value.isdigit() and 0 < len(value) <= 6 and int(value) >= 1:
                overrides["cpus"] = int(value)
            else:
                problems.append(f"slipway: push option cpus: write cpus=N (a whole number of cores, "
                                f"at least 1), not {value[:40]!r}")
        elif key in ("mem", "memory"):
            try:
                overrides["mem_mb"] = ig.parse_mem(value)
            except ig.InvalidRequest as exc:
                problems.append(f"slipway: push option mem: {exc}")
        elif key == "time":
            try:
                overrides["time_limit_min"] = parse_time(value)
            except ValueError as exc:
                problems.append(f"slipway: push option time: {exc}")
        elif key == "image":
            overrides["image"] = value
        elif key.startswith("input"):
            try:
                slot = bindings.slot_of(key)
                if slot is None:
                    raise OpError(f"unknown push option {key!r}")
                if value.strip("'\""):
                    bindings.check_text(value)
                overrides.setdefault("inputs", {})[slot] = value.strip("'\"")
            except OpError as exc:
                problems.append(f"slipway: push option {key}: {exc}")
        elif key == "continue":
            if value.isdigit() and 0 < len(value) <= 12:
                overrides["continue"] = int(value)
            else:
                problems.append(f"slipway: push option continue: write continue=JOB (a job number), "
                                f"not {value[:40]!r}")
        elif key == "compute":
            if re.match(r"^[a-z0-9][a-z0-9._-]{0,63}$", value):
                overrides["compute"] = value
            else:
                problems.append(f"slipway: push option compute: {value[:70]!r} is not a compute type "
                                f"name (see: slipway compute list)")
        elif key in ("strict", "emergency"):
            flag = _yes_no(value)
            if flag is None:
                problems.append(f"slipway: push option {key}: write {key}=yes or {key}=no, not "
                                f"{value[:40]!r}")
            else:
                overrides[key] = flag
        elif key == "sweep":
            overrides["sweep"] = value   # read with the config's task limit (jobs.sweeps)
        elif key in ("max-parallel", "max_parallel", "nodes"):
            name = "max_parallel" if key != "nodes" else "nodes"
            if value.isdigit() and 0 < len(value) <= 6 and 1 <= int(value) <= 100_000:
                overrides[name] = int(value)
            else:
                problems.append(f"slipway: push option {key}: write {key}=N (a whole number, at "
                                f"least 1), not {value[:40]!r}")
        elif key == "run":
            if value.lower() in ("no", "false", "0"):
                overrides["run"] = False
            elif value.lower() not in ("yes", "true", "1"):
                problems.append(f"slipway: push option run: write run=no or run=yes, not {value!r}")
        else:
            problems.append(f"slipway: unknown push option {opt!r}; known options: {PUSH_OPTIONS_HELP}")
    return overrides, problems


def _yes_no(value: str) -> bool | None:
    v = value.strip().lower()
    return True if v in ("yes", "true", "1", "on") else False if v in ("no", "false", "0", "off") \
        else None


def effective_settings(project: Project, overrides: Mapping[str, Any]) -> JobSettings:
    """The project's defaults with the push's overrides. A CPU-only job's cores: ``cpus=N``,
    else those of ``gpus=cpu:N``/the project's CPU-only default, else 1 (``gpus=none``)."""
    gpus = overrides.get("gpus") or GpuRequest(project.gpu_type, project.gpu_count)
    count, cpus = gpus.count, overrides.get("cpus")
    if gpus.type == ig.CPU and cpus is not None:
        count = cpus
    return JobSettings(
        gpu_type=gpus.type,
        gpu_count=count,
        time_limit_min=overrides.get("time_limit_min", project.time_limit_min),
        image=overrides.get("image", project.image),
        cpus=cpus if cpus is not None else 1,
        mem_mb=overrides.get("mem_mb"),
    )


def settings_problems(svc: Services, st: JobSettings) -> list[str]:
    problems = []
    cfg = svc.config
    gpu_msg = ig.check_gpus(st.gpu_type, st.gpu_count, cfg.gpu_limits, cpu_limit=cfg.cpu_limit)
    if gpu_msg:
        problems.append(f"slipway: {gpu_msg}")
    elif not st.cpu_only and st.cpus != 1:
        if not 1 <= st.cpus <= cfg.cpu_limit:
            problems.append(f"slipway: a job may ask for 1 to {cfg.cpu_limit} cores (cpus=N); "
                            f"you asked for {st.cpus}")
    if st.mem_mb is not None:
        if not 1 <= st.mem_mb <= cfg.mem_limit_mb:
            problems.append(f"slipway: a job may ask for at most {cfg.mem_limit_mb}M of memory "
                            f"(mem=); you asked for {st.mem_mb}M")
    if not 1 <= st.time_limit_min <= ig.MAX_TIME_LIMIT_MIN:
        problems.append(f"slipway: time limit must be between 1 and {ig.MAX_TIME_LIMIT_MIN} minutes, "
                        f"got {st.time_limit_min}")
    img_msg = svc.catalog.runtime_problem(st.image, svc.config.container_runtime)
    if img_msg:
        problems.append(f"slipway: {img_msg}")
    return problems
