"""What happens on push — in one file (the git hooks; the rooms they use are beside it).

pre-receive (``handle_pre_receive``), before git updates any ref:
  1. pushes made with a job token (Slipway's own commit-back) never start jobs;
  2. the ``results`` namespace belongs to Slipway: a user push that creates or moves
     ``refs/heads/results`` or anything under ``refs/heads/results/`` is refused (a user branch
     ``results/exp-1`` would make every ``results/exp-1/<job>`` ref impossible). Users may
     *delete* such refs (cleaning up old results branches is theirs to do; a job that is still
     running recreates its own results ref when it ends);
  3. only branch updates start jobs: tag pushes and deletions are ignored;
  4. checks, all reported together: project exists; pusher is a member of its team (or a
     cluster admin); push options parse (``gpus=a6000:1``, ``time=30m|2h|90``, ``image=NAME``,
     ``input0=TEAM/DATA:V``, ``continue=JOB``) and the bindings resolve (``jobs.job_data``);
     image in the catalog with a build for the configured container runtime (pytorch has no
     ch-run build, for instance); GPU type/count within limits; time limit sane; the team's balance
     is at least $1.00; ``slipway-entrypoint.sh`` is a regular file at the pushed commit; the
     branch has no active job;
  5. one transaction reserves one ``queued`` job row per branch. The partial unique index
     ``uq_jobs_active_branch`` guarantees at most one active job per (project, branch), so of
     two concurrent pushes to one branch exactly one reserves a job; the other is refused.
  Any failure: nothing is reserved, ``ok=false``, and the messages say what to fix.

post-receive (``handle_post_receive``), after the refs moved:
  for each reserved job of the pushed refs: pick a PORT, create the job directory (owned by the
  pusher's Unix user), write the runner spec (mode 0600, with a per-job token whose sha256 is
  stored), build the container argv, submit to Slurm → ``pending`` + Slurm id, and answer
  ``slipway: job N queued (a4000 x2)``. A definite refusal (bad request, Slurm's rejection, no
  Unix user) fails the job with the reason. No answer (``ControllerUnavailable``: sbatch timed
  out, slurmctld frozen) is not a failure: Slurm may run the job anyway, so it becomes
  ``unknown`` (since ``queued``), keeps its branch and token, and the reply says the outcome is
  not known yet; the reconciler finds out by name and account (``jobs.unknown``): adopts it,
  bills it from sacct, or submits it again (``submit.resubmit_unknown``, a fresh conditional claim).

Where the rest lives: push options and settings checks in ``jobs.push_options``; the lookups in
``jobs.lookups``; the submission (one claim, one ``sbatch``) in ``jobs.submit``; the job's files
and runner spec in ``jobs.runner_spec``; a lost post-receive in ``jobs.recovery``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..billing import ledger as billing
from .. import integrations as ig
from .. import shellquote
from ..db import Job
from ..services import Services
from . import job_data, states
from . import handoff, prechecks
from .lookups import active_jobs, busy_message, find_project, push_facts
from ..policy.admission import admit
from .reserve import reserve
from .push_options import parse_push_options
from .submit import submit_job

ZERO_SHA = "0" * 40
HEADS = "refs/heads/"
RESULTS_PREFIX = "refs/heads/results/"
_SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


@dataclass
class HookReply:
    ok: bool
    messages: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"ok": self.ok, "messages": list(self.messages)}


@dataclass(frozen=True)
class BranchUpdate:
    ref: str
    old: str
    new: str

    @property
    def branch(self) -> str:
        return self.ref[len(HEADS):]


class HookError(ValueError):
    """A malformed hook payload."""


# ---------------------------------------------------------------------------------- parsing

def parse_payload(payload: Mapping[str, Any]) -> dict:
    if not isinstance(payload, Mapping):
        raise HookError("hook payload must be a JSON object")
    updates = payload.get("updates") or []
    if not isinstance(updates, list) or not all(isinstance(u, Mapping) for u in updates):
        raise HookError("hook payload 'updates' must be a list of objects")
    options = payload.get("push_options") or []
    if not isinstance(options, list):
        raise HookError("hook payload 'push_options' must be a list")
    return {
        "repo": str(payload.get("repo") or ""),
        "pusher": str(payload.get("pusher") or ""),
        "pusher_is_job": bool(payload.get("pusher_is_job")),
        "updates": [BranchUpdate(str(u.get("ref", "")), str(u.get("old", "")), str(u.get("new", "")))
                    for u in updates],
        "push_options": [str(o) for o in options],
        "quarantine": payload.get("quarantine") or None,
    }


def is_deletion(u: BranchUpdate) -> bool:
    return not u.new or set(u.new) == {"0"}


def reserved_updates(updates: list[BranchUpdate]) -> list[BranchUpdate]:
    """Updates a user may not make: creating/moving ``results`` or ``results/...`` branches."""
    return [u for u in updates
            if (u.ref == HEADS + "results" or u.ref.startswith(RESULTS_PREFIX))
            and not is_deletion(u)]


def job_updates(updates: list[BranchUpdate]) -> list[BranchUpdate]:
    """The updates that start jobs: branch creations/updates, not tags, deletions or results/."""
    out = []
    for u in updates:
        if not u.ref.startswith(HEADS) or u.ref.startswith(RESULTS_PREFIX):
            continue
        if not u.new or set(u.new) == {"0"}:
            continue
        out.append(u)
    return out


def _job_push(svc: Services, p: dict) -> HookReply:
    """A job's own push (its commit-back, authenticated with the job's token): only its
    results ref ``results/<branch>/<job>`` and its own branch, never a delete. The token lives in
    a file the job's code can read, so without this a job could rewrite any branch."""
    raw = p["pusher"][4:] if p["pusher"].startswith("job:") else ""
    with svc.db.session() as s:
        job = s.get(Job, int(raw)) if raw.isdigit() else None
        if job is None:
            return _refuse([f"slipway: {p['pusher']!r} is not a job of this Slipway"])
        if job.task_count:   # a sweep: each task its own results ref, never the branch
            allowed = {f"{RESULTS_PREFIX}{job.branch}/{job.id}/{i}" for i in range(job.task_count)}
            may = f"results/{job.branch}/{job.id}/<task 0..{job.task_count - 1}>"
        else:
            allowed = {f"{RESULTS_PREFIX}{job.branch}/{job.id}", HEADS + job.branch}
            may = f"results/{job.branch}/{job.id} and {job.branch}"
    bad = [u.ref for u in p["updates"] if u.ref not in allowed or u.new == ZERO_SHA]
    if bad:
        return _refuse([f"slipway: job {raw} may push only to {may} (not {', '.join(bad[:3])})"])
    return HookReply(True)


def _refuse(messages: list[str]) -> HookReply:
    return HookReply(False, messages + ["slipway: push refused; nothing was started"])


# ------------------------------------------------------------------------------ pre-receive

def handle_pre_receive(svc: Services, payload: Mapping[str, Any]) -> HookReply:
    p = parse_payload(payload)
    if p["pusher_is_job"]:
        return _job_push(svc, p)
    reserved = reserved_updates(p["updates"])
    if reserved:
        names = ", ".join(u.branch for u in reserved[:3]) + (", ..." if len(reserved) > 3 else "")
        return _refuse([f"slipway: {names}: branch names 'results' and 'results/...' are reserved "
                        f"for Slipway's results branches (results/<branch>/<job>); push to "
                        f"another name (deleting a results branch is allowed)"])
    updates = job_updates(p["updates"])
    if not updates:
        return HookReply(True)
    bad_names = [(u.branch, why) for u in updates if (why := ig.branch_problem(u.branch))]
    if bad_names:  # git's ref-name rules + no leading '-': refused before anything is reserved
        return _refuse([f"slipway: branch {name!r} is refused: {why}; push it under another name"
                        for name, why in bad_names])
    # The pushed commits' entrypoints: they need no database (the team and project come from
    # the repository key) and, read from the loose objects, cost ~0.1 ms each.
    entry = {u.ref: _entrypoint_problem(svc, p["repo"], u, p["quarantine"]) for u in updates}
    checked = prechecks.take(svc, _precheck_key(p))
    try:
        with svc.db.transaction() as s:
            if checked is None:
                # the checks and the reservation in ONE write transaction: the branch check
                # the reservation relies on is the one made here
                checked = _checks(svc, s, p, updates)
            # else: made while git unpacked the push (``precheck``); a branch reserved since by
            # another push is caught by the partial unique index (IntegrityError below)
            reply, jobs = _reserve_checked(svc, s, checked, updates, entry, svc.now())
    except IntegrityError:   # another push reserved one of these branches just now
        with svc.db.session() as s:
            project = find_project(s, p["repo"])
            busy = active_jobs(s, project.id, [u.branch for u in updates]) if project else {}
        return _refuse([busy_message(j) for j in busy.values()]
                       or ["slipway: another push to this branch started a job just now"])
    if jobs:   # committed: the post-receive of this push finds them without a query
        handoff.put(svc, {(p["repo"], u.ref, u.new): job_id for u, job_id in zip(updates, jobs)})
    return reply


def precheck(svc: Services, payload: Mapping[str, Any]) -> None:
    """The pre-receive's database checks for a push whose request the gateway has read, made
    while git unpacks and checks its objects (the push's slowest part, on one core): the
    pre-receive hook then finds them done and adds the entrypoint and the reservation.
    Only what the hook will send is keyed; anything else is simply not used."""
    p = parse_payload(payload)
    updates = job_updates(p["updates"])
    if p["pusher_is_job"] or not updates or reserved_updates(p["updates"]) or \
            any(ig.branch_problem(u.branch) for u in updates):
        return
    with prechecks.making(svc, _precheck_key(p)) as done:
        with svc.db.session() as s:
            done(_checks(svc, s, p, updates))


def _precheck_key(p: dict) -> tuple:
    return (p["repo"], p["pusher"], tuple((u.old, u.new, u.ref) for u in p["updates"]),
            tuple(p["push_options"]))


@dataclass
class _Checked:
    """What the checks found: a final reply (no such project, not a member, ``run=no``...), or
    the problems (those of each branch apart, to place the entrypoint's beside them) and what
    a reservation needs."""
    final: HookReply | None = None
    problems: list[str] = field(default_factory=list)
    per_branch: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    project_id: int = 0
    user_id: int = 0
    user_name: str = ""
    admission: Any = None
    data_plan: Any = None


def _checks(svc: Services, s, p: dict, updates: list[BranchUpdate]) -> _Checked:
    """The pre-receive's checks that read the database, all reported together."""
    facts = push_facts(s, p["repo"], p["pusher"])
    if facts is None:
        return _Checked(_refuse([f"slipway: there is no project {p['repo']!r}"]))
    project, team, user = facts.project, facts.team, facts.user
    if user is None or not user.active:   # (a deactivated user's token opens nothing)
        return _Checked(_refuse([f"slipway: unknown user {p['pusher']!r}"]))
    if not (facts.is_member or user.is_cluster_admin):
        return _Checked(_refuse([
            f"slipway: {user.name} is not a member of team {team.name}; ask a team "
            "administrator: " + shellquote.command(["slipway", "team", "add-member", team.name,
                                                    user.name])]))
    c = _Checked(project_id=project.id, user_id=user.id, user_name=user.name)
    overrides, opt_problems = parse_push_options(p["push_options"], svc.config.gpu_limits)
    if overrides.pop("run", True) is False and not opt_problems:
        return _Checked(HookReply(True, ["slipway: branch updated; no job started (run=no)"]))
    c.problems += opt_problems
    if not opt_problems:
        c.admission = admit(svc, s, team=team, user_id=user.id, project=project,
                            overrides=overrides)
        c.problems += c.admission.problems
        c.data_plan, data_problems = job_data.plan(s, project, team, overrides)
        c.problems += data_problems
    decision = ig.can_start(billing.from_micros(facts.balance_micros), team.name,
                            svc.config.min_start_balance)
    if not decision.ok:
        c.problems.append(f"slipway: {decision.message}")
    busy = active_jobs(s, project.id, [u.branch for u in updates])
    for u in updates:   # (branch problem, busy message); a branch problem replaces the rest
        if not _SHA_RE.match(u.new):
            c.per_branch[u.ref] = (f"slipway: {u.ref}: {u.new!r} is not a commit id", None)
        elif len(u.branch) > 255:
            c.per_branch[u.ref] = (f"slipway: branch name {u.branch[:40]}... is too long", None)
        else:
            c.per_branch[u.ref] = (None, busy_message(busy[u.branch]) if u.branch in busy
                                   else None)
    return c


def _reserve_checked(svc: Services, s, c: _Checked, updates: list[BranchUpdate], entry: dict,
                     now) -> tuple[HookReply, list[int]]:
    """The checks' verdict with the entrypoints' beside each branch's; when nothing is wrong,
    one queued job per branch reserved in the caller's write transaction: (reply, job ids)."""
    if c.final is not None:
        return c.final, []
    problems = list(c.problems)
    for u in updates:
        bad, busy = c.per_branch.get(u.ref, (None, None))
        if bad:
            problems.append(bad)
            continue
        if entry[u.ref]:
            problems.append(entry[u.ref] + f" (branch {u.branch}); add it and push again")
        if busy:
            problems.append(busy)
    if problems:
        return _refuse(problems), []
    jobs = [reserve(s, project_id=c.project_id, branch=u.branch, commit=u.new,
                    pusher_id=c.user_id, admission=c.admission, data_plan=c.data_plan,
                    by=c.user_name, now=now, checked=True).id for u in updates]
    return HookReply(True, list(c.admission.notes)), jobs


def _entrypoint_problem(svc: Services, repo: str, u: BranchUpdate, quarantine) -> str | None:
    if not _SHA_RE.match(u.new):
        return None
    team, _, project = repo.partition("/")
    return svc.git.entrypoint_problem(team, project.removesuffix(".git"), u.new, quarantine)


# ----------------------------------------------------------------------------- post-receive

def handle_post_receive(svc: Services, payload: Mapping[str, Any]) -> HookReply:
    p = parse_payload(payload)
    if p["pusher_is_job"]:
        return HookReply(True)
    updates = job_updates(p["updates"])
    if not updates:
        return HookReply(True)
    # this push's reservations, from its pre-receive in this process; else looked up
    job_ids = [handoff.take(svc, p["repo"], u.ref, u.new) for u in updates]
    missing = [u for u, jid in zip(updates, job_ids) if jid is None]
    if missing:
        with svc.db.session() as s:
            project = find_project(s, p["repo"])
            for u in missing if project is not None else ():
                jid = s.scalar(select(Job.id).where(
                    Job.project_id == project.id, Job.branch == u.branch, Job.commit_sha == u.new,
                    Job.state == states.QUEUED, Job.slurm_job_id.is_(None)))
                job_ids[updates.index(u)] = jid
    job_ids = [jid for jid in job_ids if jid is not None]
    ok, messages = True, []
    for jid in job_ids:
        submitted, msg = submit_job(svc, jid)
        ok = ok and submitted
        messages.append(msg)
    return HookReply(ok, messages)
