"""THE one place a new job's compute is decided (push, re-run, workspaces, ``slipway submit``).

compute type (``-o compute=NAME``, else the project's default) → explicit ``gpus=``/``cpus=``/
``mem=`` on top → a request above what any node has, or above the user's or the team's quota,
is adjusted down to the most allowed and the push says so
(``slipway: asked a4000 x8; nodes have at most 4 — running with 4``), or refused with
``strict=yes`` → ``emergency=yes`` checked against the grants → the QOS and partition.
Nothing is written here: the caller stores ``Admission.row_fields()`` in the job row."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Project, Team
from ..jobs.push_options import JobSettings, effective_settings, settings_problems
from ..jobs.sweeps import Shape, parse_sweep, shape_problems
from ..teams.access import OpError
from ..services import Services
from . import compute, events, grants, resources
from .quotas import describe, quota_values

NORMAL_QOS = "normal"
EMERGENCY_QOS = "emergency"


@dataclass(frozen=True)
class Admission:
    settings: JobSettings
    compute_type: str | None = None
    asked: str | None = None          # what was asked when it was adjusted down ("a4000 x8")
    qos: str = NORMAL_QOS
    partition: str | None = None
    notes: tuple[str, ...] = ()       # said to the pusher: what was adjusted
    problems: tuple[str, ...] = ()    # refused: nothing may be reserved
    shape: Shape = Shape()            # a sweep's tasks, nodes (docs/SHARING.md)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def emergency(self) -> bool:
        return self.qos == EMERGENCY_QOS

    def row_fields(self) -> dict[str, Any]:
        return {**self.settings.row_fields(), "compute_type": self.compute_type,
                "asked": self.asked, "qos": self.qos, "partition": self.partition,
                **self.shape.row_fields()}


def _from_compute_type(project: Project, ct, overrides: Mapping[str, Any]) -> JobSettings:
    """The compute type's shape, with the push's explicit gpus/cpus/mem on top."""
    gpus = overrides.get("gpus")
    gpu_type, count = (gpus.type, gpus.count) if gpus is not None else (ct.gpu_type, ct.gpu_count)
    cpus = overrides.get("cpus", None)
    if gpu_type == ig.CPU:
        count = cpus if cpus is not None else (ct.gpu_count if gpus is None else count)
        cpus = count
    elif cpus is None:
        cpus = ct.cpus if gpus is None or gpus.type == ct.gpu_type else 1
    return JobSettings(gpu_type=gpu_type, gpu_count=count,
                       time_limit_min=overrides.get("time_limit_min", project.time_limit_min),
                       image=overrides.get("image", project.image), cpus=cpus,
                       mem_mb=overrides.get("mem_mb", ct.mem_mb))


class _Adjuster:
    """Collects what was cut down (notes) or, with ``strict``, refused (problems)."""

    def __init__(self, strict: bool):
        self.strict, self.notes, self.problems = strict, [], []

    def cap(self, what_asked: str, asked: int, most: int, why: str, unit_text) -> int:
        if asked <= most:
            return asked
        if most <= 0:
            self.problems.append(f"slipway: {why}: a job cannot ask for {what_asked}")
            return asked
        if self.strict:
            self.problems.append(f"slipway: asked {what_asked}; {why} (strict=yes: refused)")
            return asked
        self.notes.append(f"slipway: asked {what_asked}; {why} — running with {unit_text(most)}")
        return most


def _limit_by_quota(values: dict, team: Team, user_id: int | None, resource: str
                    ) -> tuple[int | None, str]:
    """The tighter of the user's and the team's quota for ``resource``, and whose it is
    (``values``: ``quotas.quota_values`` of the team and user)."""
    best, whose = None, ""
    for uid, label in ((user_id, "your quota in team {t}"), (None, "team {t}'s quota")):
        if uid is None and label.startswith("your"):
            continue
        v = values.get((uid, resource))
        if v is not None and (best is None or v < best):
            best, whose = v, label.format(t=team.name)
    return best, whose


def _adjust(svc: Services, s: Session, team: Team, user_id: int | None, st: JobSettings,
            adj: _Adjuster) -> JobSettings:
    cfg = svc.config
    values = quota_values(s, team.id, user_id)     # every quota that may apply: one query
    if st.cpu_only:
        cores = adj.cap(f"{st.gpu_count} cores", st.gpu_count, cfg.cpu_limit,
                        f"a job may have at most {cfg.cpu_limit} cores", lambda n: f"{n} cores")
        q, whose = _limit_by_quota(values, team, user_id, "cpu")
        if q is not None:
            cores = adj.cap(f"{cores} cores", cores, q, f"{whose} is {describe('cpu', q)}",
                            lambda n: f"{n} cores")
        st = replace(st, gpu_count=cores, cpus=cores)
    elif st.gpu_type in cfg.gpu_limits:
        t, most = st.gpu_type, cfg.gpu_limits[st.gpu_type]
        count = adj.cap(f"{t} x{st.gpu_count}", st.gpu_count, most,
                        f"nodes have at most {most}", lambda n: str(n))
        q, whose = _limit_by_quota(values, team, user_id, f"gpu:{t}")
        if q is not None:
            count = adj.cap(f"{t} x{count}", count, q, f"{whose} is {describe(f'gpu:{t}', q)}",
                            lambda n: str(n))
        cpus = adj.cap(f"{st.cpus} cores", st.cpus, cfg.cpu_limit,
                       f"a job may have at most {cfg.cpu_limit} cores", lambda n: f"{n} cores")
        qc, whose_c = _limit_by_quota(values, team, user_id, "cpu")
        if qc is not None:
            cpus = adj.cap(f"{cpus} cores", cpus, qc, f"{whose_c} is {describe('cpu', qc)}",
                           lambda n: f"{n} cores")
        st = replace(st, gpu_count=count, cpus=cpus)
    if st.mem_mb is not None and st.mem_mb > cfg.mem_limit_mb:
        mem = adj.cap(f"{st.mem_mb}M of memory", st.mem_mb, cfg.mem_limit_mb,
                      f"a job may have at most {cfg.mem_limit_mb}M", lambda n: f"{n}M")
        st = replace(st, mem_mb=mem)
    jobs, whose_j = _limit_by_quota(values, team, user_id, "jobs")
    if jobs == 0:
        adj.problems.append(f"slipway: {whose_j} is 0 running jobs: no job can start")
    return st


def _shape(st: JobSettings) -> str:
    """``a4000 x8, 4 cores, 16384M`` (cores and memory only when set)."""
    parts = [str(st.gpus)]
    if not st.cpu_only and st.cpus != 1:
        parts.append(f"{st.cpus} cores")
    if st.mem_mb is not None:
        parts.append(f"{st.mem_mb}M")
    return ", ".join(parts)


def admit(svc: Services, s: Session, *, team: Team, user_id: int | None, project: Project,
          overrides: Mapping[str, Any], base: JobSettings | None = None,
          base_compute_type: str | None = None, base_partition: str | None = None,
          base_shape: Shape | None = None) -> Admission:
    """Decide a new job's compute (see the module). ``base``: a re-run's settings (the old
    job's), re-checked against today's limits and quotas; else the project's defaults with the
    push's ``overrides``."""
    cfg = svc.config
    problems: list[str] = []
    ct_name, partition = base_compute_type, base_partition
    if base is not None:
        st = base
    else:
        ct_name = overrides.get("compute") or (project.compute_type if "gpus" not in overrides
                                               else None)
        ct = compute.get(s, ct_name) if ct_name else None
        if ct_name and ct is None:
            if overrides.get("compute"):
                return Admission(effective_settings(project, overrides),
                                 problems=(f"slipway: {compute.unknown_message(s, ct_name)}",))
            ct_name = None   # the project's default was removed: its own GPU settings hold
        st = _from_compute_type(project, ct, overrides) if ct is not None \
            else effective_settings(project, overrides)
        partition = ct.partition if ct is not None else None
    gpu_msg = None if st.cpu_only or st.gpu_type in cfg.gpu_limits else \
        ig.check_gpus(st.gpu_type, st.gpu_count, cfg.gpu_limits, cpu_limit=cfg.cpu_limit)
    if gpu_msg:
        return Admission(st, problems=(f"slipway: {gpu_msg}",))
    original = st
    adj = _Adjuster(bool(overrides.get("strict")))
    st = _adjust(svc, s, team, user_id, st, adj)
    problems += adj.problems
    if not adj.problems:
        problems += settings_problems(svc, st)
    qos = NORMAL_QOS
    if overrides.get("emergency"):
        if user_id is None or not grants.holds_right(s, user_id, team.id, svc.now()):
            problems.append("slipway: emergency=yes needs the emergency right, which you do not "
                            "hold in team " + team.name + "; a cluster administrator grants it "
                            "(slipway emergency grant USER)")
        else:
            qos = EMERGENCY_QOS
    asked = _shape(original) if st != original else None
    if overrides.get("partition"):
        partition = overrides["partition"]
        known = [p.get("name") for p in resources.sampled(svc)[1]]
        if known and partition not in known:
            problems.append(f"slipway: there is no partition {partition[:64]!r}; partitions: "
                            f"{', '.join(known)}")
    shape, shape_msgs = _shape_of(svc, st, overrides, base_shape)
    problems += shape_msgs
    return Admission(st, compute_type=ct_name, asked=asked, qos=qos,
                     partition=partition or cfg.partition or None, notes=tuple(adj.notes),
                     problems=tuple(problems), shape=shape)


def _shape_of(svc: Services, st: JobSettings, overrides: Mapping[str, Any],
              base: Shape | None) -> tuple[Shape, list[str]]:
    """The sweep and nodes asked for (a re-run keeps its job's), and what is wrong with them."""
    cfg = svc.config
    if base is not None:
        shape = base
    else:
        tasks: tuple = ()
        if overrides.get("sweep") is not None:
            try:
                tasks = tuple(parse_sweep(overrides["sweep"], cfg.max_sweep_tasks))
            except OpError as exc:
                return Shape(), [f"slipway: push option sweep: {exc}"]
        elif overrides.get("array_tasks"):   # slipway submit --array: tasks without values
            n = overrides["array_tasks"]
            if n > cfg.max_sweep_tasks:
                return Shape(), [f"slipway: the array has {n} tasks; at most "
                                 f"{cfg.max_sweep_tasks} per job"]
            tasks = tuple({} for _ in range(n))
        shape = Shape(tasks=tasks, max_parallel=overrides.get("max_parallel"),
                      nodes=overrides.get("nodes", 1))
    nodes_with_type = resources.nodes_with(svc, st.gpu_type) if shape.nodes > 1 else None
    return shape, shape_problems(shape, gpu_type=st.gpu_type,
                                 shared=cfg.shards_of(st.gpu_type) is not None,
                                 nodes_with_type=nodes_with_type, max_nodes=cfg.max_nodes,
                                 kind=overrides.get("kind", "task"))


def record_job(s: Session, job, admission: Admission, by: str) -> None:
    """Emergency jobs and adjusted requests go into the policy record (who, when, what)."""
    if admission.emergency:
        events.record(s, by, "emergency-job", f"job {job.id}",
                      f"{job.gpu_type} x{job.gpu_count} in team "
                      f"{job.project.team.name if job.project else '?'}", at=job.created_at)
    if admission.asked:
        events.record(s, by, "adjusted", f"job {job.id}",
                      f"asked {admission.asked}; got {_shape(admission.settings)}",
                      at=job.created_at)
