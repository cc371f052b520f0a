"""What happens on push — in one file.

pre-receive (``handle_pre_receive``), before git updates any ref:
  1. pushes made with a job token (Slipway's own commit-back) never start jobs;
  2. the ``results`` namespace belongs to Slipway: a user push that creates or moves
     ``refs/heads/results`` or anything under ``refs/heads/results/`` is refused (a user branch
     ``results/exp-1`` would make every ``results/exp-1/<job>`` ref impossible). Users may
     *delete* such refs (cleaning up old results branches is theirs to do; a job that is still
     running recreates its own results ref when it ends);
  3. only branch updates start jobs: tag pushes and deletions are ignored;
  4. checks, all reported together: project exists; pusher is a member of its team (or a
     cluster admin); push options parse (``gpus=a6000:1``, ``time=30m|2h|90``, ``image=NAME``);
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
  bills it from sacct, or submits it again (``resubmit_unknown``, a fresh conditional claim).

Exactly one submission per job: ``submit_job`` first *claims* the reservation with one
conditional UPDATE (``state='queued' AND slurm_job_id IS NULL AND token_hash IS NULL`` → sets the
job's token hash). The token is issued once per job, so a set ``token_hash`` on a queued job is the
"a submission has started" marker: of a slow post-receive and the reconciler (or two of either),
exactly one claims the job and runs ``sbatch``; the others are told it is already being submitted.

Crash safety — the post-receive never reached Slipway (server restarted between the two hooks, a
network blip, the hook process killed) or git did not update the ref after pre-receive (a
concurrent push won it). The reservation stays ``queued``, unclaimed, without a Slurm id, and the
reconciler settles it after ``orphan_reservation_grace`` seconds (30 s by default, far longer
than a post-receive takes; only after a successful ``squeue`` poll):

* Slurm has ``slipway-<id>`` (the submit reply was lost): adopted (``reconciler._apply_queue``);
* the branch in the bare repository points at the job's commit (the push completed):
  ``recover_reservation`` submits it with the same ``submit_job``, as if the hook had come; the
  job's reason says so (``RECOVERED_NOTE``);
* otherwise (the push did not complete): the reservation is failed at once with
  ``ABANDONED_REASON`` and the branch is free for the next push.

A reservation *claimed* by a submission that then died (sbatch in flight when the server
stopped) is adopted when Slurm has it, else after ``config.stale_reservation`` seconds it becomes
``unknown`` like a submission without an answer (never failed: Slurm may have it), and is
submitted again only once Slurm is known not to have it: a claim is never submitted twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import random
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..billing import ledger as billing
from .. import integrations as ig
from .. import shellquote
from ..db import ACTIVE_STATES, Job, Membership, Project, Team, User
from ..private_files import PRIVATE_DIR, make_dir
from ..services import Services, log
from . import states, trailer_facts

ZERO_SHA = "0" * 40
HEADS = "refs/heads/"
RESULTS_PREFIX = "refs/heads/results/"
PUSH_OPTIONS_HELP = ("gpus=TYPE:COUNT (e.g. gpus=a6000:1), time=30m|2h|90 (minutes), image=NAME, "
                     "run=no (update the branch without starting a job)")
_TIME_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m?)?$")
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


@dataclass(frozen=True)
class JobSettings:
    gpu_type: str
    gpu_count: int
    time_limit_min: int
    image: str


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
    """-> (overrides {gpu_type, gpu_count, time_limit_min, image}, problems). ``gpus=TYPE``
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
        if not sep or not value:
            problems.append(f"slipway: push option {opt!r} needs a value; known options: {PUSH_OPTIONS_HELP}")
            continue
        if key in ("gpus", "gpu", "gres"):
            try:
                overrides["gpu_type"], overrides["gpu_count"] = ig.parse_gpus(value, gpu_limits)
            except ig.InvalidRequest as exc:
                problems.append(f"slipway: push option gpus: {exc}")
        elif key == "time":
            try:
                overrides["time_limit_min"] = parse_time(value)
            except ValueError as exc:
                problems.append(f"slipway: push option time: {exc}")
        elif key == "image":
            overrides["image"] = value
        elif key == "run":
            if value.lower() in ("no", "false", "0"):
                overrides["run"] = False
            elif value.lower() not in ("yes", "true", "1"):
                problems.append(f"slipway: push option run: write run=no or run=yes, not {value!r}")
        else:
            problems.append(f"slipway: unknown push option {opt!r}; known options: {PUSH_OPTIONS_HELP}")
    return overrides, problems


# ---------------------------------------------------------------------------------- lookups

def find_project(session: Session, repo_key: str) -> Project | None:
    team_name, sep, project_name = repo_key.partition("/")
    if not sep:
        return None
    if project_name.endswith(".git"):
        project_name = project_name[:-4]
    return session.scalar(
        select(Project).join(Team).where(Team.name == team_name, Project.name == project_name))


def is_member(session: Session, user: User, team: Team) -> bool:
    return session.scalar(select(Membership.id).where(
        Membership.user_id == user.id, Membership.team_id == team.id)) is not None


def active_job(session: Session, project_id: int, branch: str) -> Job | None:
    return session.scalar(select(Job).where(
        Job.project_id == project_id, Job.branch == branch, Job.state.in_(ACTIVE_STATES)))


def busy_message(job: Job) -> str:
    return (f"slipway: branch {job.branch} already has job {job.id} {job.state}; "
            f"wait for it or cancel it: slipway job cancel {job.id}")


def effective_settings(project: Project, overrides: Mapping[str, Any]) -> JobSettings:
    return JobSettings(
        gpu_type=overrides.get("gpu_type", project.gpu_type),
        gpu_count=overrides.get("gpu_count", project.gpu_count),
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


def _job_push(svc: Services, p: dict) -> HookReply:
    """A job's own push (its commit-back, authenticated with the job's token): only its
    results ref ``results/<branch>/<job>`` and its own branch, never a delete. The token lives in
    a file the job's code can read, so without this a job could rewrite any branch."""
    raw = p["pusher"][4:] if p["pusher"].startswith("job:") else ""
    with svc.db.session() as s:
        job = s.get(Job, int(raw)) if raw.isdigit() else None
        if job is None:
            return _refuse([f"slipway: {p['pusher']!r} is not a job of this Slipway"])
        allowed = {f"{RESULTS_PREFIX}{job.branch}/{job.id}", HEADS + job.branch}
    bad = [u.ref for u in p["updates"] if u.ref not in allowed or u.new == ZERO_SHA]
    if bad:
        return _refuse([f"slipway: job {raw} may push only to results/{job.branch}/{job.id} and "
                        f"{job.branch} (not {', '.join(bad[:3])})"])
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
    now = svc.now()

    with svc.db.session() as s:
        project = find_project(s, p["repo"])
        if project is None:
            return _refuse([f"slipway: there is no project {p['repo']!r}"])
        team = project.team
        user = s.scalar(select(User).where(User.name == p["pusher"]))
        if user is None:
            return _refuse([f"slipway: unknown user {p['pusher']!r}"])
        if not (is_member(s, user, team) or user.is_cluster_admin):
            return _refuse([f"slipway: {user.name} is not a member of team {team.name}; "
                            "ask a team administrator: "
                            + shellquote.command(["slipway", "team", "add-member", team.name, user.name])])

        problems: list[str] = []
        overrides, opt_problems = parse_push_options(p["push_options"], svc.config.gpu_limits)
        if overrides.pop("run", True) is False and not opt_problems:
            return HookReply(True, ["slipway: branch updated; no job started (run=no)"])
        problems += opt_problems
        settings = effective_settings(project, overrides)
        if not opt_problems:
            problems += settings_problems(svc, settings)

        decision = ig.can_start(billing.balance(s, team.id), team.name, svc.config.min_start_balance)
        if not decision.ok:
            problems.append(f"slipway: {decision.message}")

        for u in updates:
            if not _SHA_RE.match(u.new):
                problems.append(f"slipway: {u.ref}: {u.new!r} is not a commit id")
                continue
            if len(u.branch) > 255:
                problems.append(f"slipway: branch name {u.branch[:40]}... is too long")
                continue
            msg = ig.entrypoint_problem(svc.config, team.name, project.name, u.new, p["quarantine"])
            if msg:
                problems.append(msg + f" (branch {u.branch}); add it and push again")
            busy = active_job(s, project.id, u.branch)
            if busy is not None:
                problems.append(busy_message(busy))
        if problems:
            return _refuse(problems)
        project_id, user_id = project.id, user.id

    # Reserve: one transaction for all branches of this push.
    try:
        with svc.db.transaction() as s:
            for u in updates:
                busy = active_job(s, project_id, u.branch)
                if busy is not None:
                    raise _Busy(busy_message(busy))
                s.add(Job(project_id=project_id, branch=u.branch, commit_sha=u.new, pusher_id=user_id,
                          state=states.QUEUED, gpu_type=settings.gpu_type, gpu_count=settings.gpu_count,
                          image=settings.image, time_limit_min=settings.time_limit_min,
                          created_at=now, state_changed_at=now))
                s.flush()  # the partial unique index fires here on PostgreSQL races
    except _Busy as exc:
        return _refuse([str(exc)])
    except IntegrityError:
        with svc.db.session() as s:
            msgs = [busy_message(j) for u in updates if (j := active_job(s, project_id, u.branch))]
        return _refuse(msgs or ["slipway: another push to this branch started a job just now"])
    return HookReply(True)


class _Busy(Exception):
    pass


# ----------------------------------------------------------------------------- post-receive

def handle_post_receive(svc: Services, payload: Mapping[str, Any]) -> HookReply:
    p = parse_payload(payload)
    if p["pusher_is_job"]:
        return HookReply(True)
    updates = job_updates(p["updates"])
    if not updates:
        return HookReply(True)
    with svc.db.session() as s:
        project = find_project(s, p["repo"])
        if project is None:
            return HookReply(True)
        job_ids = []
        for u in updates:
            jid = s.scalar(select(Job.id).where(
                Job.project_id == project.id, Job.branch == u.branch, Job.commit_sha == u.new,
                Job.state == states.QUEUED, Job.slurm_job_id.is_(None)))
            if jid is not None:
                job_ids.append(jid)
    ok, messages = True, []
    for jid in job_ids:
        submitted, msg = submit_job(svc, jid)
        ok = ok and submitted
        messages.append(msg)
    return HookReply(ok, messages)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def pick_port(session: Session, svc: Services) -> int:
    used = set(session.scalars(select(Job.port).where(Job.state.in_(ACTIVE_STATES), Job.port.is_not(None))))
    rng = random.SystemRandom()
    lo, hi = svc.config.port_min, svc.config.port_max
    for _ in range(1000):
        port = rng.randint(lo, hi)
        if port not in used:
            return port
    raise RuntimeError("no free port for the job")


def job_dir(svc: Services, job_id: int) -> Path:
    return Path(svc.config.jobs_dir) / str(job_id)


def log_path(svc: Services, job_id: int) -> Path:
    return job_dir(svc, job_id) / "output.log"


def _should_chown(svc: Services) -> bool:
    return svc.chown if svc.chown is not None else os.geteuid() == 0


def _ids(unix_user: str) -> tuple[int, int]:
    pw = pwd.getpwnam(unix_user)
    return pw.pw_uid, pw.pw_gid


def write_spec(svc: Services, path: Path, spec: dict, unix_user: str) -> None:
    """The runner spec: JSON, mode 0600, owned by the job user."""
    data = json.dumps(spec, indent=2, sort_keys=True).encode()
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        if _should_chown(svc):
            os.fchown(fd, *_ids(unix_user))
    finally:
        os.close(fd)
    os.replace(tmp, path)


# The entrypoint runs under bash where the image has it (the documented contract), else under
# the image's POSIX sh (minimal images such as busybox). A fixed string: no user data in it.
ENTRYPOINT_COMMAND = ["/bin/sh", "-c", 'if command -v bash >/dev/null 2>&1; then exec bash "$0"; '
                      'else exec sh "$0"; fi', ig.ENTRYPOINT]


def prepare_job(svc: Services, snap: dict, token: str) -> tuple[Path, dict, list[str]]:
    """Create the job dir and runner spec; return (spec path, spec, batch command)."""
    cfg = svc.config
    d = job_dir(svc, snap["job_id"])
    # 0700 from the start (mkdir's mode, not a chmod after): the job's Unix user alone, once
    # chowned; the jobs dir above is traverse-only (0711, portal/private_files.py).
    make_dir(d, PRIVATE_DIR)
    if _should_chown(svc):
        os.chown(d, *_ids(snap["unix_user"]))
    workdir = d / "work"
    # What the container must see goes in the argv (both runtimes clean the environment); the
    # runner also re-exports these for Apptainer (APPTAINERENV_*), with CUDA_VISIBLE_DEVICES.
    # PORT is passed through from the runner's environment instead: the runner may move the job
    # to another port when this one is taken on the node it lands on.
    env = {"SLIPWAY_JOB_ID": str(snap["job_id"]), "SLIPWAY_BRANCH": snap["branch"],
           "SLIPWAY_COMMIT": snap["commit"]}
    argv = ig.container_argv(cfg, svc.catalog, snap["image"], str(workdir), ENTRYPOINT_COMMAND, env,
                             passthrough_extra=("PORT",))
    spec = {
        "job_id": snap["job_id"],
        "repo_url": cfg.repo_url(snap["team"], snap["project"]),
        "username": f"job:{snap['job_id']}",
        "token": token,
        "commit": snap["commit"],
        "branch": snap["branch"],
        "workdir": str(workdir),
        "container_argv": argv,
        "container_runtime": cfg.container_runtime,
        "env": {"PORT": str(snap["port"]), **env},
        # the runner moves a PORT taken on its node only within these (apply_event accepts no other)
        "port_min": cfg.port_min,
        "port_max": cfg.port_max,
        "lfs_threshold_bytes": 1024 * 1024,
        "grace_seconds": 5,
        "callback_url": cfg.job_events_url(snap["job_id"]),
        "author_name": "Slipway",
        "author_email": "slipway@localhost",
        # for the result commits' trailers: image, image_digest, gpu_type, gpu_count, gpu_rate
        **trailer_facts.spec_fields(svc, snap),
    }
    spec_path = d / "spec.json"
    write_spec(svc, spec_path, spec, snap["unix_user"])
    command = [cfg.node_python, "-m", ig.RUNNER_MODULE, str(spec_path)]
    return spec_path, spec, command


_UNKNOWN_ACCOUNT = re.compile(r"Invalid account", re.IGNORECASE)


def _submit(svc: Services, req) -> int:
    """``sbatch`` the request; if Slurm does not know the team's account yet (a personal team
    made at a first login, before the reconciler's account sync ran), converge the accounts
    once and submit again. This runs in the post-receive hook, never in a page view."""
    try:
        return int(svc.backend.submit(req))
    except ig.SlurmRejected as exc:
        if not _UNKNOWN_ACCOUNT.search(exc.slurm_message or str(exc)):
            raise
        from ..teams.slurm_accounts import sync_accounts
        log.info("account %s unknown to Slurm: converging accounts before submitting", req.account)
        sync_accounts(svc)
        return int(svc.backend.submit(req))


RECOVERED_NOTE = ("submitted by Slipway's reconciler: the push's post-receive hook never reached "
                  "Slipway, and the branch points at the pushed commit")
ABANDONED_REASON = ("the push did not complete: branch {branch} does not point at {sha} "
                    "(git did not update it, or the push never finished); push again")


def _not_claimed_message(job: Job | None, job_id: int) -> str:
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
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == states.QUEUED, Job.slurm_job_id.is_(None),
               Job.token_hash.is_(None))
        .values(token_hash=token_hash)
        .execution_options(synchronize_session=False))
    return res.rowcount == 1


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
    with svc.db.transaction() as s:
        if not claim_for_submission(s, job_id, hash_token(token)):
            return False, _not_claimed_message(s.get(Job, job_id), job_id)
    return _submit_claimed(svc, job_id, token, note=note)


def claim_for_resubmission(session: Session, job_id: int, old_hash: str, new_hash: str) -> bool:
    """Atomically take over a submission whose outcome was unknown and which Slurm turned out
    not to have (one conditional UPDATE on the token the last submission used): True for
    exactly one caller, so two reconcilers or a late hook never ``sbatch`` it twice."""
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == states.UNKNOWN, Job.previous_state == states.QUEUED,
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
            return False, _not_claimed_message(s.get(Job, job_id), job_id)
    return _submit_claimed(svc, job_id, token, note=note)


UNKNOWN_REASON = ("submitted, but Slurm did not answer ({why}); Slipway is finding out whether "
                  "Slurm has the job, and submits it again if it does not")


def unknown_message(job_id: int, why: object) -> str:
    """The push reply when sbatch had no answer: it claims neither 'queued' nor 'failed'."""
    return (f"slipway: job {job_id} was handed to Slurm, but Slurm did not answer ({why}); "
            f"whether it is queued is not known yet. Slipway is finding out (and submits it again "
            f"if Slurm does not have it): see the job page or run: slipway job show {job_id}")


def _submit_claimed(svc: Services, job_id: int, token: str, *, note: str | None) -> tuple[bool, str]:
    """sbatch a job this caller has claimed (its token hash is ``hash_token(token)``)."""
    cfg = svc.config
    mine = hash_token(token)
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        job.port = pick_port(s, svc)
        project, team = job.project, job.project.team
        snap = {
            "job_id": job.id, "team": team.name, "project": project.name, "branch": job.branch,
            "commit": job.commit_sha, "port": job.port, "image": job.image,
            "unix_user": job.pusher.unix_user if job.pusher else "",
            "account": svc.config.slurm_account(team.name), "gpu_type": job.gpu_type, "gpu_count": job.gpu_count,
            "time_limit_min": job.time_limit_min,
        }
    try:
        if not snap["unix_user"]:
            raise ValueError("the pusher has no Unix user")
        spec_path, _spec, command = prepare_job(svc, snap, token)
        req = ig.job_request(job_id=job_id, user=snap["unix_user"], account=snap["account"],
                             gpu_type=snap["gpu_type"], gpu_count=snap["gpu_count"],
                             time_limit_min=snap["time_limit_min"], workdir=str(spec_path.parent),
                             output=str(log_path(svc, job_id)), command=command,
                             env={"PORT": str(snap["port"]), "SLIPWAY_JOB_ID": str(job_id),
                                  "PYTHONPATH": str(ig.node_runtime(cfg))},
                             partition=cfg.partition)
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
    return True, f"slipway: job {job_id} queued ({snap['gpu_type']} x{snap['gpu_count']})"


def unknown_submission(job: Job) -> bool:
    """``unknown`` since ``queued`` without a Slurm id: Slipway does not know whether Slurm has it."""
    return (job.state == states.UNKNOWN and job.previous_state == states.QUEUED
            and job.slurm_job_id is None)


# ------------------------------------------------------------------ lost post-receive recovery

def branch_tip(svc: Services, team: str, project: str, branch: str) -> str | None:
    """The commit ``refs/heads/<branch>`` points at in the project's bare repository, or None."""
    from git_gateway import repos

    return repos.resolve_ref(svc.config.repos_root, team, project, HEADS + branch)


def recover_reservation(svc: Services, job_id: int) -> tuple[str, str]:
    """Settle a reservation whose post-receive never reached Slipway (the reconciler calls this
    after ``orphan_reservation_grace``, once Slurm is known not to have the job).

    Returns (outcome, message): ``submitted`` (the branch points at the job's commit: submitted
    via ``submit_job``, exactly as the hook would have), ``unknown`` (submitted, but Slurm did
    not answer: see ``jobs.unknown``), ``failed`` (the submission was tried
    and failed; the job says why), ``abandoned`` (the branch does not point at the commit: the
    push did not complete; the reservation is failed and the branch is free) or ``skipped``
    (meanwhile claimed by a late post-receive, cancelled, or submitted)."""
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.state != states.QUEUED or job.slurm_job_id is not None \
                or job.token_hash is not None:
            return "skipped", _not_claimed_message(job, job_id)
        team, project = job.project.team.name, job.project.name
        branch, sha = job.branch, job.commit_sha
    tip = branch_tip(svc, team, project, branch)
    if tip is not None and tip == sha:
        ok, msg = submit_job(svc, job_id, note=RECOVERED_NOTE)
        with svc.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None and unknown_submission(job):
                return "unknown", msg  # sbatch had no answer: the reconciler finds out
        if ok:
            log.warning("job %s: post-receive never came; branch %s is at %s: submitted by the "
                        "reconciler", job_id, branch, sha[:12])
            return "submitted", msg
        with svc.db.session() as s:
            job = s.get(Job, job_id)
            return ("failed" if job is not None and job.state == states.FAILED else "skipped"), msg
    reason = ABANDONED_REASON.format(branch=branch, sha=sha[:12])
    with svc.db.transaction() as s:  # write transactions are serialised: this is atomic w.r.t. a claim
        job = s.get(Job, job_id)
        if job is None or job.state != states.QUEUED or job.slurm_job_id is not None \
                or job.token_hash is not None:
            return "skipped", _not_claimed_message(job, job_id)
        states.transition(job, states.FAILED, now=svc.now(), reason=reason)
    log.warning("job %s: %s (branch tip %s)", job_id, reason, tip[:12] if tip else "none")
    return "abandoned", f"slipway: job {job_id}: {reason}"
