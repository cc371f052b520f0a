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
       child gets ``grace_seconds``, then SIGKILL (the whole group). (A multi-node job: see
       below.) SIGUSR1 from Slurm is the time-limit warning (``--signal=B:USR1@<lead>``; the
       batch environment names the limit and the lead): the entrypoint gets SIGUSR1, runs on
       until ``time_limit.plan``'s stop (half the lead before the limit), is stopped as by a
       TERM, its files are pushed, and the runner ends the job as TIMEOUT (``time_limit``).
    5. POST ``finishing`` (in the background), ``results.commit_back``, POST ``results``.
       Every commit the runner makes (results, "(interrupted)") carries the trailers of
       ``git_gateway.node.trailers``: job, attempt, pushed commit, branch, image and digest, GPUs and
       CUDA_VISIBLE_DEVICES, node, exit status, this attempt's minutes and cost (from the
       spec's ``gpu_rate``; the ledger is the authority).
       Pushes that fail for want of an answer are retried for ``push_retry_seconds`` (150),
       or ``stop_push_seconds`` (30) after a TERM -- below the portal's hard-cancel grace;
       the normal case pushes at once.
    6. Exit with the entrypoint's status (128+N when it died of signal N).

A sweep's batch command names ``.../task-{task}/spec.json``: ``{task}`` is replaced by
``$SLURM_ARRAY_TASK_ID`` (digits only, else exit 2). A task's spec has ``task_id`` (every event
carries ``"task": <i>``, its commits say "job 12 task 3" and carry ``Slipway-Task``),
``results_ref`` (``results/<branch>/<job>/<task>``: its results and the requeue save go there,
never to ``results/<branch>/<job>``) and ``push_branch: false`` (the branch is left to Slipway,
which merges every task's results when the sweep ends).

A multi-node job (``nodes`` > 1) checks out here (the batch step, on the first node), then runs
``srun --nodes=N --ntasks=N --ntasks-per-node=1 --kill-on-bad-exit=1 <python> -m
git_gateway.node.rank SPEC`` instead of the container (step 3): one container per node, each with
RANK, WORLD_SIZE, MASTER_ADDR/PORT, ... (see ``rank``). srun gets this program's own environment
(it needs SLURM_JOB_ID & co.); its exit status is the job's, and the results are committed
once, here, after srun has ended. Signals (step 4): srun forwards USR1/USR2 to every rank, but
answers TERM/HUP with SIGKILL to every rank and INT with a status line, so TERM/INT/HUP reach the
ranks through Slurm instead (``scancel --signal=<SIG> $SLURM_JOB_ID``: every step of the job
but this batch step; ``rank.signal_ranks``). After ``grace_seconds`` srun gets SIGTERM (its
"forcing job termination": SIGKILL to every rank), and SIGKILL ``rank.SRUN_KILL_WAIT`` s later.

The batch script should ``exec`` this program so Slurm's TERM reaches it directly. The workdir
must hold nothing but the checkout: everything in it is committed (keep Slurm's output file and
the spec outside it). The token is never passed to the container's environment.
Callback failures are logged, never fatal. Standard library and this folder only: spec (the
JSON spec), events (stderr and callbacks), checkout (the checkout across attempts, commit-back),
container_env (the container's environment, command and binds), ports (PORT), readonly
(read-only inputs for ch-run), rank (a multi-node job's srun and its ranks), results (commit-back:
gitops, pushing, lfs_track), trailers.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from . import gitops, rank, time_limit
from .checkout import JobCheckout, attempt_start
from .container_env import bind_problem, container_command, launch_env
from .events import post_event, say, with_task
from .ports import ensure_free_port
from .spec import RunnerSpec, SpecError, resolve_spec_path

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Runner(JobCheckout):
    def __init__(self, spec: RunnerSpec, post=post_event, spec_path: str | None = None):
        super().__init__(spec)
        self._send = post
        #: the spec's file (absolute): a multi-node job's ranks load it again on their node
        self.spec_path = os.path.abspath(spec_path) if spec_path is not None else None
        self.child: subprocess.Popen | None = None
        self.stop_signal: str | None = None
        self.stop_at: float | None = None
        #: the time-limit warning: when it came, its plan, and whether the runner stopped the
        #: entrypoint for it (not a cancel or Slurm's own TERM)
        self.warned_at: float | None = None
        self.warning: time_limit.WarningPlan | None = None
        self.time_limited = False
        self.outside_stop = False
        self.start_epoch = attempt_start()   # this attempt's start (epoch seconds)
        self._slurm_ended = threading.Event()

    def post(self, url: str | None, token: str, event: dict):
        """POST one event (a sweep task's carries ``"task": <i>``)."""
        return self._send(url, token, with_task(event, self.spec.task_id))

    # ----------------------------------------------------------------- signals
    def _on_signal(self, signum, _frame) -> None:
        name = signal.Signals(signum).name[3:]
        if signum in STOPPING and self.stop_signal is None:
            self.stop_signal = name
            self.stop_at = time.monotonic()
            self.outside_stop = True
            say(f"received SIG{name}: stopping the job (grace {self.spec.grace_seconds:g} s)")
        if (signum == time_limit.WARNING_SIGNAL and self.warned_at is None
                and time_limit.configured() is not None):
            self.warned_at = time.monotonic()   # planned by the main loop (it asks Slurm)
            say("received SIGUSR1: the time-limit warning; the entrypoint gets SIGUSR1")
        self._deliver(signum)

    def _deliver(self, signum: int) -> None:
        """Send ``signum`` to the entrypoint's process group (a multi-node job's ranks: TERM,
        INT and HUP through Slurm, see ``rank``)."""
        child = self.child
        if child is None or child.returncode is not None:
            return
        if self.spec.nodes > 1 and signum in STOPPING:
            # srun turns TERM/HUP into SIGKILL for every rank (and keeps INT): the ranks get
            # the signal itself from Slurm (scancel), off this handler (it waits for slurmctld)
            threading.Thread(target=rank.signal_ranks, args=(self.spec, signum, child.pid),
                             daemon=True).start()
        else:
            _killpg(child.pid, signum)

    def install_signal_handlers(self) -> None:
        for s in FORWARDED:
            signal.signal(s, self._on_signal)

    # -------------------------------------------------------------- time limit
    def plan_warning(self) -> time_limit.WarningPlan | None:
        """The warning's plan, made once after it came (asks Slurm when the job ends)."""
        if self.warned_at is None or self.warning is not None:
            return self.warning
        limit_s, lead_s = time_limit.configured()
        job = os.environ.get("SLURM_JOB_ID")
        self.warning = time_limit.warning_at(
            now=time.monotonic(), now_epoch=time.time(), start_epoch=self.start_epoch,
            limit_s=limit_s, lead_s=lead_s, grace_s=self.spec.grace_seconds, job_id=job,
            squeue=time_limit.slurm_program(self.spec.srun, "squeue"))
        say(f"{self.label}: {self.warning.describe(time.monotonic())}")
        return self.warning

    def stop_for_time_limit(self) -> None:
        """The warning's stop time came: stop the entrypoint as a TERM does."""
        self.time_limited = True
        self.stop_signal, self.stop_at = "TERM", time.monotonic()
        left = self.warning.end - self.stop_at if self.warning else 0.0
        say(f"time limit in {max(0.0, left):.0f} s: stopping the entrypoint (SIGTERM, grace "
            f"{self.spec.grace_seconds:g} s) to push its files")
        self._deliver(signal.SIGTERM)

    def ended_by_time_limit(self, status: int) -> bool:
        """The job ends because of its time limit: the runner stopped the entrypoint after the
        warning, or the entrypoint ended after it other than by a clean exit 0 (a cancel or
        Slurm's own TERM are not)."""
        if self.warned_at is None or self.outside_stop:
            return False
        return self.time_limited or status != 0

    def end_as_timeout(self) -> None:
        """After the push: have Slurm end the job as TIMEOUT now (``time_limit``), and wait
        for its SIGTERM (or the old limit, where Slurm refused) before exiting."""
        plan = self.warning
        for s in STOPPING:     # the files are pushed: Slurm's TERM now ends the runner
            signal.signal(s, lambda *_: self._slurm_ended.set())
        lowered = time_limit.end_as_timeout(
            os.environ.get("SLURM_JOB_ID"), time_limit.slurm_program(self.spec.srun, "scontrol"),
            time.time() - self.start_epoch)
        until = (plan.end if plan else time.monotonic()) + time_limit.WAIT_PAST_END_S
        if not lowered and plan is None:
            return
        if not time_limit.wait_for_end(self._slurm_ended.is_set, until):
            say("Slurm did not end the job at its time limit: exiting")

    # --------------------------------------------------------------------- run
    def _checkout_despite_stop(self, first: Exception) -> str | None:
        """Why the checkout failed, or None: a stop (a cancel's TERM reaches every process of
        the step, git too) broke it, and a second try with the stop signals ignored made it, so
        an earlier attempt's files are committed and pushed (Slurm's KILL still ends all)."""
        if self.stop_signal is None or isinstance(first, gitops.InvalidBranch):
            return str(first)
        for s in STOPPING:
            signal.signal(s, signal.SIG_IGN)
        say(f"the checkout was interrupted by SIG{self.stop_signal}: trying it once more")
        try:
            self.checkout()
        except Exception as e:
            return str(e)
        return None

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
        return container_command(self.spec)

    def child_command(self) -> tuple[list[str], dict[str, str], str]:
        """What runs as the job's entrypoint, its environment and working directory: the
        container (one node), or srun starting ``git_gateway.node.rank`` on every node with
        this program's own environment."""
        spec = self.spec
        if spec.nodes <= 1:
            return self.container_command(), launch_env(spec), spec.workdir
        if self.spec_path is None:
            raise SpecError(f"a job on {spec.nodes} nodes needs its spec file for srun")
        return (rank.srun_command(spec, self.spec_path),
                rank.srun_env(os.environ, spec.env.get("PORT")),
                rank.srun_cwd(spec, self.spec_path))

    def run_child(self) -> int:
        if self.stop_signal is not None:
            say("stopped before the entrypoint started")
            return 128 + signal.Signals["SIG" + self.stop_signal].value
        argv, env, cwd = self.child_command()
        sys.stdout.flush()
        sys.stderr.flush()
        self.child = subprocess.Popen(argv, cwd=cwd, env=env,
                                      start_new_session=True, stdin=subprocess.DEVNULL)
        if self.stop_signal is not None:   # TERM raced with the start
            self._on_signal(signal.Signals["SIG" + self.stop_signal].value, None)
        elif self.warned_at is not None:   # the warning came during the checkout
            self._deliver(time_limit.WARNING_SIGNAL)
        killed = False
        kill_at = None      # a multi-node job: when srun itself gets SIGKILL
        while True:
            try:
                rc = self.child.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                plan = self.plan_warning()
                if plan is not None and self.stop_at is None and now >= plan.stop_at:
                    self.stop_for_time_limit()
                if (self.stop_at is not None and not killed
                        and now - self.stop_at >= self.spec.grace_seconds):
                    killed = True
                    if self.spec.nodes > 1:
                        say(f"ranks still running {self.spec.grace_seconds:g} s after "
                            f"SIG{self.stop_signal}: SIGTERM to srun (it ends every rank with "
                            f"SIGKILL)")
                        _killpg(self.child.pid, signal.SIGTERM)
                        kill_at = now + rank.SRUN_KILL_WAIT
                    else:
                        say(f"entrypoint still running {self.spec.grace_seconds:g} s after "
                            f"SIG{self.stop_signal}: SIGKILL")
                        _killpg(self.child.pid, signal.SIGKILL)
                elif kill_at is not None and now >= kill_at:
                    say(f"srun still running {rank.SRUN_KILL_WAIT:g} s later: SIGKILL")
                    _killpg(self.child.pid, signal.SIGKILL)
                    kill_at = None
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
            problem = self._checkout_despite_stop(e)
            if problem is not None:
                return self.fail_before_start(
                    f"slipway: could not check out {spec.commit[:12]} for {self.label}: {problem}")
        problem = bind_problem(spec)
        if problem is None and spec.nodes > 1:
            problem = rank.multinode_problem(spec, self.spec_path)
        if problem is not None:
            return self.fail_before_start(f"slipway: {self.label} cannot start: {problem}")
        port = ensure_free_port(spec)
        self.post(spec.callback_url, spec.token,
                  {"event": "started", **({"port": port} if port is not None else {})})
        where = f" on {spec.nodes} nodes (srun)" if spec.nodes > 1 else ""
        say(f"{self.label}: running {spec.container_argv[0]} at {spec.commit[:12]}{where}")

        try:
            rc = self.run_child()
        except OSError as e:       # srun (or the container program) could not be started
            say(f"{self.label}: could not start {spec.srun if spec.nodes > 1 else 'it'}: {e}")
            rc = 127
        sig = self.stop_signal
        if rc < 0:
            sig = sig or signal.Signals(-rc).name[3:]
            status = 128 - rc
        else:
            status = rc
        what = "srun" if spec.nodes > 1 else "entrypoint"
        say(f"{self.label}: {what} exited with status {status}"
            + (f" (signal {sig})" if sig else ""))

        # From here on a late TERM must not kill our own git processes mid-push: ignored
        # dispositions are inherited by git and git-remote-http (Slurm's KILL still ends all).
        for s in STOPPING:
            signal.signal(s, signal.SIG_IGN)
        finishing = threading.Thread(target=self.post, daemon=True, args=(
            spec.callback_url, spec.token,
            {"event": "finishing", "exit_code": status, "signal": sig,
             # stopped from outside (Slurm's or a cancel's SIGTERM), not the entrypoint's own end
             "stopped": self.outside_stop}))
        finishing.start()
        if self.stop_at is not None:
            deadline = self.stop_at + spec.stop_push_seconds
        else:
            deadline = time.monotonic() + spec.push_retry_seconds
        timed_out = self.ended_by_time_limit(status)
        plan = self.plan_warning()
        if plan is not None and not self.outside_stop:   # push before Slurm's own TERM
            deadline = plan.push_deadline if timed_out else min(deadline, plan.push_deadline)
        try:
            res = self.commit_back(status, sig, deadline)
            event = res.event()
            say(res.message)
        except Exception as e:
            event = {"event": "results", "results_ref": None, "sha": None,
                     "branch_updated": False,
                     "message": f"slipway: committing the results of {self.label} "
                                f"failed: {e}"}
            say(event["message"])
        if self.stop_at is not None:
            say(f"results pushed {time.monotonic() - self.stop_at:.2f} s after SIG{self.stop_signal}")
        if timed_out:
            left = plan.end - time.monotonic() if plan else 0.0
            left = f"{left:.0f} s before it" if left >= 0 else f"{-left:.0f} s after it"
            event["message"] = (f"slipway: time limit reached: {self.label} was stopped at the "
                                f"warning and its files committed {left}. {event['message']}")
            say(event["message"])
        finishing.join(timeout=3)
        self.post(spec.callback_url, spec.token, event)
        if timed_out:
            self.end_as_timeout()
        return status


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
        path = resolve_spec_path(argv[0])
    except SpecError as e:
        say(f"bad spec path {argv[0]}: {e}")
        return 2
    try:
        spec = RunnerSpec.load(path)
    except (OSError, ValueError) as e:
        say(f"bad spec {path}: {e}")
        return 2
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if path != argv[0] and spec.task_id is not None and str(spec.task_id) != str(int(task)):
        say(f"warning: {path} is the spec of task {spec.task_id}, not of array task {task}")
    return Runner(spec, spec_path=path).run()


if __name__ == "__main__":
    sys.exit(main())
