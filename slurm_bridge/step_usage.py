"""Running jobs' CPU and memory from Slurm's own accounting of their steps (``sstat``).

``sstat --allsteps --parsable2 --noheader --noconvert -j 12,13 --format=JobID,TRESUsageInTot,TRESUsageInMax``
prints one line per RUNNING step (recorded from the live cluster, Slurm 22.05,
``JobAcctGatherType=jobacct_gather/linux``)::

    12.batch|cpu=00:00:07,energy=0,fs/disk=52352,mem=11216K,pages=0,vmem=18316K|cpu=00:00:07,...,mem=318304K,...

* ``TRESUsageInTot``: ``cpu=`` the CPU time the step's tasks used so far (summed over tasks and
  nodes), ``mem=`` their resident memory NOW (summed);
* ``TRESUsageInMax``: ``mem=`` the highest resident memory one task reached (Slurm samples it
  every ``JobAcctGatherFrequency`` seconds).
* GPU utilisation: on nodes whose Slurm reads NVIDIA's NVML (``gpu/nvml``, ``AutoDetect=nvml``
  in gres.conf: what ``nvidia-smi`` shows), the TRES strings also hold ``gres/gpuutil=`` (percent)
  and ``gres/gpumem=``; nodes without it (the local cluster's fake GPUs) report nothing, and
  ``gpu_util_percent`` stays None: never a made-up number.

A job array's id asks for every running task: each task answers under its OWN job id
(``13.batch`` for task ``12_1``). A job that has ended (or never ran) has no line; sstat says
"couldn't get steps for job N" on stderr and still exits 0, so it is simply absent.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from .errors import ControllerUnavailable, SlurmRejected, is_unavailable, slurm_text
from .runner import CommandResult

__all__ = ["SSTAT_FIELDS", "StepUsage", "JobUsage", "parse_sstat", "parse_cpu_time",
           "parse_size", "sstat_argv", "query"]

SSTAT_FIELDS = ("JobID", "TRESUsageInTot", "TRESUsageInMax")
SSTAT_MAX_IDS = 5000   # job ids per ``sstat -j``: one argv string must stay under 128 KiB
_CPU_TIME = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)\Z")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)\Z", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


@dataclass(frozen=True)
class StepUsage:
    """One running step of a job: ``step`` is ``batch``, ``extern`` or a number (an srun)."""

    step: str
    cpu_seconds: float              # CPU time used so far by the step's tasks
    rss_bytes: int                  # their resident memory now
    max_rss_bytes: int              # its peak as far as known: the most one task held
    #                                 (Slurm's own samples), or all its tasks now if more
    gpu_util_percent: float | None = None   # gres/gpuutil where nodes report it (NVML)


@dataclass(frozen=True)
class JobUsage:
    """A job's running steps, as ``sstat`` saw them in one call."""

    job_id: int
    steps: tuple[StepUsage, ...]

    @property
    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds for s in self.steps)

    @property
    def rss_bytes(self) -> int:
        return sum(s.rss_bytes for s in self.steps)

    @property
    def max_rss_bytes(self) -> int:
        """The highest peak of its running steps (``StepUsage.max_rss_bytes``)."""
        return max((s.max_rss_bytes for s in self.steps), default=0)

    @property
    def gpu_util_percent(self) -> float | None:
        """Summed over steps (like CPU: 200 = two GPUs busy); None when no step reports it."""
        known = [s.gpu_util_percent for s in self.steps if s.gpu_util_percent is not None]
        return sum(known) if known else None


def parse_cpu_time(text: str) -> float | None:
    """Slurm's durations: ``00:00:07``, ``1-02:03:04``, ``02:03.456`` (MM:SS.mmm) -> seconds."""
    m = _CPU_TIME.match(text.strip())
    if not m:
        return None
    days, first, second, rest = m.groups()
    if first is None:   # MM:SS[.mmm]
        hours, minutes = 0, int(second)
    else:
        hours, minutes = int(first), int(second)
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + float(rest)


def parse_size(text: str) -> int | None:
    """``318304K`` / ``1.50G`` / ``512`` (bytes) -> bytes (powers of 1024, as Slurm prints)."""
    m = _SIZE.match(text.strip())
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _tres(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if eq:
            out[key.strip()] = value.strip()
    return out


def parse_sstat(text: str, delimiter: str = "|") -> dict[int, JobUsage]:
    """Lines of ``sstat --parsable2 --noheader --format=<SSTAT_FIELDS>`` -> each job's running
    steps, by job id. Lines that are not a step of a job (a header, a warning) are skipped."""
    steps: dict[int, dict[str, StepUsage]] = {}   # a step asked for twice is one step
    for line in text.splitlines():
        fields = line.split(delimiter)
        if len(fields) < len(SSTAT_FIELDS):
            continue
        job_text, _, step = fields[0].strip().partition(".")
        if "_" in job_text:   # "12_1" where a Slurm prints the array form
            continue
        if not job_text.isdigit() or not step:
            continue
        tot, peak = _tres(fields[1]), _tres(fields[2])
        cpu = parse_cpu_time(tot.get("cpu", ""))
        if cpu is None:
            continue
        rss = parse_size(tot.get("mem", "")) or 0
        util = tot.get("gres/gpuutil")
        try:
            gpu = float(util) if util not in (None, "") else None
        except ValueError:
            gpu = None
        steps.setdefault(int(job_text), {})[step] = StepUsage(
            step=step, cpu_seconds=cpu, rss_bytes=rss,
            max_rss_bytes=max(parse_size(peak.get("mem", "")) or 0, rss),
            gpu_util_percent=gpu)
    return {job_id: JobUsage(job_id, tuple(found.values())) for job_id, found in steps.items()}


def sstat_argv(job_ids: Sequence[int]) -> list[str]:
    """sstat has no ``--delimiter``: ``|`` it is (JobID and TRES strings hold no free text)."""
    return ["sstat", "--allsteps", "--parsable2", "--noheader", "--noconvert",
            "--format=" + ",".join(SSTAT_FIELDS), "-j", ",".join(map(str, job_ids))]


def query(run: Callable[[Sequence[str]], CommandResult],
          job_ids: Iterable[int]) -> dict[int, JobUsage]:
    """ONE ``sstat`` for every job in ``job_ids`` (one per ``SSTAT_MAX_IDS`` ids), through
    ``run`` (``CliBackend.run``: a timeout or a controller that does not answer raises there)."""
    ids = sorted(set(job_ids))
    found: dict[int, JobUsage] = {}
    for i in range(0, len(ids), SSTAT_MAX_IDS):
        argv = sstat_argv(ids[i:i + SSTAT_MAX_IDS])
        res = run(argv)
        if is_unavailable(res.stderr):   # never read "no answer" as "nothing running"
            raise ControllerUnavailable(f"Slurm could not answer sstat: {slurm_text(res.stderr)}")
        if res.rc != 0:
            text = slurm_text(res.stderr) or f"exit {res.rc}"
            raise SlurmRejected(f"sstat failed: {text}", slurm_message=slurm_text(res.stderr),
                                argv=tuple(argv))
        found.update(parse_sstat(res.stdout))
    return found
