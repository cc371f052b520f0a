"""What a new job binds (/input0..4) and continues from (/output), decided at push time.

``plan`` resolves the bindings (a continued job's own, else the project's defaults, then the
push's ``inputN=`` options: ``portal.data.bindings``), checks a ``continue=JOB`` source (a job of
the same team that has ended with its /output kept) and the team's storage quota; ``apply``
records them on the reserved job in the same transaction. Nothing is reserved on a problem.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from ..data import bindings, quota
from ..db import Job, Project, Team
from ..teams.access import OpError
from . import states


@dataclass(frozen=True)
class DataPlan:
    inputs: tuple[bindings.ResolvedInput, ...] = ()
    continue_from: int | None = None


def _continue_source(s, team: Team, job_id: int) -> tuple[Job | None, str | None]:
    row = s.execute(select(Job, Project.team_id).join(Project, Job.project_id == Project.id)
                    .where(Job.id == job_id)).first()
    if row is None or row[1] != team.id:
        return None, f"slipway: continue: there is no job {job_id} in team {team.name}"
    job = row[0]
    if job.state not in states.TERMINAL:
        return None, (f"slipway: continue: job {job_id} is {job.state}; a job is continued once it "
                      "has ended")
    if job.output_state not in ("kept", "open", "keeping"):
        why = {"deleted": "was deleted", "none": "was never made (the job did not start)"}
        return None, f"slipway: continue: job {job_id}'s /output {why.get(job.output_state, 'is gone')}"
    return job, None


def plan(s, project: Project, team: Team, overrides: dict, continue_from: int | None = None,
         inputs_from: int | None = None) -> tuple[DataPlan, list[str]]:
    """``continue_from`` (or the push option ``continue``): that job's bindings and /output;
    ``inputs_from`` (a rerun): that job's bindings; else the project's defaults. Then the push's
    ``inputN=`` options."""
    source_id = overrides.get("continue", continue_from)
    base = bindings.labels_of(s, inputs_from) if inputs_from is not None else None
    if source_id is not None:
        src, msg = _continue_source(s, team, source_id)
        if msg:
            return DataPlan(), [msg]
        base = bindings.labels_of(s, src.id)
    wanted = bindings.wanted_for_job(project, overrides.get("inputs"), base)
    resolved, problems = bindings.resolve(s, team, wanted)
    try:
        quota.refuse_if_over(s, team)
    except OpError as exc:
        problems.append(f"slipway: {exc}")
    return DataPlan(tuple(resolved), source_id), problems


def apply(s, job_id: int, data: DataPlan) -> None:
    bindings.record(s, job_id, list(data.inputs))
    if data.continue_from is not None:
        s.get(Job, job_id).continue_from = data.continue_from
