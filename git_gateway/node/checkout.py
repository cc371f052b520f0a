"""The job's checkout on this node, across attempts: ``git init``/fetch/checkout of the pushed
commit, the attempt count and records in ``.git``, the "(interrupted)" commit and push of what an
earlier attempt left (a requeue), the trailers of this attempt's commits, and its commit-back.
``JobCheckout`` is the git half of the Runner (runner.py)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

from . import gitops, pushing, results, trailers
from .events import say
from .spec import RunnerSpec

ATTEMPTS_FILE = "slipway-attempts"      # in .git: how many attempts started in this checkout
ATTEMPT_RECORD = "slipway-attempt-{}.json"  # in .git: where and when attempt N started


class JobCheckout:
    def __init__(self, spec: RunnerSpec):
        self.spec = spec
        self.env = gitops.git_env(spec.repo_url, spec.username, spec.token, workdir=spec.workdir)
        self.attempt = 1
        self.base = spec.commit          # the commit this attempt started from
        self.started = attempt_start()   # epoch seconds: Slurm's start of this attempt
        self.node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        self.devices = os.environ.get("CUDA_VISIBLE_DEVICES")

    @property
    def results_ref(self) -> str:
        """Where this job's (or sweep task's) results go: the spec's ``results_ref`` when given,
        else ``refs/heads/results/<branch>/<job>``."""
        return self.spec.results_ref or results.results_ref(self.spec.branch, self.spec.job_id)

    @property
    def label(self) -> str:
        """``job 12``, or ``job 12 task 3``: how messages and commits name this job."""
        return results.job_label(self.spec.job_id, self.spec.task_id)

    def _git(self, *args, timeout=600):
        return gitops.run_git(list(args), self.spec.workdir, self.env, timeout=timeout)

    def checkout(self) -> None:
        spec, wd = self.spec, self.spec.workdir
        os.makedirs(wd, mode=0o700, exist_ok=True)
        first = getattr(self, "_requeued", None)   # a second try (runner.run: a stop reached git)
        requeued = os.path.isdir(os.path.join(wd, ".git")) if first is None else first
        if not requeued:
            self._git("init", "--quiet", "--initial-branch=slipway-job", wd)   # safe to redo
        if first is None:
            self.attempt = self._count_attempt(requeued)
            self._record_attempt()
            self._requeued = requeued
        if _has_lfs(self):
            self._git("lfs", "install", "--local")
        gitops.ensure_remote(wd, self.env, spec.repo_url)
        base = self._keep_previous_attempt(self.attempt - 1) if requeued else spec.commit
        try:
            self._git("fetch", "--quiet", "--depth=1", "--no-tags", "origin", spec.commit)
        except gitops.GitFailed as e:
            if not (requeued and self._have(spec.commit)):
                raise
            say(f"fetch failed ({e}); using {spec.commit[:12]} already in the checkout")
        self._git("checkout", "--quiet", "--force", "--detach", base)
        if requeued:
            # Everything untracked was committed above; what is left is what .gitignore matches
            # (checkpoints/, *.pt), which the new attempt resumes from: no -x.
            self._git("clean", "-ffdq")
        self.base = base

    def _count_attempt(self, requeued: bool) -> int:
        path = os.path.join(self.spec.workdir, ".git", ATTEMPTS_FILE)
        try:
            with open(path, encoding="ascii") as f:
                before = int(f.read().strip() or 0)
        except (OSError, ValueError):
            before = 1 if requeued else 0
        with open(path, "w", encoding="ascii") as f:
            f.write(f"{before + 1}\n")
        return before + 1

    def _record_path(self, attempt: int) -> str:
        return os.path.join(self.spec.workdir, ".git", ATTEMPT_RECORD.format(attempt))

    def _record_attempt(self) -> None:
        """Where and when this attempt runs, for an "(interrupted)" commit a later one makes."""
        with open(self._record_path(self.attempt), "w", encoding="utf-8") as f:
            json.dump({"node": self.node, "devices": self.devices, "started": self.started}, f)

    def _attempt_record(self, attempt: int) -> dict:
        try:
            with open(self._record_path(attempt), encoding="utf-8") as f:
                rec = json.load(f)
            return rec if isinstance(rec, dict) else {}
        except (OSError, ValueError):
            return {}

    def trailer(self, exit_code: int | None, sig: str | None, *, attempt: int | None = None,
                interrupted: bool = False) -> str:
        """The trailer block of a commit of ``attempt`` (default: this one). An interrupted
        attempt's node and devices come from its record; its exit status and minutes are not
        known (it ended without committing), so they read ``unknown``."""
        spec = self.spec
        gpu_count = spec.gpu_count
        if gpu_count is not None and spec.nodes > 1:
            gpu_count *= spec.nodes          # gpu_count is per node: every node's GPUs are billed
        if attempt is None or attempt == self.attempt:
            attempt, node, devices = self.attempt, self.node, self.devices
            elapsed = None if interrupted else max(0.0, time.time() - self.started)
        else:
            rec = self._attempt_record(attempt)
            node, devices, elapsed = rec.get("node"), rec.get("devices"), None
        pairs = trailers.result_trailers(
            job_id=spec.job_id, commit=spec.commit, branch=spec.branch, attempt=attempt,
            image=spec.image, image_digest=spec.image_digest, gpu_type=spec.gpu_type,
            gpu_count=gpu_count, gpu_devices=devices, node=node, exit_code=exit_code,
            signal=sig, interrupted=interrupted, elapsed_seconds=elapsed,
            gpu_rate=spec.gpu_rate)
        return trailers.format_trailers(shape_trailers(pairs, spec))

    def _have(self, sha: str) -> bool:
        return gitops.run_git(["cat-file", "-e", f"{sha}^{{commit}}"], self.spec.workdir,
                               self.env, check=False).returncode == 0

    def _keep_previous_attempt(self, prev: int) -> str:
        """Save what an earlier attempt left in the checkout; return the commit to start from.

        Uncommitted files are committed ("slipway: job N attempt K (interrupted)"); a commit the
        server may not have is pushed to the results ref (bounded retries; if that fails it
        stays here and the final commit-back, built on top of it, pushes it). The new attempt
        starts from it when it descends from the job's commit.
        """
        spec, wd = self.spec, self.spec.workdir
        lock = os.path.join(wd, ".git", "index.lock")
        if os.path.exists(lock):      # the attempt that held it is gone (requeued)
            say("removing index.lock left by an earlier attempt")
            os.unlink(lock)
        head = gitops.local_ref(wd, self.env, "HEAD")
        if head is None:              # the earlier attempt died before its checkout
            return spec.commit
        dirty = gitops.run_git(["status", "--porcelain", "--untracked-files=all",
                                 "--ignore-submodules=all"], wd, self.env).stdout.strip()
        if dirty:
            committed, _lfs, notes = results.commit_all(
                wd, self.env, message=f"slipway: {self.label} attempt {prev} (interrupted)",
                trailer=self.trailer(None, None, attempt=prev, interrupted=True),
                lfs_threshold_bytes=spec.lfs_threshold_bytes,
                author_name=spec.author_name, author_email=spec.author_email)
            for n in notes:
                say(n)
            if committed:
                head = gitops.local_ref(wd, self.env, "HEAD")
                say(f"{self.label}: saved the files of attempt {prev} as {head[:12]}")
        out = results.push_pending(
            wd, repo_url=spec.repo_url, username=spec.username, token=spec.token,
            branch=spec.branch, job_id=spec.job_id, pushed_sha=spec.commit,
            deadline=time.monotonic() + spec.requeue_push_seconds, ref=self.results_ref)
        ref = self.results_ref[len("refs/heads/"):]
        if out is not None and out.ok:
            say(f"{self.label}: pushed attempt {prev}'s work ({head[:12]}) to {ref}")
        elif out is not None:
            say(f"{self.label}: could not push attempt {prev}'s work ({head[:12]}) to {ref} "
                f"({pushing._reason(out)}); this attempt builds on it and pushes it at the end")
        if head != spec.commit and gitops.run_git(
                ["merge-base", "--is-ancestor", spec.commit, head], wd, self.env,
                check=False).returncode == 0:
            return head
        return spec.commit

    def commit_back(self, status: int | None, sig: str | None,
                    deadline: float | None = None) -> results.CommitBackResult:
        """results.commit_back for this attempt (the lease follows an earlier attempt's push)."""
        spec = self.spec
        lease = gitops.local_ref(spec.workdir, self.env, results.LOCAL_BRANCH_REF)
        if deadline is None:
            deadline = time.monotonic() + spec.push_retry_seconds
        return results.commit_back(
            spec.workdir, repo_url=spec.repo_url, username=spec.username, token=spec.token,
            branch=spec.branch, job_id=spec.job_id, pushed_sha=spec.commit,
            exit_code=status, signal=sig, lfs_threshold_bytes=spec.lfs_threshold_bytes,
            author_name=spec.author_name, author_email=spec.author_email, deadline=deadline,
            lease_sha=lease or spec.commit, trailer=self.trailer(status, sig),
            ref=self.results_ref, task_id=spec.task_id, push_branch=spec.push_branch)


def shape_trailers(pairs: list, spec: RunnerSpec) -> list:
    """``pairs`` (trailers.result_trailers) with a sweep task's ``Slipway-Task`` after
    ``Slipway-Job`` and a multi-node job's ``Slipway-Nodes`` after ``Slipway-GPUs`` (whose count
    is then every node's: ``gpu_count`` x nodes)."""
    out = []
    for key, value in pairs:
        out.append((key, value))
        if key == "Slipway-Job" and spec.task_id is not None:
            out.append(("Slipway-Task", str(spec.task_id)))
        if key == "Slipway-GPUs" and spec.nodes > 1:
            out.append(("Slipway-Nodes", str(spec.nodes)))
    return out


def attempt_start(environ=None, now=None) -> float:
    """When this attempt started: Slurm's ``SLURM_JOB_START_TIME`` (epoch seconds; Slurm 23.02+)
    when it is set and not in the future, else now (the runner starts with the batch step)."""
    environ = os.environ if environ is None else environ
    now = time.time() if now is None else now
    try:
        start = float(environ["SLURM_JOB_START_TIME"])
    except (KeyError, ValueError):
        return now
    return start if 0 < start <= now else now


def _has_lfs(runner: JobCheckout) -> bool:
    try:
        return subprocess.run(["git", "lfs", "version"], capture_output=True,
                              env=runner.env).returncode == 0
    except OSError:
        return False
