"""``slipway submit``: a script and sbatch's flags become a Slipway job (billed, shown and
cancellable like a pushed one). ``slipway submit`` (local mode) and ``POST /api/submit`` (the CLI's
remote mode) call ``submit_script``; cluster administrators only.

1. the flags (and the script's ``#SBATCH`` lines) are read by ``sbatch_flags`` into a push's
   overrides; the named user (``--user``) must be an active member of the team (``--account``);
2. the project (``--project``, default ``submit``) is the team's; a missing one is created at the
   end (``projects.service.create_project``, CPU-only defaults: sbatch without ``--gres`` gets no
   GPU) — and a request without ``--gres``/``--compute`` is CPU-only whatever the project says;
3. the compute is decided by ``policy.admission.admit`` (compute type, quotas, over-request,
   emergency right), the inputs by ``job_data.plan``, and the team must hold the $1.00 to start;
4. only when all of that passed: the script is written as ``slipway-entrypoint.sh`` (100755)
   in a parentless commit on a new branch ``submit/N`` (``git_gateway.scripted``), the job is
   reserved exactly as a re-run's (``jobs.rerun``) and submitted with ``submit.submit_job``. A
   failed reservation deletes the branch again: a refusal leaves no job and no branch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from git_gateway import scripted as git_scripted
from git_gateway.repos import repo_path

from .. import integrations as ig
from ..billing import ledger as billing
from ..db import Job, Membership, Project, Team, User
from ..policy.admission import admit
from .reserve import BranchBusy, reserve
from ..projects import service as projects_svc
from ..projects.settings import parse_settings
from ..services import Services, log
from ..teams.access import OpError
from . import job_data, sbatch_flags, submit

DEFAULT_PROJECT = "submit"
BRANCH_PREFIX = "submit/"
MAX_SCRIPT_BYTES = 1024 * 1024
_SHELLS = ("sh", "bash", "dash")


class Actor(Protocol):
    id: int
    name: str
    is_cluster_admin: bool


class SubmitError(OpError):
    """A refused submission: nothing was created (status as HTTP: 400, 403, 404, 409)."""


@dataclass(frozen=True)
class Submitted:
    job_id: int
    team: str
    project: str
    branch: str
    commit: str
    user: str
    state: str | None
    submitted: bool           # Slurm took it (or its answer is pending: ``unknown``)
    message: str              # ``job 7 queued (a4000 x2)`` or why Slurm refused it
    notes: tuple[str, ...]    # what admission adjusted down
    job_name: str | None = None

    def lines(self) -> list[str]:
        """What ``slipway submit`` prints."""
        return [f"slipway: {n}" for n in self.notes] + [
            f"slipway: {self.message}",
            f"branch {self.branch} of {self.team}/{self.project} at {self.commit[:12]}"]

    def as_dict(self) -> dict:
        return {"job": self.job_id, "team": self.team, "project": self.project,
                "branch": self.branch, "commit": self.commit, "user": self.user,
                "state": self.state, "submitted": self.submitted, "message": self.message,
                "notes": list(self.notes), "job_name": self.job_name}


def _plain(message: str) -> str:
    return message[len("slipway: "):] if message.startswith("slipway: ") else message


def script_problem(script: str) -> str | None:
    """sbatch's own rule (the first line is ``#!``), Slipway's (it runs under a POSIX shell:
    ``bash slipway-entrypoint.sh``), and sane size/content."""
    if not isinstance(script, str) or not script.strip():
        return "the script is empty"
    if "\x00" in script:
        return "the script contains a NUL byte; give a text script"
    if len(script.encode()) > MAX_SCRIPT_BYTES:
        return f"the script is larger than {MAX_SCRIPT_BYTES // 1024} KiB"
    first = script.splitlines()[0].strip()
    if not first.startswith("#!"):
        return ("this does not look like a batch script: the first line must start with #! "
                "followed by the shell (e.g. #!/bin/bash), as sbatch requires")
    words = first[2:].split()
    prog = words[0].rsplit("/", 1)[-1] if words else ""
    if prog == "env" and len(words) > 1:
        prog = words[-1].rsplit("/", 1)[-1]
    if prog not in _SHELLS:
        return (f"the script's first line {first[:60]!r} names {prog or 'no program'}; Slipway runs "
                f"the script with bash (its slipway-entrypoint.sh), so write a shell script "
                f"(#!/bin/bash) that starts your program")
    return None


def _team(s: Session, account: str, prefix: str) -> Team | None:
    team = s.scalar(select(Team).where(Team.name == account))
    if team is None and account.startswith(prefix) and len(account) > len(prefix):
        team = s.scalar(select(Team).where(Team.name == account[len(prefix):]))
    return team


def _branch_floor(s: Session, project_id: int | None) -> int:
    """The highest N of a ``submit/N`` branch any job of the project ran on (its branch may be
    gone: the number is not used again)."""
    if project_id is None:
        return 0
    branches = s.scalars(select(Job.branch).where(Job.project_id == project_id,
                                                  Job.branch.like(f"{BRANCH_PREFIX}%")))
    return max([int(t) for b in branches if (t := b[len(BRANCH_PREFIX):]).isdigit()] or [0])


def _message(req: sbatch_flags.SbatchFlags, user: str, actor: Actor) -> str:
    title = f"slipway submit: {req.job_name}" if req.job_name else "slipway submit"
    return f"{title}\n\nRuns as {user}; submitted by {actor.name}.\n"


def submit_script(svc: Services, actor: Actor, script: str, flags: list[str], *,
                  user: str | None = None, team: str | None = None,
                  project: str | None = None) -> Submitted:
    """Run ``script`` as ``user`` in ``team``'s ``project`` with sbatch's ``flags`` (see the
    module). ``user``/``team``/``project`` given here and as flags must agree. Raises
    SubmitError when refused (then nothing was created)."""
    if not actor.is_cluster_admin:
        raise SubmitError("only cluster administrators may submit scripts as other users "
                          "(slipway submit); push a branch instead", 403)
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise SubmitError("flags must be a list of texts, e.g. [\"--gres=gpu:a4000:1\"]")
    bad = script_problem(script)
    if bad:
        raise SubmitError(bad)
    cfg = svc.config
    req = sbatch_flags.read_request(script, flags, cfg.gpu_limits)
    problems = list(req.problems)
    for what, given, flag in (("user", user, req.user), ("team", team, req.account),
                              ("project", project, req.project)):
        if given and flag and given != flag and not (what == "team" and
                                                     flag == cfg.slurm_account(given)):
            problems.append(f"the {what} is given twice: {given!r} and {flag!r}")
    user, account = user or req.user, team or req.account
    project_name = project or req.project or DEFAULT_PROJECT
    if not user:
        problems.append("name the user the job runs as: --user USER")
    if not account:
        problems.append("name the team that pays: --account TEAM")
    if problems:
        raise SubmitError("; ".join(problems))
    try:
        project_name = ig.validate_name(project_name, "project")
    except ValueError as exc:
        raise SubmitError(str(exc)) from None
    overrides = dict(req.overrides)
    if "gpus" not in overrides and "compute" not in overrides:
        overrides["gpus"] = ig.GpuRequest(ig.CPU, overrides.get("cpus") or 1)  # sbatch: no GPU

    with svc.db.session() as s:
        u = s.scalar(select(User).where(User.name == user))
        if u is None or not u.active:
            raise SubmitError(f"there is no {'active ' if u is not None else ''}user {user!r}", 404)
        t = _team(s, account, cfg.slurm_account_prefix)
        if t is None:
            raise SubmitError(f"there is no team {account!r}", 404)
        if s.scalar(select(Membership.id).where(Membership.user_id == u.id,
                                                Membership.team_id == t.id)) is None:
            raise SubmitError(f"{u.name} is not a member of team {t.name}; the job runs as a "
                              f"member of the team that pays for it")
        p = s.scalar(select(Project).where(Project.team_id == t.id, Project.name == project_name))
        new_settings = None
        if p is None:  # created only once every check passed: a transient row to decide on
            new_settings, bad = parse_settings(svc, gpus=ig.NO_GPU)
            if bad:
                raise SubmitError(f"project {t.name}/{project_name} cannot be created: "
                                  + "; ".join(bad))
            p = Project(team_id=t.id, name=project_name, gpu_type=new_settings.gpu_type,
                        gpu_count=new_settings.gpu_count, image=new_settings.image,
                        time_limit_min=new_settings.time_limit_min, inputs=None,
                        compute_type=None)
        admission = admit(svc, s, team=t, user_id=u.id, project=p, overrides=overrides)
        problems = [_plain(x).replace("emergency=yes needs", "--qos=emergency needs")
                    .replace("which you do not hold", f"which {u.name} does not hold")
                    for x in admission.problems]
        decision = ig.can_start(billing.balance(s, t.id), t.name, cfg.min_start_balance)
        if not decision.ok:
            problems.append(_plain(decision.message))
        data_plan, data_problems = job_data.plan(s, p, t, {})
        problems += [_plain(x) for x in data_problems]
        if problems:
            raise SubmitError(f"nothing was submitted: {'; '.join(problems)}")
        team_name, user_id, user_name = t.name, u.id, u.name
        email = u.email or f"{u.name}@slipway.invalid"
        project_id = p.id if new_settings is None else None
        floor = _branch_floor(s, project_id)

    if new_settings is not None:
        try:
            projects_svc.create_project(svc, actor, team_name, project_name, new_settings)
            log.info("submit: created project %s/%s for slipway submit", team_name, project_name)
        except OpError as exc:
            if exc.status != 409:  # 409: created just now by a concurrent submit
                raise SubmitError(str(exc), exc.status) from None
        with svc.db.session() as s:
            project_id = s.scalar(select(Project.id).where(
                Project.name == project_name,
                Project.team_id == select(Team.id).where(Team.name == team_name).scalar_subquery()))
    return _write_and_reserve(svc, actor, script, req, admission, data_plan, team=team_name,
                              project=project_name, project_id=project_id, user_id=user_id,
                              user_name=user_name, email=email, floor=floor)


def _write_and_reserve(svc: Services, actor: Actor, script: str, req, admission, data_plan, *,
                       team: str, project: str, project_id: int, user_id: int, user_name: str,
                       email: str, floor: int) -> Submitted:
    git_dir = repo_path(svc.config.repos_root, team, project)
    now = svc.now()
    who = git_scripted.Person(user_name, email)
    by = git_scripted.Person(actor.name, f"{actor.name}@slipway.invalid")
    try:
        sha = git_scripted.write_commit(git_dir, script.encode(), author=who, committer=by,
                                        message=_message(req, user_name, actor), when=now)
        branch, _n = git_scripted.create_numbered_branch(git_dir, BRANCH_PREFIX, sha, floor=floor)
    except git_scripted.ScriptedCommitError as exc:
        raise SubmitError(f"cannot write the script into {team}/{project}: {exc}", 500) from None
    try:
        with svc.db.transaction() as s:
            job_id = reserve(s, project_id=project_id, branch=branch, commit=sha,
                             pusher_id=user_id, admission=admission, data_plan=data_plan,
                             by=actor.name, now=now).id
    except BaseException as exc:
        git_scripted.delete_branch(git_dir, branch, sha)
        if isinstance(exc, (BranchBusy, IntegrityError)):
            raise SubmitError(f"branch {branch} got a job just now; submit again", 409) from None
        raise
    log.info("submit: job %s as %s by %s on %s/%s %s at %s", job_id, user_name, actor.name,
             team, project, branch, sha[:12])
    ok, message = submit.submit_job(svc, job_id)
    with svc.db.session() as s:
        state = s.scalar(select(Job.state).where(Job.id == job_id))
    return Submitted(job_id=job_id, team=team, project=project, branch=branch, commit=sha,
                     user=user_name, state=state, submitted=ok, message=_plain(message),
                     notes=tuple(_plain(n) for n in admission.notes), job_name=req.job_name)
