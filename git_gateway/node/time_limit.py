"""The time-limit warning on the node (docs/FAULTS.md, "2. Time limit").

Slipway submits every job with ``--signal=B:USR1@<lead>``: Slurm sends SIGUSR1 to the batch
step -- this runner -- ``lead`` seconds before the job's time limit (up to 60 s earlier: Slurm
looks at time limits every 30 s). The portal puts the job's time limit and the lead in the batch
environment (``SLIPWAY_TIME_LIMIT_S``, ``SLIPWAY_TIME_WARNING_S``); without them a SIGUSR1 is only
forwarded to the entrypoint, as any other signal.

On the warning the runner (``runner.Runner``):

1. asks Slurm when the job ends (``squeue -o %e``, epoch seconds; when Slurm does not answer: the
   attempt's start + the time limit), and forwards SIGUSR1 to the entrypoint's process group (its
   cue to checkpoint);
2. lets it run until ``stop_at`` = the end - ``reserve`` (half the lead, at least the TERM grace
   + ``MIN_PUSH_S``), then stops it as a cancel does: SIGTERM, ``grace_seconds``, SIGKILL;
3. commits and pushes every changed file, with pushes retried until ``PUSH_MARGIN_S`` before
   the end;
4. ends the job as what it is, a job that reached its time limit: it lowers its own time limit
   to the minutes it has run (``scontrol update JobId=.. TimeLimit=..``: a user may lower the
   limit of their own job), so Slurm ends it as TIMEOUT at its next time-limit check (within
   30 s) rather than at the old limit, and sacct (billing) and the portal ("time limit
   reached") say so. Where scontrol fails the runner waits for the old limit instead.

An entrypoint that exits 0 by itself after the warning (it checkpointed and stopped, or it was
done anyway) ended as it chose: the runner pushes its files and exits 0, as without a warning.
Standard library and this folder only.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from .events import say

WARNING_SIGNAL = signal.SIGUSR1          # what Slurm sends, and what the entrypoint gets
ENV_LIMIT = "SLIPWAY_TIME_LIMIT_S"      # the job's time limit, seconds
ENV_WARNING = "SLIPWAY_TIME_WARNING_S"  # the lead of --signal=B:USR1@<lead>, seconds
#: The commit+push gets at least this long between the entrypoint's SIGKILL and the end.
MIN_PUSH_S = 10.0
#: Pushes stop being retried this long before the job's end (Slurm's SIGTERM).
PUSH_MARGIN_S = 2.0
#: How long a Slurm command from the node may take.
SLURM_CALL_S = 10.0
#: After lowering the limit, how long past the old end the runner waits for Slurm's SIGTERM
#: before it exits by itself (Slurm's time-limit check runs every 30 s; KillWait follows).
WAIT_PAST_END_S = 90.0


@dataclass(frozen=True)
class WarningPlan:
    """What the runner knows when the warning comes (times: ``time.monotonic()``)."""

    lead_s: float          # the --signal lead the job was submitted with
    end: float             # when Slurm ends the job (its time limit)
    stop_at: float         # when the entrypoint gets SIGTERM
    push_deadline: float   # pushes are retried until then
    end_source: str        # "slurm" (squeue) or "estimate" (start + limit)

    def describe(self, now: float) -> str:
        return (f"time limit in {max(0.0, self.end - now):.0f} s ({self.end_source}); "
                f"the entrypoint is stopped in {max(0.0, self.stop_at - now):.0f} s, then its "
                f"files are pushed")


def configured(environ=None) -> tuple[float, float] | None:
    """(time limit s, lead s) from the batch environment; None when the job was not submitted
    with a warning (or the values are unreadable: then SIGUSR1 is only forwarded)."""
    environ = os.environ if environ is None else environ
    try:
        limit = float(environ[ENV_LIMIT])
        lead = float(environ[ENV_WARNING])
    except (KeyError, ValueError):
        return None
    if not (math.isfinite(limit) and math.isfinite(lead)) or limit <= 0 or lead <= 0:
        return None
    return limit, lead


def reserve_s(lead_s: float, grace_s: float) -> float:
    """Seconds before the end the entrypoint is stopped: half the lead for the TERM grace and
    the push, at least ``grace_s`` + ``MIN_PUSH_S``."""
    return max(lead_s / 2.0, grace_s + MIN_PUSH_S)


def plan(*, now: float, end: float, lead_s: float, grace_s: float,
         end_source: str = "slurm") -> WarningPlan:
    """The warning's schedule: stop at ``end - reserve`` (not before ``now``), push until
    ``PUSH_MARGIN_S`` before the end (at least ``MIN_PUSH_S`` from the stop's KILL when the
    warning came late: Slurm's TERM path still pushes what is left)."""
    stop_at = max(now, end - reserve_s(lead_s, grace_s))
    push_deadline = max(end - PUSH_MARGIN_S, stop_at + grace_s + MIN_PUSH_S / 2)
    return WarningPlan(lead_s=lead_s, end=end, stop_at=stop_at, push_deadline=push_deadline,
                    end_source=end_source)


def slurm_program(srun: str, name: str) -> str:
    """Slurm's ``name`` beside ``srun`` when that is a path (the spec's), else by name."""
    if os.sep in srun:
        return os.path.join(os.path.dirname(srun), name)
    return name


def slurm_end_epoch(job_id: str, squeue: str, run=subprocess.run) -> float | None:
    """When Slurm ends job ``job_id`` (epoch seconds, ``squeue -o %e`` with
    SLURM_TIME_FORMAT=%s); None when Slurm does not answer or has no end time."""
    env = {**os.environ, "SLURM_TIME_FORMAT": "%s"}
    try:
        out = run([squeue, "--noheader", f"--jobs={job_id}", "--format=%e"], env=env,
                  capture_output=True, text=True, timeout=SLURM_CALL_S)
    except (OSError, subprocess.SubprocessError) as e:
        say(f"could not ask Slurm when the job ends: {e}")
        return None
    text = (out.stdout or "").strip()
    if out.returncode != 0 or not text.isdigit():
        why = (out.stderr or "").strip() or text or f"status {out.returncode}"
        say(f"could not ask Slurm when the job ends: {why[:200]}")
        return None
    return float(text)


def warning_at(*, now: float, now_epoch: float, start_epoch: float, limit_s: float,
               lead_s: float, grace_s: float, job_id: str | None, squeue: str,
               run=subprocess.run) -> WarningPlan:
    """The plan for a warning received at ``now`` (monotonic) / ``now_epoch`` (wall clock):
    the end from Slurm when it answers, else ``start_epoch + limit_s``."""
    end_epoch, source = None, "estimate"
    if job_id:
        end_epoch = slurm_end_epoch(job_id, squeue, run=run)
        source = "slurm" if end_epoch is not None else source
    if end_epoch is None:
        end_epoch = start_epoch + limit_s
    return plan(now=now, end=now + (end_epoch - now_epoch), lead_s=lead_s, grace_s=grace_s,
                end_source=source)


def end_as_timeout(job_id: str | None, scontrol: str, ran_s: float,
                   run=subprocess.run) -> bool:
    """Lower the job's time limit to the whole minutes it has run, so that Slurm ends it as
    TIMEOUT at its next time-limit check. -> whether Slurm took it."""
    if not job_id:
        return False
    minutes = max(0, int(ran_s // 60))
    try:
        out = run([scontrol, "update", f"JobId={job_id}", f"TimeLimit={minutes}"],
                  capture_output=True, text=True, timeout=SLURM_CALL_S)
    except (OSError, subprocess.SubprocessError) as e:
        say(f"could not end the job at its time limit now ({e}); waiting for Slurm's limit")
        return False
    if out.returncode != 0:
        why = (out.stderr or out.stdout or "").strip() or f"status {out.returncode}"
        say(f"could not end the job at its time limit now ({why[:200]}); waiting for Slurm's "
            f"limit")
        return False
    say(f"time limit lowered to {minutes} min (the time the job ran): Slurm ends it as "
        f"TIMEOUT within 30 s")
    return True


def wait_for_end(stopped, until: float, clock=time.monotonic, step: float = 0.5) -> bool:
    """Wait until ``stopped()`` (Slurm's SIGTERM came) or ``until``. -> whether it came."""
    while not stopped():
        left = until - clock()
        if left <= 0:
            return False
        time.sleep(min(step, left))
    return True
