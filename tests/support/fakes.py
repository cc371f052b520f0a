"""Test helpers (no servers): the in-memory adapters behind the ports (portal/ports.py: a
recording fake Slurm backend, Slurm accounts, git, an image catalog, a mailer), temp-dir
services built through ``portal.bootstrap``, git helpers.

Used by tests/unit/test_portal_*.py; the lead's integration tests may reuse them.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from slurm_bridge.errors import ControllerUnavailable, InvalidRequest, JobNotFound
from slurm_bridge.records import QueueRecord, SacctRecord
from slurm_bridge.sync import (CurrentAccount, CurrentAssoc, CurrentState, DesiredState, Limits,
                               plan)

from portal.bootstrap import bootstrap
from portal.config import Config
from portal.db import Membership, Project, Team, User
from portal.integrations import ENTRYPOINT
from portal.services import Services

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, start: datetime = T0):
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw) -> datetime:
        self.t += timedelta(**kw)
        return self.t


@dataclass
class FakeBackend:
    """Records calls; ``queue`` / ``acct`` are what squeue / sacct would answer."""

    next_id: int = 1000
    submits: list = field(default_factory=list)
    cancels: list = field(default_factory=list)
    queue: dict = field(default_factory=dict)
    acct: list = field(default_factory=list)
    down: bool = False
    accounting_down: bool = False   # slurmdbd alone is down (the queue still answers)
    submit_error: Exception | None = None
    # Slurm takes the job but sbatch gets no answer (slurmctld frozen): recorded in ``submits``,
    # then ControllerUnavailable; script what squeue/sacct show with set_queue/finish
    lose_submit_reply: bool = False
    jobs_calls: int = 0
    accounting_calls: list = field(default_factory=list)
    name_lookups: list = field(default_factory=list)   # (start, end, names) of by-name lookups
    lock: threading.Lock = field(default_factory=threading.Lock)
    # administrator's commands, recorded; shares()/assoc_usage()/partitions() answer these
    holds: list = field(default_factory=list)
    releases: list = field(default_factory=list)
    requeues: list = field(default_factory=list)
    nice_calls: list = field(default_factory=list)       # (tuple of job ids, nice)
    priority_calls: list = field(default_factory=list)   # (job id, priority)
    tops: list = field(default_factory=list)             # (job id, priority given)
    node_updates: list = field(default_factory=list)     # (name, state, reason)
    share_records: list = field(default_factory=list)
    usage: dict = field(default_factory=dict)
    partition_records: list = field(default_factory=list)
    node_records: list = field(default_factory=list)     # what nodes() (sinfo) answers
    nodes_down: bool = False
    task_cancels: list = field(default_factory=list)     # (array job id, task id, signal)
    task_ids: dict = field(default_factory=dict)         # (array id, task) -> the task's job id
    # what step_usage() (sstat) answers: Slurm job id -> slurm_bridge.step_usage.JobUsage
    usage_records: dict = field(default_factory=dict)

    def submit(self, req) -> int:
        with self.lock:
            if self.submit_error is not None:
                raise self.submit_error
            if self.down:
                raise ControllerUnavailable("slurmctld is down (fake)")
            self.next_id += 1
            self.submits.append((self.next_id, req))
            if self.lose_submit_reply:
                raise ControllerUnavailable("Slurm did not answer within 10 s (sbatch) (fake)")
            return self.next_id

    def cancel(self, job_id, signal=None, batch_only=False):
        if self.down:
            raise ControllerUnavailable("slurmctld is down (fake)")
        self.cancels.append((job_id, signal, batch_only))

    def cancel_task(self, array_job_id, task_id, signal=None):
        if self.down:
            raise ControllerUnavailable("slurmctld is down (fake)")
        self.task_cancels.append((array_job_id, task_id, signal))

    def hold(self, job_id):
        self.holds.append(job_id)

    def release(self, job_id):
        self.releases.append(job_id)

    def requeue(self, job_id):
        self.requeues.append(job_id)

    def set_nice(self, job_ids, nice):
        if self.down:
            raise ControllerUnavailable("slurmctld is down (fake)")
        ids = tuple(sorted(set(job_ids)))
        if ids:
            self.nice_calls.append((ids, nice))
            for j in ids:
                if j in self.queue:
                    self.queue[j] = dataclasses.replace(self.queue[j], nice=nice)

    def set_priority(self, job_id, priority):
        if self.down:
            raise ControllerUnavailable("slurmctld is down (fake)")
        self.priority_calls.append((job_id, priority))
        if job_id in self.queue:
            self.queue[job_id] = dataclasses.replace(self.queue[job_id], priority=priority, nice=0)

    def top(self, job_id):
        """Like CliBackend.top: one above the highest other pending job in ``queue``."""
        job = self.queue.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.state != "PENDING":
            raise InvalidRequest(f"job {job_id} is {job.state}: only a pending job can go to the top")
        priority = max((r.priority for r in self.queue.values()
                        if r.state == "PENDING" and r.job_id != job_id), default=0) + 1
        self.set_priority(job_id, priority)
        self.tops.append((job_id, priority))
        return priority

    def update_node(self, name, state, reason=None):
        if state not in ("drain", "resume"):
            raise InvalidRequest(f"node state must be drain or resume, got {state!r}")
        if state == "drain" and not (reason or "").strip():
            raise InvalidRequest(f"say why node {name} is drained (a reason is required)")
        self.node_updates.append((name, state, reason))

    def shares(self):
        if self.down:
            raise ControllerUnavailable("slurmctld is down (fake)")
        return list(self.share_records)

    def assoc_usage(self):
        if self.down:
            raise ControllerUnavailable("slurmctld is down (fake)")
        return dict(self.usage)

    def partitions(self):
        if self.down:
            raise ControllerUnavailable("slurmctld is down (fake)")
        return list(self.partition_records)

    def jobs(self, comment="slipway"):
        self.jobs_calls += 1
        if self.down:
            raise ControllerUnavailable("slurmctld is down (fake)")
        return dict(self.queue)

    def accounting(self, start, end, job_ids=None, names=None):
        self.accounting_calls.append((start, end, tuple(job_ids or ())))
        if names is not None:
            self.name_lookups.append((start, end, tuple(sorted(names))))
        if self.down or self.accounting_down:
            raise ControllerUnavailable("slurmdbd is down (fake)")
        ids = set(job_ids or ())
        return [r for r in self.acct if (not ids or r.job_id in ids or r.array_job_id in ids)
                and (names is None or r.name in names)]

    def step_usage(self, job_ids):
        """sstat: ``usage_records`` of the jobs asked for that have one; down: no answer."""
        if self.down:
            raise ControllerUnavailable("slurmctld is down (fake)")
        return {j: self.usage_records[j] for j in job_ids if j in self.usage_records}

    def nodes(self):
        """sinfo's nodes: ``node_records`` (NodeRecord values a test sets); down: no answer."""
        if self.down or self.nodes_down:
            raise ControllerUnavailable("slurmctld is down (fake)")
        return list(self.node_records)

    # -- helpers to script Slurm ----------------------------------------------------------
    def set_queue(self, slurm_id: int, state: str, *, start: datetime | None = None,
                  node: str = "a4k-1", reason: str = "None", gpus: dict | None = None,
                  restart_count: int = 0, name: str = "", account: str = "team-x",
                  priority: int = 0, nice: int = 0, partition: str = "train",
                  expected_start: datetime | None = None):
        self.queue[slurm_id] = QueueRecord(
            job_id=slurm_id, state=state, reason=reason, node=node if state != "PENDING" else "",
            start_time=start, submit_time=start, account=account, user="u", qos="normal",
            name=name, comment="slipway", partition=partition,
            restart_count=restart_count, gpus=gpus or {}, priority=priority, nice=nice,
            expected_start=expected_start if state == "PENDING" else None)

    def finish(self, slurm_id: int, state: str, *, start: datetime, end: datetime,
               exit_code: int | None = 0, gpus: dict | None = None, attempt: int = 0,
               qos: str = "normal", node: str = "a4k-1", name: str = "",
               account: str = "team-x"):
        self.queue.pop(slurm_id, None)
        self.acct.append(SacctRecord(
            job_id=slurm_id, attempt=attempt, name=name, user="u", account=account, qos=qos,
            state=state, exit_code=exit_code, signal=None, submit=start, start=start, end=end,
            elapsed_s=int((end - start).total_seconds()), node=node, gpus=gpus if gpus is not None else {"a4000": 1}))

    # -- job arrays (a submit with ``req.array`` returns the array's id, like any submit) --
    def task_job_id(self, array_id: int, task: int) -> int:
        """The task's own Slurm job id: a fresh one, the same for the same (array, task)."""
        key = (array_id, task)
        if key not in self.task_ids:
            with self.lock:
                self.next_id += 1
                self.task_ids[key] = self.next_id
        return self.task_ids[key]

    def set_task_queue(self, array_id: int, task: int, state: str, *,
                       start: datetime | None = None, node: str = "a4k-1",
                       gpus: dict | None = None, restart_count: int = 0, name: str = "",
                       account: str = "team-x", reason: str = "None"):
        """squeue shows task ``task`` of array ``array_id`` (its own job id, task_job_id)."""
        job_id = self.task_job_id(array_id, task)
        self.queue[job_id] = QueueRecord(
            job_id=job_id, state=state, reason=reason, node=node if state != "PENDING" else "",
            start_time=start, submit_time=start, account=account, user="u", qos="normal",
            name=name or f"job{array_id}", comment="slipway", partition="train",
            restart_count=restart_count, gpus=gpus or {}, array_job_id=array_id,
            array_task_id=task)
        return job_id

    def set_pending_tasks(self, array_id: int, task_string: str, *, name: str = "",
                          account: str = "team-x", reason: str = "JobArrayTaskLimit"):
        """squeue's one record for the array's tasks that have not started (``"2-5%2"``), under
        the array's id; an empty ``task_string`` removes it."""
        if not task_string:
            self.queue.pop(array_id, None)
            return
        self.queue[array_id] = QueueRecord(
            job_id=array_id, state="PENDING", reason=reason, node="", start_time=None,
            submit_time=None, account=account, user="u", qos="normal",
            name=name or f"job{array_id}", comment="slipway", partition="train",
            array_job_id=array_id, array_task_id=None, array_tasks=task_string)

    def finish_task(self, array_id: int, task: int, state: str, *, start: datetime,
                    end: datetime, exit_code: int | None = 0, gpus: dict | None = None,
                    attempt: int = 0, node: str = "a4k-1", name: str = "x",
                    account: str = "team-x"):
        """The task leaves squeue; sacct gets its record (``123_4``: array fields set)."""
        job_id = self.task_job_id(array_id, task)
        self.queue.pop(job_id, None)
        self.acct.append(SacctRecord(
            job_id=job_id, attempt=attempt, name=name, user="u", account=account, qos="normal",
            state=state, exit_code=exit_code, signal=None, submit=start, start=start, end=end,
            elapsed_s=int((end - start).total_seconds()), node=node, gpus=gpus or {"a4000": 1},
            array_job_id=array_id, array_task_id=task))
        return job_id


class InMemoryAccounts:
    """``SlurmAccounts`` in memory: Slurm's accounting database starts empty; ``converge``
    records the desired state, answers the changes sacctmgr would have made (slurm_bridge's
    ``plan``; empty when in step) and then holds that state, association limits included
    (``limits_of(account, user=None)`` reads them back). ``error``: raised by the next
    converge (sacctmgr/slurmdbd down)."""

    def __init__(self) -> None:
        self.current = CurrentState()
        self.desired: DesiredState | None = None
        self.calls = 0
        self.error: Exception | None = None

    def converge(self, desired: DesiredState) -> list[str]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        changes = [str(c) for c in plan(desired, self.current)]
        self.desired = desired
        self.current = CurrentState(
            accounts={a.name: CurrentAccount(a.name, a.parent, str(a.fairshare), a.grp_tres_mins,
                                             a.limits)
                      for a in desired.accounts},
            assocs={(u.name, acct): CurrentAssoc(u.name, acct, tuple(sorted(qos)), qos[0],
                                                 u.limits_in(acct))
                    for u in desired.users for acct, qos in u.accounts},
            default_accounts={u.name: u.default_account for u in desired.users},
            qos={q.name: q for q in desired.qos})
        return changes

    def account_names(self) -> list[str]:
        return sorted(self.current.accounts)

    def limits_of(self, account: str, user: str | None = None) -> Limits:
        """The limits Slurm holds for the account (or the user's association in it)."""
        if user is None:
            return self.current.accounts[account].limits
        return self.current.assocs[(user, account)].limits


class InMemoryGit:
    """``Git`` in memory: repositories are ``{ref: sha}`` maps plus the files of each commit
    (``commit(team, project, ref, files)`` makes one)."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], dict[str, str]] = {}
        self.files: dict[str, dict[str, str]] = {}
        self.sizes: dict[tuple[str, str], int] = {}
        self.merges: list[dict[str, Any]] = []   # every merge_sweep call, in order
        self.merged: dict[tuple[str, str, str, int], str] = {}   # (team, project, branch, job)

    def create_repo(self, team: str, project: str) -> Path:
        self.repos.setdefault((team, project), {})
        return Path("/in-memory") / team / f"{project}.git"

    def delete_repo(self, team: str, project: str) -> bool:
        return self.repos.pop((team, project), None) is not None

    def refresh_hooks(self) -> int:
        return 0   # in-memory repositories have no hooks

    def repo_bytes(self, team: str, project: str) -> int:
        if (team, project) not in self.repos:
            raise OSError(f"no repository {team}/{project}")
        return self.sizes.get((team, project), 0)

    def entrypoint_problem(self, team, project, sha, quarantine=None) -> str | None:
        files = self.files.get(sha)
        if files is None:
            return f"slipway: cannot read {ENTRYPOINT} at {sha[:12]}: unknown commit"
        return None if ENTRYPOINT in files else f"slipway: no {ENTRYPOINT} at {sha[:12]}"

    def resolve_ref(self, team: str, project: str, ref: str) -> str | None:
        return self.repos.get((team, project), {}).get(ref)

    def delete_ref(self, team: str, project: str, ref: str) -> bool:
        return self.repos.get((team, project), {}).pop(ref, None) is not None

    def commit(self, team: str, project: str, ref: str, files: dict[str, str]) -> str:
        sha = f"{len(self.files) + 1:040x}"
        self.files[sha] = dict(files)
        self.repos.setdefault((team, project), {})[ref] = sha
        return sha

    def merge_sweep(self, team: str, project: str, *, branch: str, base: str,
                    tasks: dict[int, str], job_id: int):
        """Like git_gateway.sweep_merge.merge_tasks on ``files``: the tip's files plus each
        task's added/changed ones (vs ``base``) under ``sweep-<job>/task-<i>/``; idempotent per
        job and branch; the branch (re)created when gone. Every call is kept in ``merges``."""
        from git_gateway.sweep_merge import MergeResult

        self.merges.append({"team": team, "project": project, "branch": branch, "base": base,
                            "tasks": dict(tasks), "job_id": job_id})
        if not tasks:
            return MergeResult(None, branch, message=f"no task of sweep job {job_id} has "
                                                     f"results: nothing was merged into {branch}")
        refs, ref = self.repos.setdefault((team, project), {}), f"refs/heads/{branch}"
        old_files, base_files = self.files.get(refs.get(ref) or base, {}), self.files.get(base, {})
        files, deletions, merged = {}, {}, dict(old_files)
        for i in sorted(tasks):
            mine = self.files.get(tasks[i], {})
            changed = {p: c for p, c in mine.items() if base_files.get(p) != c}
            merged.update({f"sweep-{job_id}/task-{i}/{p}": c for p, c in changed.items()})
            files[i] = len(changed)
            if gone := sorted(p for p in base_files if p not in mine):
                deletions[i] = gone
        tip, done = refs.get(ref), self.merged.get((team, project, branch, job_id))
        if tip and done:   # the real one finds its Slipway-Job trailer in the branch's history
            return MergeResult(done, branch, files, deletions, already=True,
                               message=f"the results of sweep job {job_id} are on {branch} "
                                       f"already ({done[:12]})")
        sha = self.merged[(team, project, branch, job_id)] = self.commit(team, project, ref, merged)
        return MergeResult(sha, branch, files, deletions, created=tip is None,
                           message=f"merged the results of {len(files)} tasks of sweep job "
                                   f"{job_id} into {branch} at {sha[:12]}, under sweep-{job_id}/")


class InMemoryCatalog:
    """``Containers`` in memory: ``images`` maps a name to the runtimes it has a build for."""

    def __init__(self, images: dict[str, tuple[str, ...]] | None = None):
        self.images = dict(images or {"python": ("charliecloud", "apptainer")})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.images))

    def runtime_problem(self, name: str, runtime: str) -> str | None:
        available = ", ".join(n for n in self.names if runtime in self.images[n]) or "(none)"
        if name not in self.images:
            return f"unknown image {name!r}; available images: {available}"
        if runtime not in self.images[name]:
            return f"image {name!r} has no build for {runtime}; available images: {available}"
        return None

    def image_digest(self, name: str, runtime: str, images_root=None) -> str:
        return "sha256:" + f"{name}-{runtime}".encode().hex().ljust(64, "0")[:64]

    def has_jupyter(self, name: str) -> bool:
        """The python image has JupyterLab (as the packaged catalog says), others not."""
        return name == "python"

    def sif_path(self, name: str, images_root) -> Path:
        return Path(images_root) / f"{name}.sif"

    def local_path(self, name: str, cache=None) -> Path:
        return Path(cache or "/in-memory/images") / name


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


class InMemoryMailer:
    """``Mailer`` in memory: ``sent`` holds every message, oldest first."""

    def __init__(self) -> None:
        self.sent: list[Mail] = []

    def send(self, to: str, subject: str, body: str) -> None:
        self.sent.append(Mail(to, subject, body))


def make_config(tmp: Path, **over) -> Config:
    over.setdefault("data_dir", tmp / "var")
    over.setdefault("hook_secret", "test-hook-secret")
    over.setdefault("secret_key", "test-secret-key")
    return Config(**over)


def make_services(tmp: Path, *, backend=None, clock=None, catalog=None, accounts=None, git=None,
                  mailer=None, payments=None, **over) -> Services:
    """Services on temp dirs through ``portal.bootstrap``, with the in-memory Slurm (jobs and
    accounts) and mailer; git repositories are real (under ``tmp``) unless ``git`` is given, and
    the catalog is the packaged one unless ``catalog`` is."""
    cfg = make_config(tmp, **over)
    svc = bootstrap(cfg, backend=backend or FakeBackend(), accounts=accounts or InMemoryAccounts(),
                    git=git, catalog=catalog, mailer=mailer or InMemoryMailer(), payments=payments,
                    clock=clock or Clock())
    svc.chown = False
    return svc


def seed(svc: Services, *, team="nlp", user="alice", unix_user=None, project="proj",
         gpu_type="a4000", gpu_count=1, image="python", funds: str | None = "25.00",
         admin=False) -> dict:
    """A user, a team with the user as owner, a project with its bare repo, optional funds."""
    from portal.billing import ledger as billing

    now = svc.now()
    with svc.db.transaction() as s:
        u = User(name=user, unix_user=unix_user or f"sw-{user}",
                 is_cluster_admin=admin, created_at=now)
        t = Team(name=team, personal=False, created_at=now)
        s.add_all([u, t])
        s.flush()
        s.add(Membership(user_id=u.id, team_id=t.id, role="owner", created_at=now))
        p = Project(team_id=t.id, name=project, gpu_type=gpu_type, gpu_count=gpu_count, image=image,
                    time_limit_min=60, created_at=now)
        s.add(p)
        s.flush()
        ids = {"user_id": u.id, "team_id": t.id, "project_id": p.id}
    svc.git.create_repo(team, project)
    if funds:
        billing.add_funds(svc.db, team, funds, by="test", now=now)
    return ids


def git(*args: str, cwd: Path | str | None = None) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x", GIT_TERMINAL_PROMPT="0")
    r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {r.stderr}")
    return r.stdout.strip()


def commit_to_bare(bare: Path, work: Path, files: dict[str, str], branch: str = "exp-1") -> str:
    """Make a commit with ``files`` and write it straight into ``bare`` (no hooks); return sha."""
    if not (work / ".git").exists():
        work.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "-b", branch, cwd=work)
    for name, content in files.items():
        (work / name).write_text(content)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "c", "--allow-empty", cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work)
    # push objects only (no ref update, no hooks): the pre-receive view of a push
    git("--git-dir", str(bare), "fetch", "-q", str(work), f"{sha}:refs/tmp/{sha}", cwd=work)
    return sha


def hook_payload(phase: str, repo: str, pusher: str, updates: list[tuple[str, str, str]],
                 options: list[str] | None = None, is_job: bool = False) -> dict[str, Any]:
    return {"phase": phase, "repo": repo, "pusher": pusher, "pusher_is_job": is_job,
            "updates": [{"ref": r, "old": o, "new": n} for r, o, n in updates],
            "push_options": options or []}
