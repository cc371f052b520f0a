"""Submission: a reserved job goes to Slurm exactly once.

Exactly one submission per job: ``submit_job`` first *claims* the reservation with one
conditional UPDATE (``state='queued' AND slurm_job_id IS NULL AND token_hash IS NULL`` → sets the
job's token hash). The token is issued once per job, so a set ``token_hash`` on a queued job is the
"a submission has started" marker: of a slow post-receive and the reconciler (or two of either),
exactly one claims the job and runs ``sbatch``; the others are told it is already being submitted.

No answer from Slurm (``ControllerUnavailable``: sbatch timed out, slurmctld frozen) is not a
failure: Slurm may run the job anyway, so it becomes ``unknown`` (since ``queued``), keeps its
branch and token, and the reply says the outcome is not known yet; the reconciler finds out by
name and account (``jobs.unknown``) and, when Slurm does not have it, submits it again with
``resubmit_unknown`` (a fresh conditional claim on the token the last submission used).

Every job is submitted with a time-limit warning (docs/FAULTS.md, "2. Time limit"):
``--signal=B:USR1@<lead>`` (``warning_lead_s``) and the limit and lead in the batch environment
(``SLIPWAY_TIME_LIMIT_S``, ``SLIPWAY_TIME_WARNING_S``), which the node program reads
(``git_gateway.node.time_limit``) to stop the entrypoint and push its files before the limit.
"""
from __future__ import annotations

import dataclasses
import re
import secrets

from sqlalchemy import Boolean, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from git_gateway.node import time_limit
from slurm_bridge.request import GpuRequest, JobRequest

from .. import integrations as ig
from ..db import Job, Project, Team, User
from ..services import Services, log
from ..policy import turns
from ..teams import slurm_accounts
from . import states
from .push_options import job_compute
from . import sweeps
from .runner_spec import JobSnapshot, hash_token, log_path, pick_port, prepare_job, \
    task_log_pattern

_UNKNOWN_ACCOUNT = re.compile(r"Invalid account", re.IGNORECASE)


def warning_lead_s(time_limit_min: int, configured_s: int) -> int:
    """Seconds before its limit a job gets the time-limit warning: ``time_limit_warning_s``,
    at most a quarter of a short limit (a 1-minute job: 15 s; 0: no warning)."""
    if configured_s <= 0:
        return 0
    return max(1, min(int(configured_s), int(time_limit_min) * 60 // 4))


def with_time_limit_warning(req: JobRequest, configured_s: int) -> JobRequest:
    """``req`` with ``--signal=B:USR1@<lead>`` and the batch environment the node program reads
    (``git_gateway.node.time_limit``); unchanged when the warning is off (0)."""
    lead = warning_lead_s(req.time_limit_min, configured_s)
    if lead <= 0:
        return req
    env = {**req.env, time_limit.ENV_LIMIT: str(req.time_limit_min * 60),
           time_limit.ENV_WARNING: str(lead)}
    return dataclasses.replace(req, signal=f"B:USR1@{lead}", env=env)


def _submit(svc: Services, req: JobRequest) -> int:
    """``sbatch`` the request; if Slurm does not know the team's account yet (a personal team
    made at a first login, before the reconciler's account sync ran), converge the accounts
    once and submit again. This runs in the post-receive hook, never in a page view."""
    try:
        return int(svc.backend.submit(req))
    except ig.SlurmRejected as exc:
        if not _UNKNOWN_ACCOUNT.search(exc.slurm_message or str(exc)):
            raise
        log.info("account %s unknown to Slurm: converging accounts before submitting", req.account)
        slurm_accounts.sync_accounts(svc)
        return int(svc.backend.submit(req))


def not_claimed_message(job: Job | None, job_id: int) -> str:
    if job is None:
        return f"slipway: there is no job {job_id}"
    if job.state == states.QUEUED and job.slurm_job_id is None:
        return f"slipway: job {job_id} is already being submitted"
    if unknown_submission(job):
        return (f"slipway: job {job_id} was handed to Slurm without an answer; Slipway is finding "
                f"out whether Slurm has it")
    if job.state in states.TERMINAL:
        why = f": {job.reason}" if job.reason else ""
        return f"slipway: job {job_id} is {job.state}{why}"
    return (f"slipway: job {job_id} was already submitted ({job.state}, "
            f"Slurm job {job.slurm_job_id})")


def claim_for_submission(session: Session, job_id: int, token_hash: str) -> bool:
    """Atomically mark a reserved job as being submitted (one conditional UPDATE). True for
    exactly one caller per job, whatever runs concurrently."""
    res = session.connection().execute(_CLAIM, {"job_id": job_id, "token_hash": token_hash})
    return res.rowcount == 1


# built once: every push's submission runs it (bound parameters only)
_CLAIM = (update(Job).where(Job.id == bindparam("job_id"), Job.state == states.QUEUED,
                            Job.slurm_job_id.is_(None), Job.token_hash.is_(None))
          .values(token_hash=bindparam("token_hash")))


def submit_job(svc: Services, job_id: int, *, note: str | None = None) -> tuple[bool, str]:
    """Submit a reserved (queued) job to Slurm. Returns (accepted, message for the pusher).

    Only the caller that claims the job (``claim_for_submission``) submits it; any other
    concurrent or later caller gets (False, why). ``note`` becomes the job's reason once it is
    in Slurm (the reconciler's recovery says why the job was submitted without its hook).

    ``accepted`` is True when Slurm took the job, and also when its answer never came
    (``ControllerUnavailable``: sbatch timed out, slurmctld frozen or down): the job is then
    ``unknown`` since ``queued``, not failed, and the reconciler finds out (``jobs.unknown``).
    A definite refusal (bad request, Slurm's rejection, no Unix user) fails the job at once."""
    token = secrets.token_urlsafe(32)
    with svc.db.transaction() as s:   # the claim and what the submission needs: one commit
        if not claim_for_submission(s, job_id, hash_token(token)):
            return False, not_claimed_message(s.get(Job, job_id), job_id)
        plan = _plan(svc, s, job_id)
    return _submit_claimed(svc, plan, token, note=note)


def claim_for_resubmission(session: Session, job_id: int, old_hash: str, new_hash: str) -> bool:
    """Atomically take over a submission whose outcome was unknown and which Slurm turned out
    not to have (one conditional UPDATE on the token the last submission used): True for
    exactly one caller, so two reconcilers or a late hook never ``sbatch`` it twice."""
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == states.UNKNOWN,
               Job.previous_state.in_(UNSUBMITTED_FROM),
               Job.slurm_job_id.is_(None), Job.token_hash == old_hash,
               Job.cancel_requested_at.is_(None))
        .values(token_hash=new_hash)
        .execution_options(synchronize_session=False))
    return res.rowcount == 1


def resubmit_unknown(svc: Services, job_id: int, old_hash: str, *, note: str) -> tuple[bool, str]:
    """Submit again a job whose submission had no answer and that Slurm does not have (the
    reconciler calls this after ``unknown_submission_grace``). (False, why) when another
    caller took it over, or it was cancelled or found meanwhile."""
    token = secrets.token_urlsafe(32)
    with svc.db.transaction() as s:
        if not claim_for_resubmission(s, job_id, old_hash, hash_token(token)):
            return False, not_claimed_message(s.get(Job, job_id), job_id)
        plan = _plan(svc, s, job_id)
    return _submit_claimed(svc, plan, token, note=note)


UNKNOWN_REASON = ("submitted, but Slurm did not answer ({why}); Slipway is finding out whether "
                  "Slurm has the job, and submits it again if it does not")


def unknown_message(job_id: int, why: object) -> str:
    """The push reply when sbatch had no answer: it claims neither 'queued' nor 'failed'."""
    return (f"slipway: job {job_id} was handed to Slurm, but Slurm did not answer ({why}); "
            f"whether it is queued is not known yet. Slipway is finding out (and submits it again "
            f"if Slurm does not have it): see the job page or run: slipway job show {job_id}")


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the submission of a claimed job needs from the database, read in the claim's
    transaction (``_plan``)."""
    snap: JobSnapshot
    array: str | None
    qos: str
    partition: str | None
    nice: int
    mounts: object    # data.bindings.Mounts


def _plan(svc: Services, s: Session, job_id: int) -> _Plan:
    """The job (with its project, team and pusher in ONE prebuilt query), its port(s), the nice
    of its team's turn and its input bindings, in the claiming transaction (plain rows and
    bound statements: this runs inside every push's reply)."""
    from ..data import bindings
    from ..data.store import DataStore
    cfg = svc.config
    conn = s.connection()
    job = conn.execute(_PLAN_ROW, {"job_id": job_id}).one()
    port, master_port = pick_port(s, svc), job.master_port
    if (job.nodes or 1) > 1 and master_port is None:
        master_port = pick_port(s, svc, avoid=(port,))   # the ranks' rendezvous (MASTER_PORT)
    conn.execute(_SET_PORTS, {"job_id": job_id, "port": port, "master_port": master_port})
    cpus, mem_mb = job_compute(job)
    snap = JobSnapshot(
        job_id=job.id, team=job.team_name, project=job.project_name, branch=job.branch,
        commit=job.commit_sha, port=port, image=job.image, unix_user=job.unix_user or "",
        account=cfg.slurm_account(job.team_name), gpus=GpuRequest(job.gpu_type, job.gpu_count),
        time_limit_min=job.time_limit_min, team_id=job.team_id, continue_from=job.continue_from,
        kind=job.kind, cpus=cpus, mem_mb=mem_mb,
        tasks=tuple(sweeps.tasks_of(job.sweep, job.task_count)), nodes=job.nodes or 1,
        master_port=master_port,
    )
    return _Plan(snap, sweeps.array_spec(job.task_count, job.max_parallel) if job.task_count
                 else None, job.qos or "normal", job.partition or cfg.partition,
                 turns.initial_nice(s, svc, team_id=job.team_id, job_id=job.id, qos=job.qos),
                 bindings.mounts_for_job(s, DataStore.for_services(svc), job.id))


# built once (every push's submission reads it): the job's columns with its project's and
# team's names, its team's id and its pusher's Unix user
_PLAN_ROW = (select(*Job.__table__.columns, Project.name.label("project_name"),
                    Team.name.label("team_name"), Team.id.label("team_id"),
                    User.unix_user.label("unix_user"))
             .join(Project, Job.project_id == Project.id).join(Team, Project.team_id == Team.id)
             .outerjoin(User, Job.pusher_id == User.id).where(Job.id == bindparam("job_id")))
_SET_PORTS = (update(Job).where(Job.id == bindparam("job_id"))
              .values(port=bindparam("port"), master_port=bindparam("master_port")))


def _submit_claimed(svc: Services, plan: _Plan, token: str, *, note: str | None) -> tuple[bool, str]:
    """sbatch a job this caller has claimed (its token hash is ``hash_token(token)``)."""
    cfg = svc.config
    mine = hash_token(token)
    snap, array, qos, partition, nice = plan.snap, plan.array, plan.qos, plan.partition, plan.nice
    job_id = snap.job_id
    try:
        if not snap.unix_user:
            raise ValueError("the pusher has no Unix user")
        spec_path, _spec, command = prepare_job(svc, snap, token, mounts=plan.mounts)
        req = ig.job_request(job_id=job_id, user=snap.unix_user, account=snap.account,
                             gpu_type=snap.gpus.type, gpu_count=snap.gpus.count,
                             time_limit_min=snap.time_limit_min, workdir=str(spec_path.parent),
                             output=str(task_log_pattern(svc, job_id) if array
                                        else log_path(svc, job_id)), command=command,
                             env={"PORT": str(snap.port), "SLIPWAY_JOB_ID": str(job_id),
                                  "PYTHONPATH": str(ig.node_runtime(cfg))},
                             partition=partition, cpus=snap.cpus, mem_mb=snap.mem_mb,
                             qos=qos, nice=nice, array=array, nodes=snap.nodes)
        req = with_time_limit_warning(req, cfg.time_limit_warning_s)
        slurm_id = _submit(svc, req)
    except ig.ControllerUnavailable as exc:
        # No answer is not a "no": Slurm may have the job (slurmctld frozen, the reply lost).
        log.warning("job %s: submitted, but Slurm did not answer: %s", job_id, exc)
        with svc.db.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None and job.token_hash == mine and job.slurm_job_id is None \
                    and (job.state == states.QUEUED or unknown_submission(job)):
                now = svc.now()
                states.transition(job, states.UNKNOWN, now=now,
                                  reason=UNKNOWN_REASON.format(why=exc)[:1000])
                job.submitted_at = now  # the lookups by name start here
        return True, unknown_message(job_id, exc)
    except Exception as exc:  # noqa: BLE001 — every definite failure fails the job, with its reason
        reason = f"submission failed: {exc}"
        log.warning("job %s: %s", job_id, reason)
        with svc.db.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None and job.token_hash == mine and job.slurm_job_id is None \
                    and (job.state == states.QUEUED or unknown_submission(job)):
                states.transition(job, states.FAILED, now=svc.now(), reason=reason)
        return False, f"slipway: job {job_id} could not be submitted: {exc}"

    if _submitted(svc, job_id, mine, slurm_id, note):   # the common end, in one statement
        return True, f"slipway: job {job_id} queued ({_what(snap, array)})"
    cancel_now, cancelled = False, False
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or job.token_hash != mine or job.slurm_job_id not in (None, slurm_id):
            # deleted, or taken over by a later submission (or adopted as another Slurm job)
            # while this sbatch hung: this Slurm job is a duplicate
            cancel_now = cancelled = True
        else:
            waiting = job.state == states.QUEUED or unknown_submission(job)
            job.slurm_job_id = slurm_id
            if job.output_state == "none":
                job.output_state = "open"   # prepare_job made <job dir>/output
            job.submitted_at = job.submitted_at or svc.now()
            if waiting:
                states.transition(job, states.PENDING, now=svc.now(), reason=note)
                cancel_now = job.cancel_requested  # asked while the answer was awaited
            elif job.state in states.TERMINAL:
                cancel_now = cancelled = True  # cancelled (or failed as stale) while submitting
    if cancel_now:
        try:
            svc.backend.cancel(slurm_id)
        except ig.SlurmBridgeError as exc:
            log.warning("job %s: could not cancel Slurm job %s: %s", job_id, slurm_id, exc)
        if cancelled or job is None:
            return False, f"slipway: job {job_id} was cancelled before it started"
        return True, f"slipway: job {job_id} is being cancelled (the cancel came before Slurm's answer)"
    return True, f"slipway: job {job_id} queued ({_what(snap, array)})"


def _submitted(svc: Services, job_id: int, mine: str, slurm_id: int, note: str | None) -> bool:
    """Slurm took the job: when it is still this caller's claim, queued and not cancelled, ONE
    conditional UPDATE records its Slurm id and moves it to pending (the state machine's
    ``queued -> pending``, ``states.plain_move``). False when anything else happened meanwhile
    (cancelled, taken over, deleted, found unknown): the full path decides then."""
    now = svc.now()
    move = states.plain_move(states.QUEUED, states.PENDING, now=now, reason=note)
    with svc.db.transaction() as s:
        res = s.connection().execute(_SUBMITTED, {
            "job_id": job_id, "mine": mine, "slurm_id": slurm_id, "now": now, **move})
        return res.rowcount == 1


# built once: a claimed, queued, uncancelled job gets its Slurm id and becomes pending
# (``prepare_job`` made its <job dir>/output: an output still "none" is "open" now)
_SUBMITTED = (update(Job).where(
    Job.id == bindparam("job_id"), Job.token_hash == bindparam("mine"),
    Job.slurm_job_id.is_(None), Job.state == states.QUEUED, Job.cancel_requested_at.is_(None))
    .values(slurm_job_id=bindparam("slurm_id"),
            output_state=case((Job.output_state == "none", "open"), else_=Job.output_state),
            submitted_at=func.coalesce(Job.submitted_at, bindparam("now")),
            state=bindparam("state"), state_changed_at=bindparam("state_changed_at"),
            reason=case((bindparam("keep_reason", type_=Boolean), Job.reason),
                        else_=bindparam("reason", type_=Job.reason.type))))


def _what(snap: JobSnapshot, array: str | None) -> str:
    """``a4000 x1``, ``6 tasks (--array=0-5%2) of a4000 x1``, ``2 nodes × a4000 x4``."""
    if array:
        return f"{len(snap.tasks)} tasks (--array={array}) of {snap.gpus} each"
    if snap.nodes > 1:
        return f"{snap.nodes} nodes × {snap.gpus}"
    return str(snap.gpus)


# an unknown job without a Slurm id came from one of these: ``queued`` (sbatch had no answer)
# or ``pending`` (Slurm lost the job before it ran: reconciler.ended.LOST_NOTE)
UNSUBMITTED_FROM = (states.QUEUED, states.PENDING)


def unknown_submission(job: Job) -> bool:
    """``unknown`` without a Slurm id (since ``queued``: sbatch had no answer; since
    ``pending``: Slurm lost it before it ran): Slipway does not know whether Slurm has it."""
    return (job.state == states.UNKNOWN and job.previous_state in UNSUBMITTED_FROM
            and job.slurm_job_id is None)
