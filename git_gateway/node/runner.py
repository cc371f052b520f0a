"""The node-side job program: ``python -m git_gateway.node.runner SPEC.json``.

    1. ``git init`` the workdir (or reuse it on a requeue), fetch exactly ``commit`` (depth 1)
       with the job token, check it out detached (git-lfs files are smudged).
       On a requeue the earlier attempt's work is saved first: uncommitted files are committed
       as "slipway: job N attempt K (interrupted)", a commit the server may not have (that one,
       or results whose push failed) is pushed to ``results/<branch>/<job>``, and the new
       attempt starts from that commit (so checkpoints survive); nothing is cleaned away
       before it is committed, and files the branch's .gitignore matches (``checkpoints/``,
       ``*.pt``: never committed) are kept in the checkout for the new attempt.
    2. If the spec's ``PORT`` is taken on this node (another program listens there), pick a
       free one in the spec's ``port_min``-``port_max`` (the portal's configured range, which
       is all it accepts; 10000-65535 for a spec without them) instead; POST
       ``{"event": "started", "port": N}`` (the port the job really got, recorded by the portal
       for its proxy).
    3. Run ``container_argv`` in its own process group, cwd = workdir, env = a minimal
       environment + the spec's ``env``, prepared for the container runtime the way
       ``container_images.runtime.launch_env`` does (``USER`` set; for Apptainer every
       pass-through variable -- CUDA_VISIBLE_DEVICES, SLIPWAY_*, the spec's env such as PORT --
       re-exported as ``APPTAINERENV_<NAME>`` so it survives ``--cleanenv``); stdout/stderr are
       inherited (Slurm's output file). The runtime is the spec's ``container_runtime`` or, when
       absent, read from ``container_argv[0]`` (``apptainer``/``singularity``, ``ch-run``).
    4. SIGTERM/SIGINT/SIGUSR1 are forwarded to the child's process group. After TERM/INT the
       child gets ``grace_seconds``, then SIGKILL (the whole group).
    5. POST ``finishing`` (in the background), ``results.commit_back``, POST ``results``.
       Every commit the runner makes (results, "(interrupted)") carries the trailers of
       ``git_gateway.node.trailers``: job, attempt, pushed commit, branch, image and digest, GPUs and
       CUDA_VISIBLE_DEVICES, node, exit status, this attempt's minutes and cost (from the
       spec's ``gpu_rate``; the ledger is the authority).
       Pushes that fail for want of an answer are retried for ``push_retry_seconds`` (150),
       or ``stop_push_seconds`` (30) after a TERM -- below the portal's hard-cancel grace;
       the normal case pushes at once.
    6. Exit with the entrypoint's status (128+N when it died of signal N).

The batch script should ``exec`` this program so Slurm's TERM reaches it directly. The workdir
must hold nothing but the checkout: everything in it is committed (keep Slurm's output file and
the spec outside it). The token is never passed to the container's environment.
Callback failures are logged, never fatal. Standard library + git_gateway.node.results/trailers only.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import random
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from . import results, trailers

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PASS_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "HOME", "TMPDIR",
             "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES",
             "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
_PASS_PREFIX = ("SLURM_",)
#: Mirrors container_images.runtime.PASSTHROUGH_ENV (this program cannot import that package on
#: the node; tests/unit/test_git_gateway_units.py checks the two agree).
CONTAINER_PASSTHROUGH = ("CUDA_VISIBLE_DEVICES",)
CONTAINER_RUNTIMES = ("apptainer", "charliecloud")
_RUNTIME_PROGRAMS = {"apptainer": "apptainer", "singularity": "apptainer",
                     "ch-run": "charliecloud"}
ATTEMPTS_FILE = "slipway-attempts"      # in .git: how many attempts started in this checkout
ATTEMPT_RECORD = "slipway-attempt-{}.json"  # in .git: where and when attempt N started
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
    container_runtime: str | None = None
    passthrough_env: tuple[str, ...] = CONTAINER_PASSTHROUGH
    push_retry_seconds: float = results.DEFAULT_PUSH_RETRY_SECONDS
    stop_push_seconds: float = 30.0
    requeue_push_seconds: float = 20.0
    port_min: int = 10000
    port_max: int = 65535
    # facts for the result commits' trailers (git_gateway.node.trailers); None: unknown
    image: str | None = None
    image_digest: str | None = None
    gpu_type: str | None = None
    gpu_count: int | None = None
    gpu_rate: str | None = None          # dollars per GPU-hour, a decimal string

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
            runtime = d.get("container_runtime") or None
            if runtime is not None and runtime not in CONTAINER_RUNTIMES:
                raise SpecError(f"container_runtime must be one of {', '.join(CONTAINER_RUNTIMES)}"
                                f", not {runtime!r}")
            passthrough = d.get("passthrough_env", CONTAINER_PASSTHROUGH)
            if not isinstance(passthrough, (list, tuple)) or not all(
                    isinstance(n, str) and _ENV_NAME.fullmatch(n) for n in passthrough):
                raise SpecError("passthrough_env must be a list of variable names")
            times = {}
            for key, default in (("push_retry_seconds", results.DEFAULT_PUSH_RETRY_SECONDS),
                                 ("stop_push_seconds", 30.0), ("requeue_push_seconds", 20.0)):
                times[key] = float(d.get(key, default))
                if not 0 <= times[key] <= 3600:
                    raise SpecError(f"{key} must be between 0 and 3600 seconds")
            ports = {}
            for key, default in (("port_min", PORT_RANGE[0]), ("port_max", PORT_RANGE[1])):
                raw = d.get(key, default)
                if isinstance(raw, bool) or not isinstance(raw, int):
                    raise SpecError(f"{key} must be an integer port number, not {raw!r}")
                if not 1 <= raw <= 65535:
                    raise SpecError(f"{key} must be between 1 and 65535, not {raw}")
                ports[key] = raw
            if ports["port_min"] > ports["port_max"]:
                raise SpecError(f"port_min ({ports['port_min']}) is above port_max "
                                f"({ports['port_max']})")
            facts = _trailer_facts(d)
            return cls(job_id=job_id, repo_url=str(d["repo_url"]), username=str(d["username"]),
                       token=str(d["token"]), commit=commit, branch=str(d["branch"]),
                       workdir=workdir, container_argv=tuple(argv),
                       callback_url=d.get("callback_url") or None, env=dict(env),
                       lfs_threshold_bytes=int(d.get("lfs_threshold_bytes",
                                                     results.DEFAULT_LFS_THRESHOLD)),
                       grace_seconds=float(d.get("grace_seconds", 5)),
                       author_name=str(d.get("author_name") or "Slipway"),
                       author_email=str(d.get("author_email") or "slipway@localhost"),
                       container_runtime=runtime, passthrough_env=tuple(passthrough), **times,
                       **ports, **facts)
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


def _trailer_facts(d: dict) -> dict:
    """The spec's optional facts for the trailers, checked (a wrong type is a SpecError)."""
    out = {}
    for key in ("image", "image_digest", "gpu_type"):
        value = d.get(key)
        if value is not None and not isinstance(value, str):
            raise SpecError(f"{key} must be a string, not {value!r}")
        out[key] = value or None
    count = d.get("gpu_count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise SpecError(f"gpu_count must be a whole number >= 0, not {count!r}")
    out["gpu_count"] = count
    rate = d.get("gpu_rate")
    if rate is not None and (not isinstance(rate, str) or trailers.parse_rate(rate) is None):
        raise SpecError(f"gpu_rate must be a decimal string such as \"0.50\", not {rate!r}")
    out["gpu_rate"] = rate
    return out


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


def runtime_of(spec: RunnerSpec) -> str | None:
    """The container runtime that ``container_argv`` runs (None: a plain host command)."""
    if spec.container_runtime:
        return spec.container_runtime
    return _RUNTIME_PROGRAMS.get(os.path.basename(spec.container_argv[0]))


def container_launch_env(runtime: str, environ: dict, passthrough=CONTAINER_PASSTHROUGH
                         ) -> dict[str, str]:
    """Same rule as ``container_images.runtime.launch_env`` (kept equal by a unit test): ``USER``
    set (ch-run refuses to start without it); for Apptainer each pass-through variable present
    is re-exported as ``APPTAINERENV_<NAME>``, which ``--cleanenv`` lets through."""
    if runtime not in CONTAINER_RUNTIMES:
        raise ValueError(f"unknown container runtime {runtime!r}")
    out = dict(environ)
    if not out.get("USER"):
        try:
            out["USER"] = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            out["USER"] = str(os.getuid())
    if runtime == "apptainer":
        for name in dict.fromkeys(passthrough):
            if name in out:
                out[f"APPTAINERENV_{name}"] = out[name]
    return out


def launch_env(spec: RunnerSpec, base: dict | None = None) -> dict[str, str]:
    """The environment ``container_argv`` is executed in: ``child_env`` prepared for the spec's
    container runtime. Passed through (Apptainer): the runtime's pass-through names, SLIPWAY_*
    and every name of the spec's env (PORT, ...)."""
    env = child_env(spec, base)
    runtime = runtime_of(spec)
    if runtime is None:
        return env
    names = [*spec.passthrough_env, "SLIPWAY_JOB_ID", "SLIPWAY_BRANCH", "SLIPWAY_COMMIT",
             *spec.env]
    return container_launch_env(runtime, env, names)


#: The range a job may be moved to when its spec names none (specs written before port_min /
#: port_max existed; the portal's own defaults).
PORT_RANGE = (10000, 65535)


def port_is_free(port: int) -> bool:
    """Nothing on this node listens on ``port`` (a bind to it succeeds)."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this node
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def ensure_free_port(spec: "RunnerSpec", *, is_free=port_is_free, tries: int = 200) -> int | None:
    """The port the job gets: the spec's ``PORT`` when it is free on this node, else a free
    one in ``spec.port_min``..``spec.port_max`` (the only ports the portal accepts in the
    started event; written into ``spec.env``). Up to ``tries`` distinct ports are tried, in
    random order. None when the spec has no PORT."""
    raw = spec.env.get("PORT")
    if raw is None:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = None
    if port is not None and is_free(port):
        return port
    rng = random.SystemRandom()
    span = range(spec.port_min, spec.port_max + 1)
    for candidate in rng.sample(span, min(tries, len(span))):
        if candidate != port and is_free(candidate):
            say(f"slipway: port {raw} is taken on this node; the job gets PORT={candidate}")
            spec.env["PORT"] = str(candidate)
            return candidate
    say(f"slipway: no free port found in {spec.port_min}-{spec.port_max} on this node; "
        f"PORT stays {raw}")
    return port


class Runner:
    def __init__(self, spec: RunnerSpec, post=post_event):
        self.spec = spec
        self.post = post
        self.child: subprocess.Popen | None = None
        self.stop_signal: str | None = None
        self.stop_at: float | None = None
        self.env = results.git_env(spec.repo_url, spec.username, spec.token)
        self.attempt = 1
        self.base = spec.commit          # the commit this attempt started from
        self.started = attempt_start()   # epoch seconds: Slurm's start of this attempt
        self.node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        self.devices = os.environ.get("CUDA_VISIBLE_DEVICES")

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
        spec, wd = self.spec, self.spec.workdir
        os.makedirs(wd, mode=0o700, exist_ok=True)
        requeued = os.path.isdir(os.path.join(wd, ".git"))
        if not requeued:
            self._git("init", "--quiet", "--initial-branch=slipway-job", wd)
        self.attempt = self._count_attempt(requeued)
        self._record_attempt()
        if _has_lfs(self):
            self._git("lfs", "install", "--local")
        results.ensure_remote(wd, self.env, spec.repo_url)
        base = self._keep_previous_attempt(self.attempt - 1) if requeued else spec.commit
        try:
            self._git("fetch", "--quiet", "--depth=1", "--no-tags", "origin", spec.commit)
        except results.GitFailed as e:
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
        if attempt is None or attempt == self.attempt:
            attempt, node, devices = self.attempt, self.node, self.devices
            elapsed = None if interrupted else max(0.0, time.time() - self.started)
        else:
            rec = self._attempt_record(attempt)
            node, devices, elapsed = rec.get("node"), rec.get("devices"), None
        return trailers.format_trailers(trailers.result_trailers(
            job_id=spec.job_id, commit=spec.commit, branch=spec.branch, attempt=attempt,
            image=spec.image, image_digest=spec.image_digest, gpu_type=spec.gpu_type,
            gpu_count=spec.gpu_count, gpu_devices=devices, node=node, exit_code=exit_code,
            signal=sig, interrupted=interrupted, elapsed_seconds=elapsed,
            gpu_rate=spec.gpu_rate))

    def _have(self, sha: str) -> bool:
        return results.run_git(["cat-file", "-e", f"{sha}^{{commit}}"], self.spec.workdir,
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
        head = results.local_ref(wd, self.env, "HEAD")
        if head is None:              # the earlier attempt died before its checkout
            return spec.commit
        dirty = results.run_git(["status", "--porcelain", "--untracked-files=all",
                                 "--ignore-submodules=all"], wd, self.env).stdout.strip()
        if dirty:
            committed, _lfs, notes = results.commit_all(
                wd, self.env, message=f"slipway: job {spec.job_id} attempt {prev} (interrupted)",
                trailer=self.trailer(None, None, attempt=prev, interrupted=True),
                lfs_threshold_bytes=spec.lfs_threshold_bytes,
                author_name=spec.author_name, author_email=spec.author_email)
            for n in notes:
                say(n)
            if committed:
                head = results.local_ref(wd, self.env, "HEAD")
                say(f"job {spec.job_id}: saved the files of attempt {prev} as {head[:12]}")
        out = results.push_pending(
            wd, repo_url=spec.repo_url, username=spec.username, token=spec.token,
            branch=spec.branch, job_id=spec.job_id, pushed_sha=spec.commit,
            deadline=time.monotonic() + spec.requeue_push_seconds)
        ref = results.results_ref(spec.branch, spec.job_id)[len("refs/heads/"):]
        if out is not None and out.ok:
            say(f"job {spec.job_id}: pushed attempt {prev}'s work ({head[:12]}) to {ref}")
        elif out is not None:
            say(f"job {spec.job_id}: could not push attempt {prev}'s work ({head[:12]}) to {ref} "
                f"({results._reason(out)}); this attempt builds on it and pushes it at the end")
        if head != spec.commit and results.run_git(
                ["merge-base", "--is-ancestor", spec.commit, head], wd, self.env,
                check=False).returncode == 0:
            return head
        return spec.commit

    def commit_back(self, status: int | None, sig: str | None,
                    deadline: float | None = None) -> results.CommitBackResult:
        """results.commit_back for this attempt (the lease follows an earlier attempt's push)."""
        spec = self.spec
        lease = results.local_ref(spec.workdir, self.env, results.LOCAL_BRANCH_REF)
        if deadline is None:
            deadline = time.monotonic() + spec.push_retry_seconds
        return results.commit_back(
            spec.workdir, repo_url=spec.repo_url, username=spec.username, token=spec.token,
            branch=spec.branch, job_id=spec.job_id, pushed_sha=spec.commit,
            exit_code=status, signal=sig, lfs_threshold_bytes=spec.lfs_threshold_bytes,
            author_name=spec.author_name, author_email=spec.author_email, deadline=deadline,
            lease_sha=lease or spec.commit, trailer=self.trailer(status, sig))

    # --------------------------------------------------------------------- run
    def run_child(self) -> int:
        if self.stop_signal is not None:
            say("stopped before the entrypoint started")
            return 128 + signal.Signals["SIG" + self.stop_signal].value
        sys.stdout.flush()
        sys.stderr.flush()
        self.child = subprocess.Popen(list(self.spec.container_argv), cwd=self.spec.workdir,
                                      env=launch_env(self.spec), start_new_session=True,
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
        port = ensure_free_port(spec)
        self.post(spec.callback_url, spec.token,
                  {"event": "started", **({"port": port} if port is not None else {})})
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
        if self.stop_at is not None:
            deadline = self.stop_at + spec.stop_push_seconds
        else:
            deadline = time.monotonic() + spec.push_retry_seconds
        try:
            res = self.commit_back(status, sig, deadline)
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
        print("usage: python -m git_gateway.node.runner SPEC.json", file=sys.stderr)
        return 2
    try:
        spec = RunnerSpec.load(argv[0])
    except (OSError, ValueError) as e:
        say(f"bad spec {argv[0]}: {e}")
        return 2
    return Runner(spec).run()


if __name__ == "__main__":
    sys.exit(main())
