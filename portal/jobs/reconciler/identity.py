"""Whose record is it: Slurm records are matched to Slipway jobs by Slurm id AND by name."""
from __future__ import annotations

from ... import integrations as ig


def record_is_job(rec, job_id: int) -> bool:
    """Whether a Slurm record under this job's Slurm id is this job's: Slipway names every job
    ``slipway-<id>`` (``slurm_job_name``). Slurm can give an id out again (a controller that
    took over from an older saved state lost the job and reuses its id; a slurmdbd keeps every
    job ever run under an id): such a record belongs to another job, Slipway's or not, and must
    never be followed or billed as this one. Not judged: a record without a name, or with the
    name slurmdbd gives a job whose completion it heard of before its start ("allocation")."""
    name = getattr(rec, "name", "") or ""
    return name in UNNAMED_RECORDS or name == ig.slurm_job_name(job_id)


#: job names in records that do not (yet) carry the job's own
UNNAMED_RECORDS = frozenset({"", "allocation"})
