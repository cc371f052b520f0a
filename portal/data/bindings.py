"""Input bindings: what a job sees at /input0../input4 (read-only).

Written as push options (``-o input0=vision/cifar-100:2``, ``-o input1=job:42``), as a project's
defaults (``{"input0": "cifar-100:latest"}``) or copied from the job a continue starts from.
``TEAM/NAME:N`` names a data version (``NAME`` alone: the job's team; no ``:N`` or ``:latest``:
the newest version, resolved now and recorded); ``job:N`` the kept /output of an earlier job of
the same team. Resolution refuses, with one message each, what does not exist and what the
job's team may not read -- in the same words, so nothing about another team leaks.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from ..db import ACTIVE_STATES, DataRepo, DataVersion, Job, JobInput, Project, Team
from ..teams.access import OpError
from .access import team_may_bind
from .names import INPUT_SLOTS, parse_version, split_ref

_SLOT_RE = re.compile(r"input([0-9]+)")
_JOB_RE = re.compile(r"job:([0-9]{1,12})")


@dataclass(frozen=True)
class ResolvedInput:
    slot: int
    label: str                      # "vision/cifar-100:2" or "job:42"
    version_id: int | None = None
    repo_id: int | None = None
    repo_team_id: int | None = None
    number: int | None = None
    source_job_id: int | None = None


def slot_of(key: str) -> int | None:
    """``input3`` → 3; other keys → None. ``input7`` raises (there are five inputs)."""
    m = _SLOT_RE.fullmatch(key.strip().lower())
    if not m:
        return None
    slot = int(m.group(1))
    if slot >= INPUT_SLOTS:
        raise OpError(f"{key}: a job has five inputs, input0 .. input{INPUT_SLOTS - 1}")
    return slot


def check_text(text: str) -> str:
    """The syntax of one binding (no database): ``job:N`` or ``[TEAM/]NAME[:V]``."""
    t = (text or "").strip()
    if _JOB_RE.fullmatch(t):
        return t
    ref, _, ver = t.partition(":")
    split_ref(ref, default_team="-")
    parse_version(ver)
    return t


def parse_defaults(value) -> dict[str, str]:
    """A project's default bindings from a form/JSON/CLI mapping: {"input0": text, ...};
    empty texts are dropped. Syntax only: resolution happens at each push."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise OpError("inputs must be an object such as {\"input0\": \"vision/cifar-100:2\"}") from None
    if not isinstance(value, dict):
        raise OpError("inputs must be an object such as {\"input0\": \"vision/cifar-100:2\"}")
    out = {}
    for key, text in value.items():
        slot = slot_of(str(key))
        if slot is None:
            raise OpError(f"{str(key)[:40]!r} is not an input; use input0 .. input{INPUT_SLOTS - 1}")
        if text is None or (isinstance(text, str) and not text.strip()):
            continue
        if not isinstance(text, str):
            raise OpError(f"input{slot} must be text such as vision/cifar-100:2 or job:42")
        try:
            out[f"input{slot}"] = check_text(text)
        except OpError as exc:
            raise OpError(f"input{slot}: {exc}") from None
    return dict(sorted(out.items()))


def project_defaults(project: Project) -> dict[str, str]:
    raw = getattr(project, "inputs", None)   # rows of the paged project list carry none
    try:
        return parse_defaults(raw) if raw else {}
    except OpError:
        return {}


def _resolve_one(s, team: Team, slot: int, text: str) -> ResolvedInput:
    t = text.strip()
    m = _JOB_RE.fullmatch(t)
    if m:
        jid = int(m.group(1))
        row = s.execute(select(Job.output_state, Project.team_id, Job.state).join(
            Project, Job.project_id == Project.id).where(Job.id == jid)).first()
        if row is None or row[1] != team.id:
            raise OpError(f"input{slot}: there is no job {jid} in team {team.name}")
        if row[2] in ACTIVE_STATES:
            raise OpError(f"input{slot}: job {jid} has not ended; its /output can be bound once "
                          "it has")
        if row[0] not in ("kept", "open", "keeping"):
            why = {"deleted": "was deleted", "none": "was never made (the job did not start)"}
            raise OpError(f"input{slot}: job {jid}'s /output {why.get(row[0], 'is not kept')}")
        return ResolvedInput(slot, f"job:{jid}", source_job_id=jid)
    ref, _, ver = t.partition(":")
    team_name, name = split_ref(ref, default_team=team.name)
    number = parse_version(ver)
    repo = s.scalar(select(DataRepo).join(Team, DataRepo.team_id == Team.id)
                    .where(Team.name == team_name, DataRepo.name == name))
    if repo is None or not team_may_bind(s, team.id, repo):
        raise OpError(f"input{slot}: there is no data repository {team_name}/{name} that team "
                      f"{team.name} may read")
    q = select(DataVersion).where(DataVersion.repo_id == repo.id)
    v = s.scalar(q.where(DataVersion.number == number) if number is not None
                 else q.order_by(DataVersion.number.desc()).limit(1))
    if v is None:
        latest = s.scalar(select(DataVersion.number).where(DataVersion.repo_id == repo.id)
                          .order_by(DataVersion.number.desc()).limit(1))
        raise OpError(f"input{slot}: {team_name}/{name} has "
                      + (f"no version {number} (latest: {latest})" if latest else "no versions yet"))
    return ResolvedInput(slot, f"{team_name}/{name}:{v.number}", version_id=v.id, repo_id=repo.id,
                         repo_team_id=repo.team_id, number=v.number)


def resolve(s, team: Team, wanted: dict[int, str]) -> tuple[list[ResolvedInput], list[str]]:
    """{slot: text} → (resolved inputs by slot, problems "slipway: input0: ...")."""
    out, problems = [], []
    for slot in sorted(wanted):
        try:
            out.append(_resolve_one(s, team, slot, wanted[slot]))
        except OpError as exc:
            problems.append(f"slipway: {exc}")
    return out, problems


def wanted_for_job(project: Project, overrides: dict[int, str] | None,
                   base: dict[int, str] | None = None) -> dict[int, str]:
    """The bindings a new job asks for: ``base`` (a continued job's labels) or the project's
    defaults, then the push's own ``inputN=`` options (an empty one drops the slot)."""
    if base is not None:
        wanted = dict(base)
    else:
        wanted = {int(k[5:]): v for k, v in project_defaults(project).items()}
    for slot, text in (overrides or {}).items():
        if text.strip():
            wanted[slot] = text
        else:
            wanted.pop(slot, None)
    return wanted


def record(s, job_id: int, resolved: list[ResolvedInput]) -> None:
    for r in resolved:
        s.add(JobInput(job_id=job_id, slot=r.slot, version_id=r.version_id,
                       source_job_id=r.source_job_id, label=r.label))


def labels_of(s, job_id: int) -> dict[int, str]:
    return {i.slot: i.label for i in s.scalars(select(JobInput).where(JobInput.job_id == job_id))}


def inputs_of(s, job_id: int) -> list[dict]:
    """A job's bindings for its page and JSON: [{slot, mount, label}]."""
    return [{"slot": i.slot, "mount": f"/input{i.slot}", "label": i.label}
            for i in s.scalars(select(JobInput).where(JobInput.job_id == job_id).order_by(JobInput.slot))]


@dataclass(frozen=True)
class Mounts:
    """Host paths of a job's inputs, by slot, and what the gates must let in."""

    inputs: tuple[tuple[int, str], ...]
    repo_ids: tuple[int, ...]
    problems: tuple[str, ...] = ()
    unkept: tuple[int, ...] = ()        # ended jobs whose /output is not kept yet


def mounts_for_job(s, store, job_id: int) -> Mounts:
    """Where each bound input lives on disk now (a version deleted or an output not kept since
    the push is a problem: the job cannot start)."""
    paths, repos, problems, unkept = [], set(), [], []
    for i in s.scalars(select(JobInput).where(JobInput.job_id == job_id).order_by(JobInput.slot)):
        if i.version_id is not None:
            v = s.get(DataVersion, i.version_id)
            if v is None:
                problems.append(f"input{i.slot}: {i.label} was deleted")
                continue
            paths.append((i.slot, str(store.version_dir(v.repo_id, v.number))))
            repos.add(v.repo_id)
        elif i.source_job_id is not None:
            src = s.execute(select(Job.output_state, Project.team_id).join(
                Project, Job.project_id == Project.id).where(Job.id == i.source_job_id)).first()
            if src is not None and src[0] in ("open", "keeping"):
                unkept.append(i.source_job_id)
            if src is None or src[0] != "kept":
                problems.append(f"input{i.slot}: job {i.source_job_id}'s /output is not kept"
                                + (f" ({src[0]})" if src else ""))
                continue
            paths.append((i.slot, str(Path(store.outputs_root) / str(src[1]) / str(i.source_job_id))))
    return Mounts(tuple(paths), tuple(sorted(repos)), tuple(problems), tuple(unkept))
