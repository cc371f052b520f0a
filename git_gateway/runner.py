"""The node-side job program: ``python -m git_gateway.runner SPEC.json``.

    1. ``git init`` the workdir (or reuse it on a requeue), fetch exactly ``commit`` (depth 1)
       with the job token, check it out detached (git-lfs files are smudged), ``git clean``.
    2. POST ``{"event": "started"}``.
    3. Run ``container_argv`` in its own process group, cwd = workdir, env = a minimal
       environment + the spec's ``env``; stdout/stderr are inherited (Slurm's output file).
    4. SIGTERM/SIGINT/SIGUSR1 are forwarded to the child's process group. After TERM/INT the
       child gets ``grace_seconds``, then SIGKILL (the whole group).
    5. POST ``finishing`` (in the background), ``results.commit_back``, POST ``results``.
    6. Exit with the entrypoint's status (128+N when it died of signal N).

The batch script should ``exec`` this program so Slurm's TERM reaches it directly. The workdir
must hold nothing but the checkout: everything in it is committed (keep Slurm's output file and
the spec outside it). The token is never passed to the container's environment.
Callback failures are logged, never fatal. Standard library + git_gateway.results only.
"""
from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from . import results

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PASS_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "HOME", "TMPDIR",
             "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES",
             "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
_PASS_PREFIX = ("SLURM_",)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class RunnerSpec:
    job_id: int
    repo_url: str
    username: str
    token: str
    commit: str
    branch: str
    workdir: str
    container_argv: tuple[str, ...]
    callback_url: str | None = None
    env: dict = field(default_factory=dict)
    lfs_threshold_bytes: int = results.DEFAULT_LFS_THRESHOLD
    grace_seconds: float = 5.0
    author_name: str = "Slipway"
    author_email: str = "slipway@localhost"

    @classmethod
    def from_dict(cls, d: dict) -> "RunnerSpec":
        try:
            job_id = int(d["job_id"])
            argv = d["container_argv"]
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise SpecError("container_argv must be a non-empty list of strings")
            env = d.get("env") or {}
            if not isinstance(env, dict):
                raise SpecError("env must be an object")
            for k, v in env.items():
                if not _ENV_NAME.fullmatch(str(k)) or not isinstance(v, str) or "\0" in v:
                    raise SpecError(f"bad env entry {k!r}")
            commit = str(d["commit"])
            if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
                raise SpecError("commit must be a full hex object id")
            workdir = str(d["workdir"])
            if not os.path.isabs(workdir):
                raise SpecError("workdir must be absolute")
            return cls(job_id=job_id, repo_url=str(d["repo_url"]), username=str(d["username"]),
                       token=str(d["token"]), commit=commit, branch=str(d["branch"]),
                       workdir=workdir, container_argv=tuple(argv),
                       callback_url=d.get("callback_url") or None, env=dict(env),
                       lfs_threshold_bytes=int(d.get("lfs_threshold_bytes",
                                                     results.DEFAULT_LFS_THRESHOLD)),
                       grace_seconds=float(d.get("grace_seconds", 5)),
                       author_name=str(d.get("author_name") or "Slipway"),
                       author_email=str(d.get("author_email") or "slipway@localhost"))
        except KeyError as e:
            raise SpecError(f"spec is missing {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, SpecError):
                raise
            raise SpecError(str(e)) from None

    @classmethod
    def load(cls, path: str) -> "RunnerSpec":
        st = os.stat(path)
        if st.st_mode & 0o077:
            say(f"warning: {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                f"it holds a token and should be 0600")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def say(msg: str) -> None:
    try:
        sys.stderr.write(f"slipway-runner: {msg}\n")
        sys.stderr.flush()
    except Exception:
        pass


def post_event(url: str | None, token: str, event: dict, timeout: float = 3.0) -> bool:
    if not url:
        return False
    req = urllib.request.Request(url, data=json.dumps(event).encode("utf-8"), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read(65536)
        return True
    except Exception as e:  # never fatal
        say(f"callback {event.get('event')} failed: {e}")
        return False


def child_env(spec: RunnerSpec, base: dict | None = None) -> dict[str, str]:
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items()
           if k in _PASS_ENV or any(k.startswith(p) for p in _PASS_PREFIX)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update({"PYTHONUNBUFFERED": "1", "SLIPWAY_JOB_ID": str(spec.job_id),
                "SLIPWAY_BRANCH": spec.branch, "SLIPWAY_COMMIT": spec.commit})
    env.update(spec.env)
    return env


class Runner:
    def __init__(self, spec: RunnerSpec, post=post_event):
        self.spec = spec
        self.post = post
        self.child: subprocess.Popen | None = None
        self.stop_signal: str | None = None
        self.stop_at: float | None = None
        self.env = results.git_env(spec.repo_url, spec.username, spec.token)

    # ----------------------------------------------------------------- signals
    def _on_signal(self, signum, _frame) -> None:
        name = signal.Signals(signum).name[3:]
        if signum in STOPPING and self.stop_signal is None:
            self.stop_signal = name
            self.stop_at = time.monotonic()
            say(f"received SIG{name}: stopping the job (grace {self.spec.grace_seconds:g} s)")
        child = self.child
        if child is not None and child.returncode is None:
            try:
                os.killpg(child.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def install_signal_handlers(self) -> None:
        for s in FORWARDED:
            signal.signal(s, self._on_signal)

    # ---------------------------------------------------------------- checkout
    def _git(self, *args, timeout=600):
        return results.run_git(list(args), self.spec.workdir, self.env, timeout=timeout)

    def checkout(self) -> None:
        wd = self.spec.workdir
        os.makedirs(wd, mode=0o700, exist_ok=True)
        requeued = os.path.isdir(os.path.join(wd, ".git"))
        if not requeued:
            self._git("init", "--quiet", "--initial-branch=slipway-job", wd)
        if _has_lfs(self):
            self._git("lfs", "install", "--local")
        results.ensure_remote(wd, self.env, self.spec.repo_url)
        self._git("fetch", "--quiet", "--depth=1", "--no-tags", "origin", self.spec.commit)
        self._git("checkout", "--quiet", "--force", "--detach", self.spec.commit)
        if requeued:
            self._git("clean", "-ffdxq")

    # --------------------------------------------------------------------- run
    def run_child(self) -> int:
        if self.stop_signal is not None:
            say("stopped before the entrypoint started")
            return 128 + signal.Signals["SIG" + self.stop_signal].value
        sys.stdout.flush()
        sys.stderr.flush()
        self.child = subprocess.Popen(list(self.spec.container_argv), cwd=self.spec.workdir,
                                      env=child_env(self.spec), start_new_session=True,
                                      stdin=subprocess.DEVNULL)
        if self.stop_signal is not None:   # TERM raced with the start
            self._on_signal(signal.Signals["SIG" + self.stop_signal].value, None)
        killed = False
        while True:
            try:
                rc = self.child.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                if (self.stop_at is not None and not killed
                        and time.monotonic() - self.stop_at >= self.spec.grace_seconds):
                    say(f"entrypoint still running {self.spec.grace_seconds:g} s after "
                        f"SIG{self.stop_signal}: SIGKILL")
                    _killpg(self.child.pid, signal.SIGKILL)
                    killed = True
        # Leftover background processes of the entrypoint must not write during commit-back.
        _killpg(self.child.pid, signal.SIGKILL)
        return rc

    def run(self) -> int:
        spec = self.spec
        self.install_signal_handlers()
        try:
            results.validate_branch(spec.branch)
            self.checkout()
        except Exception as e:
            msg = f"slipway: could not check out {spec.commit[:12]} for job {spec.job_id}: {e}"
            say(msg)
            self.post(spec.callback_url, spec.token,
                      {"event": "finishing", "exit_code": 1, "signal": self.stop_signal})
            self.post(spec.callback_url, spec.token,
                      {"event": "results", "results_ref": None, "sha": None,
                       "branch_updated": False, "message": msg})
            return 1
        self.post(spec.callback_url, spec.token, {"event": "started"})
        say(f"job {spec.job_id}: running {spec.container_argv[0]} at {spec.commit[:12]}")

        rc = self.run_child()
        sig = self.stop_signal
        if rc < 0:
            sig = sig or signal.Signals(-rc).name[3:]
            status = 128 - rc
        else:
            status = rc
        say(f"job {spec.job_id}: entrypoint exited with status {status}"
            + (f" (signal {sig})" if sig else ""))

        # From here on a late TERM must not kill our own git processes mid-push: ignored
        # dispositions are inherited by git and git-remote-http (Slurm's KILL still ends all).
        for s in STOPPING:
            signal.signal(s, signal.SIG_IGN)
        finishing = threading.Thread(target=self.post, daemon=True, args=(
            spec.callback_url, spec.token,
            {"event": "finishing", "exit_code": status, "signal": sig}))
        finishing.start()
        deadline = (self.stop_at + 9.5) if self.stop_at is not None else None
        try:
            res = results.commit_back(
                spec.workdir, repo_url=spec.repo_url, username=spec.username, token=spec.token,
                branch=spec.branch, job_id=spec.job_id, pushed_sha=spec.commit,
                exit_code=status, signal=sig, lfs_threshold_bytes=spec.lfs_threshold_bytes,
                author_name=spec.author_name, author_email=spec.author_email, deadline=deadline)
            event = res.event()
            say(res.message)
        except Exception as e:
            event = {"event": "results", "results_ref": None, "sha": None,
                     "branch_updated": False,
                     "message": f"slipway: committing the results of job {spec.job_id} "
                                f"failed: {e}"}
            say(event["message"])
        if self.stop_at is not None:
            say(f"results pushed {time.monotonic() - self.stop_at:.2f} s after SIG{self.stop_signal}")
        finishing.join(timeout=3)
        self.post(spec.callback_url, spec.token, event)
        return status


def _has_lfs(runner: Runner) -> bool:
    try:
        return subprocess.run(["git", "lfs", "version"], capture_output=True,
                              env=runner.env).returncode == 0
    except OSError:
        return False


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m git_gateway.runner SPEC.json", file=sys.stderr)
        return 2
    try:
        spec = RunnerSpec.load(argv[0])
    except (OSError, ValueError) as e:
        say(f"bad spec {argv[0]}: {e}")
        return 2
    return Runner(spec).run()


if __name__ == "__main__":
    sys.exit(main())
