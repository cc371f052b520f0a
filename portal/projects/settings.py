"""A project's settings as typed in a form, a JSON body or the CLI: parsed and checked.

``--gpus none`` makes the project's jobs CPU-only (1 core; ``--gpus cpu:4`` or ``cpus=4``: 4
cores), stored as GPU type ``cpu`` with the cores as count (``jobs.push_options``)."""
from __future__ import annotations

import re

from .. import integrations as ig
from ..inputs import _json_type_problems
from ..jobs import push_options
from ..policy import compute
from ..services import Services
from ..teams.access import OpError

_DIGITS = re.compile(r"[0-9]{1,6}")


def parse_settings(svc: Services, *, gpus: str | None = None, gpu_type: str | None = None,
                   gpu_count=None, image: str | None = None, time_text=None,
                   base: push_options.JobSettings | None = None,
                   from_json: bool = False, cpus=None) -> tuple[push_options.JobSettings | None, list[str]]:
    """Form/JSON values -> JobSettings validated with the same rules as the CLI and the push hook
    (``push_options.settings_problems``: ``check_gpus``, time limit bounds, the image's build for the runtime).
    ``from_json``: the values came from a JSON body and must have the right JSON types."""
    if from_json:
        problems = _json_type_problems({"gpus": gpus, "gpu_type": gpu_type, "gpu_count": gpu_count,
                                        "image": image, "time": time_text})
        if problems:
            return None, problems
    problems: list[str] = []
    g_type = base.gpu_type if base else None
    g_count = base.gpu_count if base else 1
    minutes = base.time_limit_min if base else svc.config.default_time_limit
    img = base.image if base else svc.config.default_image
    try:
        if gpus:
            g_type, g_count = ig.parse_gpus(str(gpus), svc.config.gpu_limits)
        else:
            if gpu_type:
                g_type = str(gpu_type)
                if g_type.strip().lower() in (ig.NO_GPU, ig.CPU):   # a form's "none": CPU only
                    g_type = ig.CPU
            if gpu_count not in (None, ""):
                if isinstance(gpu_count, int) and not isinstance(gpu_count, bool):
                    g_count = gpu_count
                elif isinstance(gpu_count, str) and _DIGITS.fullmatch(gpu_count.strip()):
                    g_count = int(gpu_count)
                else:  # never guessed: not True, 1.9 or "1.9"
                    problems.append(f"GPU count must be a whole number, got {gpu_count!r:.40}")
    except (ig.InvalidRequest, ValueError) as exc:
        problems.append(str(exc))
    if cpus not in (None, ""):
        if isinstance(cpus, int) and not isinstance(cpus, bool) or \
                isinstance(cpus, str) and _DIGITS.fullmatch(cpus.strip()):
            if g_type != ig.CPU:
                problems.append("cpus is for CPU-only projects: give --gpus none with it")
            g_count = int(cpus)
        else:
            problems.append(f"cpus must be a whole number of cores, got {cpus!r:.40}")
    if g_type is None:
        g_type = "a4000"
    if time_text not in (None, ""):
        try:
            minutes = int(time_text) if isinstance(time_text, int) and not isinstance(time_text, bool) \
                else push_options.parse_time(str(time_text))
        except ValueError as exc:
            problems.append(str(exc))
    if image:
        img = str(image)
    if problems:
        return None, problems
    st = push_options.JobSettings(g_type, g_count, minutes, img)
    problems = [p.removeprefix("slipway: ") for p in push_options.settings_problems(svc, st)]
    return (None, problems) if problems else (st, [])


def check_compute_type(s, value) -> str | None:
    """A project's default compute type as typed: a defined compute type's name
    (``policy.compute.get``), or empty text to clear it (None is returned then).
    An unknown name is refused with the names that are known."""
    if not isinstance(value, str):
        raise OpError(f"compute type must be a name (text), not {value!r:.40}")
    name = value.strip()
    if not name:
        return None
    if len(name) > 64 or compute.get(s, name) is None:
        raise OpError(compute.unknown_message(s, name))
    return name
