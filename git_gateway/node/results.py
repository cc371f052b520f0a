"""Commit-back: after the entrypoint exits, commit every changed file and push it home.

Runs on the compute node, in the job's checkout (a detached HEAD at exactly the pushed commit).

    1. Files over ``lfs_threshold_bytes`` that are new/changed get a ``.gitattributes`` line for
       their exact path (``/<escaped path> filter=lfs diff=lfs merge=lfs -text``) so git-lfs
       stores them; ``git lfs install --local`` makes the filter and pre-push hook available.
    2. ``git add -A`` (``.gitignore`` is honoured), commit "slipway: results of job 42 (exit 0)"
       with the git trailers of ``trailers`` (job, commit, image and digest, GPUs, node, cost).
    3. Push to ``refs/heads/results/<branch>/<job>`` — always, forced (a requeued attempt
       replaces the previous attempt's results ref; the ref belongs to the job). A sweep task
       pushes to its own ref instead (``ref``: ``refs/heads/results/<branch>/<job>/<task>``).
    4. Push to ``refs/heads/<branch>`` with ``--force-with-lease=refs/heads/<branch>:<pushed>``:
       if the user pushed meanwhile this is refused and the results ref keeps the work.
       The two pushes are independent: each is tried whatever the other's outcome, and the
       result (and its message) reports both. A sweep task (``push_branch=False``) never
       pushes the branch: Slipway merges every task's results when the sweep ends.

Pushes that fail without a definite answer from the server (connection refused, reset, 5xx,
timeout, a hook that could not reach Slipway) are retried with exponential backoff (0.5 s,
1 s, 2 s, ... capped at 15 s) until ``retry_seconds`` (default 150 s) or ``deadline`` has
passed; a definite answer (the lease refused, bad credentials, no such repository) is final.
The normal case pushes at once. If a push still fails, nothing is thrown away: the commit stays
at HEAD of the job's checkout and under ``refs/slipway/results`` there, so a later attempt
(``push_pending``, which the runner calls when a requeued attempt starts) can push it.

Local bookkeeping refs in the checkout (never pushed): ``refs/slipway/results`` -- the last
results commit made here; ``refs/slipway/pushed`` -- the last commit the results ref on the
server is known to hold; ``refs/slipway/branch`` -- the last commit this job put on the branch
(the lease of a later attempt's branch push).

Nothing changed: no commit is made; the results ref is pushed pointing at the pushed commit (a
record that the job ran and produced nothing) and the branch is left alone
(``branch_updated=False``, the message says why).

The token never touches a URL, .git/config, argv or logs: git gets it through the environment
(``GIT_CONFIG_COUNT/KEY/VALUE`` = ``http.<scheme://host/>.extraHeader: Authorization: Basic …``),
which only the job's own user can read (/proc/PID/environ is 0400). git-lfs honours the same
setting, and the LFS actions echo the header back.

The pieces: gitops (git, its environment, refs), pushing (push, push_with_retry), lfs_track
(step 1); this module holds the commit and the two pushes (commit_all, commit_back, push_pending).
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import time
from dataclasses import asdict, dataclass, field

from . import trailers
from .gitops import ensure_remote, git_env, local_ref, run_git, validate_branch
from .lfs_track import (
    DEFAULT_LFS_THRESHOLD,
    _lfs_available,
    _lfs_candidates,
    track_large_files,
)
from .pushing import DEFAULT_PUSH_RETRY_SECONDS, PushOutcome, _reason, push_with_retry

log = logging.getLogger(__name__)

LOCAL_RESULTS_REF = "refs/slipway/results"
LOCAL_PUSHED_REF = "refs/slipway/pushed"
LOCAL_BRANCH_REF = "refs/slipway/branch"
RESULTS_PREFIX = "refs/heads/results/"
SWEEP_TASK_NOTE = "branch left to Slipway (sweep task)"


@dataclass(frozen=True)
class CommitBackResult:
    results_ref: str
    sha: str                  # what results_ref points at (the pushed commit when nothing changed)
    changed: bool
    results_pushed: bool
    branch_updated: bool
    message: str
    lfs_paths: tuple[str, ...] = field(default=())
    seconds: float = 0.0

    def event(self) -> dict:
        """The ``results`` event of docs/ARCHITECTURE.md."""
        return {"event": "results", "results_ref": self.results_ref, "sha": self.sha,
                "branch_updated": self.branch_updated, "message": self.message}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["lfs_paths"] = list(self.lfs_paths)
        return d


def results_ref(branch: str, job_id: int | str) -> str:
    job = str(job_id)
    if not job.isdigit():
        raise ValueError(f"job id must be digits: {job_id!r}")
    return f"refs/heads/results/{branch}/{job}"


def checked_results_ref(ref: str) -> str:
    """A results ref given in full (a sweep task's): under ``refs/heads/results/`` and a valid
    ref name; returned unchanged."""
    if not isinstance(ref, str) or not ref.startswith(RESULTS_PREFIX) or ref == RESULTS_PREFIX:
        raise ValueError(f"results ref must be under {RESULTS_PREFIX}: {ref!r}")
    validate_branch(ref[len("refs/heads/"):])
    return ref


def job_label(job_id, task_id: int | None = None) -> str:
    """``job 12``, or ``job 12 task 3`` for a sweep task."""
    return f"job {job_id}" if task_id is None else f"job {job_id} task {task_id}"


def commit_message(job_id, exit_code: int | None, signal: str | None = None,
                   task_id: int | None = None) -> str:
    status = f"exit {exit_code}" if exit_code is not None else "no exit status"
    if signal:
        status += f", signal {signal}"
    return f"slipway: results of {job_label(job_id, task_id)} ({status})"


def commit_all(cwd: str, env: dict[str, str], *, message: str, trailer: str,
               lfs_threshold_bytes: int | None = DEFAULT_LFS_THRESHOLD,
               author_name: str = "Slipway", author_email: str = "slipway@localhost"
               ) -> tuple[bool, list[str], list[str]]:
    """Commit every changed/new/deleted file of the work tree on top of HEAD (files over the LFS
    threshold through git-lfs). -> (committed, lfs paths, notes). Records the commit under
    ``refs/slipway/results`` so it survives a later checkout of another commit."""
    lfs_paths: list[str] = []
    notes: list[str] = []
    if lfs_threshold_bytes is not None and lfs_threshold_bytes >= 0:
        if _lfs_available(cwd, env):
            run_git(["lfs", "install", "--local"], cwd, env)
            lfs_paths = track_large_files(cwd, env, lfs_threshold_bytes)
        elif _lfs_candidates(cwd, env, lfs_threshold_bytes):
            notes.append("git-lfs is not installed on the node: large files went into plain git")
    run_git(["add", "-A"], cwd, env)
    if run_git(["diff", "--cached", "--quiet"], cwd, env, check=False).returncode == 0:
        return False, lfs_paths, notes
    cenv = dict(env, GIT_AUTHOR_NAME=author_name, GIT_AUTHOR_EMAIL=author_email,
                GIT_COMMITTER_NAME=author_name, GIT_COMMITTER_EMAIL=author_email)
    run_git(["commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message, "-m", trailer],
            cwd, cenv)
    run_git(["update-ref", LOCAL_RESULTS_REF, "HEAD"], cwd, env)
    return True, lfs_paths, notes


def _mark(cwd: str, env: dict[str, str], name: str, sha: str) -> None:
    run_git(["update-ref", name, sha], cwd, env, check=False)


def commit_back(workdir: str, *, repo_url: str, username: str, token: str, branch: str,
                job_id: int | str, pushed_sha: str, exit_code: int | None,
                signal: str | None = None, lfs_threshold_bytes: int = DEFAULT_LFS_THRESHOLD,
                author_name: str = "Slipway", author_email: str = "slipway@localhost",
                push_attempts: int | None = None, deadline: float | None = None,
                retry_seconds: float = DEFAULT_PUSH_RETRY_SECONDS,
                lease_sha: str | None = None, sleep=time.sleep,
                trailer: str | None = None, ref: str | None = None,
                task_id: int | None = None, push_branch: bool = True) -> CommitBackResult:
    """Commit the job's files and push them; see the module docstring. Never raises for push
    failures (they are in the result); raises InvalidBranch / GitFailed for local problems.
    ``trailer``: the commit's trailer block (``trailers.format_trailers``; the runner gives the
    job's full facts); default: the job and its exit status only.

    The commit is made on top of HEAD, which is ``pushed_sha`` or (a requeued attempt that
    resumed from an earlier attempt's files) a descendant of it. Retries of each push stop at
    ``deadline`` (a time.monotonic() value; default: ``retry_seconds`` from now) or after
    ``push_attempts`` pushes. ``lease_sha``: where the branch must still be for the branch push
    (default ``pushed_sha``; an earlier attempt that updated the branch moves it).
    ``ref``: the results ref in full (default ``results/<branch>/<job>``; a sweep task's own);
    ``task_id`` names the task in the commit message; ``push_branch=False`` leaves the branch
    alone (``branch_updated`` False, the message says so).
    """
    t0 = time.monotonic()
    validate_branch(branch)
    for what, value in (("pushed_sha", pushed_sha), ("lease_sha", lease_sha or pushed_sha)):
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", value or ""):
            raise ValueError(f"{what} must be a full commit id: {value!r}")
    if deadline is None:
        deadline = t0 + max(0.0, float(retry_seconds))
    ref = results_ref(branch, job_id) if ref is None else checked_results_ref(ref)
    job = job_label(job_id, task_id)
    cwd = os.fspath(workdir)
    env = git_env(repo_url, username, token, workdir=cwd)
    ensure_remote(cwd, env, repo_url)

    msg = commit_message(job_id, exit_code, signal, task_id)
    if trailer is None:
        trailer = trailers.basic_trailers(job_id, exit_code, signal)
    _committed, lfs_paths, notes = commit_all(
        cwd, env, message=msg, trailer=trailer, lfs_threshold_bytes=lfs_threshold_bytes,
        author_name=author_name, author_email=author_email)
    sha = run_git(["rev-parse", "HEAD"], cwd, env).stdout.decode().strip()
    changed = sha != pushed_sha
    short_branch = ref[len("refs/heads/"):]

    # 1. the results ref (forced: it belongs to the job)
    res, _n = push_with_retry(cwd, env, f"+{sha}:{ref}", deadline=deadline,
                              max_attempts=push_attempts, sleep=sleep,
                              what=f"push of {short_branch}")
    results_ok = res.ok
    if results_ok:
        _mark(cwd, env, LOCAL_PUSHED_REF, sha)
    results_reason = "" if results_ok else _reason(res)
    if results_reason:
        log.error("%s: could not push %s: %s", job, short_branch, results_reason)

    if not changed:
        if results_ok:
            message = (f"slipway: {job} changed no files; {short_branch} points at the "
                       f"pushed commit {pushed_sha[:12]} and {branch} was left as it was")
        else:
            message = (f"slipway: could not push the results of {job}: {results_reason} "
                       f"(the job changed no files; {branch} was left as it was)")
        return CommitBackResult(ref, sha, False, results_ok, False, _join(message, notes),
                                tuple(lfs_paths), time.monotonic() - t0)

    kept = (f"the commit {sha[:12]} is kept in the job's checkout ({cwd}) and a requeued "
            f"attempt pushes it")
    if not push_branch:
        if results_ok:
            message = (f"slipway: results of {job} pushed to {short_branch} as {sha[:12]}; "
                       f"{SWEEP_TASK_NOTE}")
        else:
            message = (f"slipway: could not push the results of {job} to {short_branch} "
                       f"({results_reason}); {kept}; {SWEEP_TASK_NOTE}")
        return CommitBackResult(ref, sha, True, results_ok, False, _join(message, notes),
                                tuple(lfs_paths), time.monotonic() - t0)

    # 2. the branch, with a lease on the commit it had when the job started -- tried whatever
    #    happened to the results ref.
    lease = lease_sha or pushed_sha
    res, _n = push_with_retry(cwd, env, f"{sha}:refs/heads/{branch}",
                              lease=f"refs/heads/{branch}:{lease}", deadline=deadline,
                              max_attempts=push_attempts, sleep=sleep, what=f"push of {branch}")
    updated = res.ok
    if updated:
        _mark(cwd, env, LOCAL_BRANCH_REF, sha)
    moved = (not updated and res.rejected
             and any(w in res.summary for w in ("stale", "fetch first", "non-fast-forward")))

    if results_ok and updated:
        message = (f"slipway: results of {job} pushed to {branch} as {sha[:12]} "
                   f"(also kept at {short_branch})")
    elif results_ok and moved:
        message = (f"slipway: {branch} moved since {job} started (a newer push), so it "
                   f"was not updated; the results are on {short_branch} ({sha[:12]}): "
                   f"{shlex.join(['git', 'fetch', 'slipway', short_branch])} && git merge FETCH_HEAD")
    elif results_ok:
        message = (f"slipway: could not update {branch} ({_reason(res)}); the results of "
                   f"{job} are on {short_branch} ({sha[:12]})")
    elif updated:
        message = (f"slipway: results of {job} pushed to {branch} as {sha[:12]}, but "
                   f"{short_branch} could not be pushed ({results_reason})")
    elif moved:
        message = (f"slipway: could not push the results of {job} to {short_branch} "
                   f"({results_reason}), and {branch} moved since the job started so it was not "
                   f"updated; {kept}")
    else:
        message = (f"slipway: could not push the results of {job} ({short_branch}: "
                   f"{results_reason}; {branch}: {_reason(res)}); {kept}")
    if not updated and not results_ok:
        log.error("%s", message)
    return CommitBackResult(ref, sha, True, results_ok, updated, _join(message, notes),
                            tuple(lfs_paths), time.monotonic() - t0)


def push_pending(workdir: str, *, repo_url: str, username: str, token: str, branch: str,
                 job_id: int | str, pushed_sha: str, deadline: float | None = None,
                 max_attempts: int | None = None, sleep=time.sleep,
                 ref: str | None = None) -> PushOutcome | None:
    """Push HEAD of a job's checkout to its results ref (``ref`` in full when given: a sweep
    task's) if it holds work the server may not have (a commit other than ``pushed_sha`` that is
    not known to be pushed). None: nothing to push. Never raises for push failures; the commit
    stays where it is either way."""
    cwd = os.fspath(workdir)
    env = git_env(repo_url, username, token, workdir=cwd)
    head = local_ref(cwd, env, "HEAD")
    if head is None or head == pushed_sha or head == local_ref(cwd, env, LOCAL_PUSHED_REF):
        return None
    ensure_remote(cwd, env, repo_url)
    validate_branch(branch)
    ref = results_ref(branch, job_id) if ref is None else checked_results_ref(ref)
    out, _n = push_with_retry(cwd, env, f"+{head}:{ref}", deadline=deadline,
                              max_attempts=max_attempts, sleep=sleep,
                              what=f"push of {ref[len('refs/heads/'):]}")
    if out.ok:
        _mark(cwd, env, LOCAL_PUSHED_REF, head)
    return out


def _join(message: str, notes: list[str]) -> str:
    return " ".join([message, *notes]) if notes else message
