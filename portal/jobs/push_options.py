"""Push options and a job's settings: what a push (or a re-run, or a project's form) asks for.

``git push -o gpus=a6000:1 -o time=2h -o image=pytorch`` → ``parse_push_options`` → overrides of
the project's defaults (``effective_settings``) → ``JobSettings``, checked by ``settings_problems``
(GPU type/count within limits, time limit sane, the image built for the container runtime). The
same checks serve the push hook (``jobs.push``), a re-run (``jobs.rerun``) and a project's
settings (``projects.settings``).

A GPU request is a ``slurm_bridge.request.GpuRequest`` from the push option on: the overrides
hold it under ``gpus``, ``JobSettings.gpus`` gives it back, the submission's snapshot
(``jobs.runner_spec.JobSnapshot``) carries it to Slurm's ``JobRequest``.
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

PUSH_OPTIONS_HELP = ("gpus=TYPE:COUNT (e.g. gpus=a6000:1), time=30m|2h|90 (minutes), image=NAME, "
                     "input0..input4=TEAM/DATA:VERSION|job:N (read-only inputs), continue=JOB "
                     "(start from that job's /output), run=no (update the branch without starting a job)")
_TIME_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m?)?$")


@dataclass(frozen=True)
class JobSettings:
    gpu_type: str
    gpu_count: int
    time_limit_min: int
    image: str

    @property
    def gpus(self) -> GpuRequest:
        return GpuRequest(self.gpu_type, self.gpu_count)


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
        elif key == "run":
            if value.lower() in ("no", "false", "0"):
                overrides["run"] = False
            elif value.lower() not in ("yes", "true", "1"):
                problems.append(f"slipway: push option run: write run=no or run=yes, not {value!r}")
        else:
            problems.append(f"slipway: unknown push option {opt!r}; known options: {PUSH_OPTIONS_HELP}")
    return overrides, problems


def effective_settings(project: Project, overrides: Mapping[str, Any]) -> JobSettings:
    gpus = overrides.get("gpus") or GpuRequest(project.gpu_type, project.gpu_count)
    return JobSettings(
        gpu_type=gpus.type,
        gpu_count=gpus.count,
        time_limit_min=overrides.get("time_limit_min", project.time_limit_min),
        image=overrides.get("image", project.image),
    )


def settings_problems(svc: Services, st: JobSettings) -> list[str]:
    problems = []
    gpu_msg = ig.check_gpus(st.gpu_type, st.gpu_count, svc.config.gpu_limits)
    if gpu_msg:
        problems.append(f"slipway: {gpu_msg}")
    if not 1 <= st.time_limit_min <= ig.MAX_TIME_LIMIT_MIN:
        problems.append(f"slipway: time limit must be between 1 and {ig.MAX_TIME_LIMIT_MIN} minutes, "
                        f"got {st.time_limit_min}")
    img_msg = svc.catalog.runtime_problem(st.image, svc.config.container_runtime)
    if img_msg:
        problems.append(f"slipway: {img_msg}")
    return problems
