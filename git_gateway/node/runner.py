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
       Before that the spec's ``output_dir`` (the job's /output) must be a directory this user
       can write and each ``readonly_paths`` entry (its /input0../input4) readable, else the job
       fails with the reason. ch-run has no read-only bind: with ``readonly_paths`` it is
       started through ``readonly`` (a new user+mount namespace where those paths are read-only
       mounts); Apptainer's argv carries ``:ro`` binds itself.
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
Callback failures are logged, never fatal. Standard library and this folder only: spec (the
JSON spec), events (stderr and callbacks), checkout (the checkout across attempts, commit-back),
container_env (the container's environment), ports (PORT), readonly (read-only inputs for
ch-run), results (commit-back: gitops, pushing, lfs_track), trailers.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from . import gitops, readonly
from .checkout import JobCheckout
from .container_env import launch_env, runtime_of
from .events import post_event, say
from .ports import ensure_free_port
from .spec import RunnerSpec

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Runner(JobCheckout):
    def __init__(self, spec: RunnerSpec, post=post_event):
        super().__init__(spec)
        self.post = post
        self.child: subprocess.Popen | None = None
        self.stop_signal: str | None = None
        self.stop_at: float | None = None

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

    # --------------------------------------------------------------------- run
    def fail_before_start(self, msg: str) -> int:
        """The entrypoint never ran: say why, report it as the job's result, exit 1."""
        say(msg)
        self.post(self.spec.callback_url, self.spec.token,
                  {"event": "finishing", "exit_code": 1, "signal": self.stop_signal})
        self.post(self.spec.callback_url, self.spec.token,
                  {"event": "results", "results_ref": None, "sha": None,
                   "branch_updated": False, "message": msg})
        return 1

    def container_command(self) -> list[str]:
        """``container_argv``; for ch-run with read-only inputs, through the namespace wrapper
        (git_gateway.node.readonly: Apptainer's argv has its own ``:ro`` binds)."""
        argv = list(self.spec.container_argv)
        if self.spec.readonly_paths and runtime_of(self.spec) == "charliecloud":
            return readonly.wrapper_argv(self.spec.readonly_paths, argv)
        return argv

    def run_child(self) -> int:
        if self.stop_signal is not None:
            say("stopped before the entrypoint started")
            return 128 + signal.Signals["SIG" + self.stop_signal].value
        sys.stdout.flush()
        sys.stderr.flush()
        self.child = subprocess.Popen(self.container_command(), cwd=self.spec.workdir,
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
            gitops.validate_branch(spec.branch)
            self.checkout()
        except Exception as e:
            return self.fail_before_start(
                f"slipway: could not check out {spec.commit[:12]} for job {spec.job_id}: {e}")
        problem = bind_problem(spec)
        if problem is not None:
            return self.fail_before_start(f"slipway: job {spec.job_id} cannot start: {problem}")
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


def bind_problem(spec: RunnerSpec) -> str | None:
    """Why the job's /output or inputs cannot be used on this node (None: they can): the output
    directory must be a directory this user can write, each input readable."""
    out = spec.output_dir
    if out is not None:
        if not os.path.isdir(out):
            return (f"its /output directory {out} does not exist on this node" if not
                    os.path.lexists(out) else f"its /output {out} is not a directory")
        if not os.access(out, os.W_OK | os.X_OK):
            return f"its /output directory {out} is not writable by this user (uid {os.getuid()})"
    for path in spec.readonly_paths:
        if not os.path.exists(path):
            return f"its input {path} does not exist on this node"
        need = os.R_OK | (os.X_OK if os.path.isdir(path) else 0)
        if not os.access(path, need):
            return f"its input {path} is not readable by this user (uid {os.getuid()})"
    return None


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
