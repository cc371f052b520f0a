"""git_gateway.node.runner end to end: checkout, run, signals, commit-back, events.

The entrypoint runs in a real container: Charliecloud's ``ch-run`` on the busybox image that
``container_images/build`` makes (the argv comes from ``container_images.runtime``, as in a job).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from container_images.runtime import container_argv
from git_gateway import repos
from tests.support.git_server import Gateway, client_env, git, serve

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
IMAGES = Path(os.environ.get("SLIPWAY_TEST_IMAGE_CACHE", "/var/tmp/slipway-images"))


@pytest.fixture(scope="module")
def busybox() -> Path:
    """The busybox directory image (built once by `make test`'s images step; built here if not)."""
    image = IMAGES / "busybox"
    if not (image / "bin" / "sh").exists():
        subprocess.run([str(ROOT / "container_images" / "build"), "--dest", str(IMAGES), "busybox"],
                       check=True, timeout=300)
    return image


class Events:
    """WSGI receiver for the runner's job events."""

    def __init__(self):
        self.events: list[tuple[float, dict, str]] = []
        self.cond = threading.Condition()

    def __call__(self, environ, start_response):
        n = int(environ.get("CONTENT_LENGTH") or 0)
        ev = json.loads(environ["wsgi.input"].read(n))
        with self.cond:
            self.events.append((time.monotonic(), ev, environ.get("HTTP_AUTHORIZATION", "")))
            self.cond.notify_all()
        start_response("204 No Content", [])
        return [b""]

    def wait_for(self, name: str, timeout: float = 30) -> tuple[float, dict]:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, ev, _ in self.events:
                    if ev.get("event") == name:
                        return t, ev
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {name} event; got {self.names()}")
                self.cond.wait(left)

    def names(self):
        return [ev["event"] for _, ev, _ in self.events]


@pytest.fixture
def setup(tmp_path, busybox):
    events = Events()
    with serve(events) as ev_base, Gateway(tmp_path / "srv") as gw:
        gw.create()
        env = client_env(tmp_path / "home")
        git(tmp_path, "lfs", "install", env=env)
        yield gw, env, events, ev_base, busybox


def push_entrypoint(gw, env, tmp_path, script: str, branch: str = "exp-1",
                    files: dict[str, str] | None = None) -> str:
    u = tmp_path / "u"
    u.mkdir()
    git(u, "init", "-q", env=env)
    git(u, "remote", "add", "origin", gw.url(user="alice"), env=env)
    (u / "slipway-entrypoint.sh").write_text(script)
    for name, text in (files or {}).items():
        (u / name).write_text(text)
    git(u, "add", "-A", env=env)
    git(u, "commit", "-qm", "run", env=env)
    git(u, "push", "-q", "origin", f"HEAD:refs/heads/{branch}", env=env)
    return git(u, "rev-parse", "HEAD", env=env).stdout.strip()


def write_spec(tmp_path, gw, ev_base, sha, branch="exp-1", image=None, **over) -> Path:
    work = tmp_path / "jobs" / "42" / "work"
    # as portal.jobs.runner_spec builds it: SLIPWAY_* in the argv, PORT from the runner's environment
    argv = (container_argv("charliecloud", str(image), str(work), ["sh", "slipway-entrypoint.sh"],
                           {"SLIPWAY_JOB_ID": "42"},
                           passthrough=("CUDA_VISIBLE_DEVICES", "PORT"))
            if image is not None else ["bash", "slipway-entrypoint.sh"])
    spec = {"job_id": 42, "repo_url": gw.url(), "username": "job:42", "token": "job-token",
            "commit": sha, "branch": branch, "workdir": str(work),
            "container_argv": argv, "env": {"PORT": "12345"},
            "lfs_threshold_bytes": 1048576, "grace_seconds": 5,
            "callback_url": ev_base + "/internal/jobs/42/events",
            "author_name": "Slipway", "author_email": "slipway@localhost"}
    spec.update(over)
    p = tmp_path / "jobs" / "42" / "spec.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(spec))
    p.chmod(0o600)
    return p


def start_runner(spec: Path, log: Path) -> subprocess.Popen:
    out = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "git_gateway.node.runner", str(spec)], cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT,
                            env={"PATH": os.environ["PATH"], "HOME": str(spec.parent),
                                 "LANG": "C.UTF-8", "SLURM_JOB_ID": "9001"})


def test_runner_end_to_end(setup, tmp_path):
    gw, env, events, ev_base, image = setup
    script = ("set -e\necho hello from the job\nmkdir -p out\nenv | sort > out/env.txt\n"
              "head -c 1500000 /dev/urandom > out/model.bin\necho done > out/done.txt\nexit 3\n")
    sha = push_entrypoint(gw, env, tmp_path, script)
    spec = write_spec(tmp_path, gw, ev_base, sha, image=image)
    log = tmp_path / "slurm-42.out"
    p = start_runner(spec, log)
    assert p.wait(timeout=60) == 3
    out = log.read_text()
    assert "hello from the job" in out
    assert events.names() == ["started", "finishing", "results"]
    assert all(auth == "Bearer job-token" for _, _, auth in events.events)
    _, fin = events.wait_for("finishing")
    assert fin == {"event": "finishing", "exit_code": 3, "signal": None, "stopped": False}
    _, res = events.wait_for("results")
    assert res["branch_updated"] is True and res["results_ref"] == "refs/heads/results/exp-1/42"
    assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/exp-1") == res["sha"]
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", "exp-1", gw.url(user="alice"), str(c), env=env)
    assert (c / "out" / "done.txt").read_text() == "done\n"
    assert (c / "out" / "model.bin").stat().st_size == 1500000
    assert "out/model.bin" in git(c, "lfs", "ls-files", "-n", env=env).stdout
    child_env = (c / "out" / "env.txt").read_text()
    assert "PORT=12345" in child_env and "SLIPWAY_JOB_ID=42" in child_env
    assert "SLURM_JOB_ID" not in child_env  # the container gets only what it is given
    assert "job-token" not in child_env and "GIT_CONFIG" not in child_env
    assert "job-token" not in out
    assert git(c, "log", "-1", "--format=%s", env=env).stdout.strip() == \
        "slipway: results of job 42 (exit 3)"


@pytest.mark.parametrize("mode", ["traps_term", "ignores_term"])
def test_sigterm_still_pushes_results_fast(setup, tmp_path, mode):
    gw, env, events, ev_base, image = setup
    if mode == "traps_term":
        script = ("trap 'echo checkpoint > saved.txt; exit 143' TERM\n"
                  "echo partial > partial.txt\ntouch running\n"
                  "while true; do sleep 0.1; done\n")
    else:
        script = ("trap '' TERM\necho partial > partial.txt\ntouch running\n"
                  "while true; do sleep 0.1; done\n")
    sha = push_entrypoint(gw, env, tmp_path, script)
    spec = write_spec(tmp_path, gw, ev_base, sha, image=image)
    log = tmp_path / "slurm-42.out"
    p = start_runner(spec, log)
    events.wait_for("started")
    running = tmp_path / "jobs" / "42" / "work" / "running"
    end = time.monotonic() + 20
    while not running.exists():
        assert time.monotonic() < end, log.read_text()
        time.sleep(0.05)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)          # scancel --signal=TERM / the start of KillWait
    rc = p.wait(timeout=30)
    t_exit = time.monotonic() - t0
    t_res, res = events.wait_for("results")
    t_pushed = t_res - t0
    print(f"\n[{mode}] TERM -> results pushed + event: {t_pushed:.2f} s; runner exited after "
          f"{t_exit:.2f} s (grace 5 s)")
    print("\n".join(ln for ln in log.read_text().splitlines() if "slipway-runner" in ln))
    assert rc == (143 if mode == "traps_term" else 128 + signal.SIGKILL)
    _, fin = events.wait_for("finishing")
    assert fin["signal"] == "TERM" and fin["exit_code"] == rc
    assert res["branch_updated"] is True
    assert t_pushed < 10.0
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", "exp-1", gw.url(user="alice"), str(c), env=env)
    assert (c / "partial.txt").read_text() == "partial\n"
    if mode == "traps_term":
        assert (c / "saved.txt").read_text() == "checkpoint\n"
        assert t_pushed < 3.0
    assert "signal TERM" in git(c, "log", "-1", "--format=%s", env=env).stdout


def test_bad_checkout_reports_and_exits_nonzero(setup, tmp_path):
    gw, env, events, ev_base, image = setup
    spec = write_spec(tmp_path, gw, ev_base, "1" * 40, image=image)
    p = start_runner(spec, tmp_path / "log")
    assert p.wait(timeout=60) == 1
    _, res = events.wait_for("results")
    assert res["sha"] is None and "could not check out" in res["message"]
    assert "started" not in events.names()


RESUMABLE = """set -e
if [ -f ckpt/step ]; then
  echo "resumed from step $(cat ckpt/step)" > resumed.txt
  if [ -f checkpoints/model.pt ]; then cat checkpoints/model.pt > resumed-ignored.txt; fi
  if [ -f opt.pt ]; then cat opt.pt >> resumed-ignored.txt; fi
  exit 0
fi
echo $$ > {pidfile}
echo partial > partial.txt
mkdir -p ckpt && echo 7 > ckpt/step
mkdir -p checkpoints && echo "weights at step 7" > checkpoints/model.pt
echo "optimizer at step 7" > opt.pt
touch running
while true; do sleep 0.1; done
"""


def test_requeue_after_a_dead_attempt_saves_its_files_then_resumes(setup, tmp_path):
    """The node died mid-job (runner and entrypoint gone, SIGKILL, no commit-back, a stale
    index.lock): the requeued attempt commits and pushes what the dead one left before it
    resets anything, then runs on top of it; the final results keep both. Checkpoints the
    branch's .gitignore matches (checkpoints/, *.pt) are never committed, but the requeued
    attempt still finds them in the checkout."""
    gw, env, events, ev_base, image = setup
    # the container has a private /tmp: the entrypoint leaves its pid inside .git (never committed)
    sha = push_entrypoint(gw, env, tmp_path, RESUMABLE.format(pidfile=".git/child.pid"),
                          files={".gitignore": "checkpoints/\n*.pt\n"})
    spec = write_spec(tmp_path, gw, ev_base, sha, image=image)
    work = tmp_path / "jobs" / "42" / "work"
    pidfile = work / ".git" / "child.pid"
    p = start_runner(spec, tmp_path / "attempt1.log")
    end = time.monotonic() + 30
    while not (work / "running").exists():
        assert time.monotonic() < end, (tmp_path / "attempt1.log").read_text()
        time.sleep(0.05)
    p.kill()                                         # the node is gone: nothing gets to run
    p.wait(timeout=10)
    os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    (work / ".git" / "index.lock").write_text("")   # as if it died inside a git command
    (work / "partial.txt").write_text("partial, more\n")   # untracked, never committed
    assert events.names() == ["started"]

    log = tmp_path / "attempt2.log"
    p = start_runner(spec, log)                      # Slurm requeues: same spec, same workdir
    assert p.wait(timeout=60) == 0, log.read_text()
    out = log.read_text()
    assert "saved the files of attempt 1" in out and "pushed attempt 1's work" in out, out
    _, res = events.wait_for("results")
    assert res["branch_updated"] is True, res
    head = res["sha"]
    assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/exp-1") == head
    assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/results/exp-1/42") == head

    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", "exp-1", gw.url(user="alice"), str(c), env=env)
    assert (c / "resumed.txt").read_text() == "resumed from step 7\n"
    assert (c / "partial.txt").read_text() == "partial, more\n"
    # the ignored checkpoints survived the requeue's clean-up, and stayed out of every commit
    assert (c / "resumed-ignored.txt").read_text() == \
        "weights at step 7\noptimizer at step 7\n"
    assert (work / "checkpoints" / "model.pt").read_text() == "weights at step 7\n"
    for rev in ("HEAD", "HEAD^"):
        names = git(c, "ls-tree", "-r", "--name-only", rev, env=env).stdout.split()
        assert not any(n.startswith("checkpoints/") or n.endswith(".pt") for n in names), names
    subjects = git(c, "log", "--format=%s", env=env).stdout.splitlines()
    assert subjects[:3] == ["slipway: results of job 42 (exit 0)",
                            "slipway: job 42 attempt 1 (interrupted)", "run"], subjects
    interrupted = git(c, "rev-parse", "HEAD^", env=env).stdout.strip()
    assert git(c, "show", f"{interrupted}:ckpt/step", env=env).stdout == "7\n"
    assert "Slipway-Attempt: 1" in git(c, "log", "-1", "--format=%b", interrupted, env=env).stdout
    for rev, key, value in ((interrupted, "Slipway-Commit", sha),       # issue 9 item 10
                            (interrupted, "Slipway-Minutes", "unknown"),
                            ("HEAD", "Slipway-Attempt", "2"), ("HEAD", "Slipway-Commit", sha)):
        assert git(c, "log", "-1", f"--format=%(trailers:key={key},valueonly)", rev,
                   env=env).stdout.strip() == value, (rev, key)
    assert git(c, "rev-parse", "HEAD~2", env=env).stdout.strip() == sha
    # the job's pushes, in order: the dead attempt's work first, then the results and branch
    job_pushes = [c["updates"][0]["ref"] for c in gw.recorder.phase("pre-receive")
                  if c["pusher_is_job"]]
    assert job_pushes == ["refs/heads/results/exp-1/42", "refs/heads/results/exp-1/42",
                          "refs/heads/exp-1"]


FAKE_APPTAINER = r'''#!/usr/bin/env python3
"""Stands in for `apptainer exec`: applies --cleanenv the way Apptainer does (only
APPTAINERENV_<NAME> variables reach the container, as NAME), ignores mounts (the runner's cwd is
the workdir already) and runs the command after the image."""
import os, sys
args = sys.argv[1:]
assert args[0] == "exec", args
i = 1
while not args[i].endswith(".sif"):
    i += 2 if args[i] in ("--bind", "--pwd") else 1
assert "--cleanenv" in args[1:i], args
env = {k[len("APPTAINERENV_"):]: v for k, v in os.environ.items() if k.startswith("APPTAINERENV_")}
env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
cmd = args[i + 1:]
os.execvpe(cmd[0], cmd, env)
'''


def test_apptainer_container_sees_cuda_port_and_slipway_vars(setup, tmp_path):
    from container_images.runtime import container_argv

    gw, env, events, ev_base, image = setup
    fake = tmp_path / "bin" / "apptainer"
    fake.parent.mkdir()
    fake.write_text(FAKE_APPTAINER)
    fake.chmod(0o755)
    sha = push_entrypoint(gw, env, tmp_path, "env | sort > env.txt\n")
    work = tmp_path / "jobs" / "42" / "work"
    job_env = {"PORT": "23456", "SLIPWAY_JOB_ID": "42", "SLIPWAY_BRANCH": "exp-1",
               "SLIPWAY_COMMIT": sha}
    argv = container_argv("apptainer", "/images/slipway/python-cuda12.sif", str(work),
                          ["bash", "slipway-entrypoint.sh"], job_env, gpus=True,
                          executable=str(fake))
    spec = write_spec(tmp_path, gw, ev_base, sha, container_argv=argv, env=job_env,
                      container_runtime="apptainer")
    log = tmp_path / "log"
    out = open(log, "wb")
    p = subprocess.Popen([sys.executable, "-m", "git_gateway.node.runner", str(spec)], cwd=ROOT,
                         stdout=out, stderr=subprocess.STDOUT,
                         env={"PATH": os.environ["PATH"], "HOME": str(spec.parent),
                              "LANG": "C.UTF-8", "SLURM_JOB_ID": "9001", "USER": "sw-alice",
                              "CUDA_VISIBLE_DEVICES": "2,3"})
    assert p.wait(timeout=60) == 0, log.read_text()
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", "exp-1", gw.url(user="alice"), str(c), env=env)
    seen = dict(line.split("=", 1) for line in (c / "env.txt").read_text().splitlines()
                if "=" in line)
    assert seen["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert (seen["PORT"], seen["SLIPWAY_JOB_ID"]) == ("23456", "42")
    assert (seen["SLIPWAY_BRANCH"], seen["SLIPWAY_COMMIT"]) == ("exp-1", sha)
    assert "SLURM_JOB_ID" not in seen and "job-token" not in (c / "env.txt").read_text()


GIT_THAT_GETS_A_CANCEL = """#!/bin/bash
# scancel's TERM reaches every process of the step: here it comes at the checkout's first git
case " $* " in *" remote "*)
  if [ ! -e "{mark}" ]; then
    : > "{mark}"
    kill -TERM -- -"$(ps -o pgid= -p $$ | tr -d ' ')"
    sleep 5
  fi ;;
esac
exec {git} "$@"
"""


def test_a_cancel_that_interrupts_a_requeued_checkout_still_pushes_the_dead_attempts_files(
        setup, tmp_path):
    """A cancelled job whose node died was requeued (docs/FAULTS.md §7): its next attempt is
    cancelled as it starts, and the TERM reaches git in the middle of the checkout. The runner
    checks out once more with the stop signals ignored, commits the dead attempt's files as
    "(interrupted)" and pushes them; the entrypoint never starts."""
    gw, env, events, ev_base, image = setup
    sha = push_entrypoint(gw, env, tmp_path, RESUMABLE.format(pidfile=".git/child.pid"))
    spec = write_spec(tmp_path, gw, ev_base, sha, image=image)
    work = tmp_path / "jobs" / "42" / "work"
    p = start_runner(spec, tmp_path / "attempt1.log")
    end = time.monotonic() + 30
    while not (work / "running").exists():
        assert time.monotonic() < end, (tmp_path / "attempt1.log").read_text()
        time.sleep(0.05)
    p.kill()                                         # the node is gone
    p.wait(timeout=10)
    os.killpg(int((work / ".git" / "child.pid").read_text()), signal.SIGKILL)
    (work / "partial.txt").write_text("written before the node died\n")

    shim = tmp_path / "shim"
    shim.mkdir()
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    (shim / "git").write_text(GIT_THAT_GETS_A_CANCEL.format(git=real_git,
                                                           mark=tmp_path / "cancelled"))
    (shim / "git").chmod(0o755)
    log = tmp_path / "attempt2.log"
    p = subprocess.Popen([sys.executable, "-m", "git_gateway.node.runner", str(spec)], cwd=ROOT,
                         stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
                         env={"PATH": f"{shim}:{os.environ['PATH']}", "HOME": str(spec.parent),
                              "LANG": "C.UTF-8", "SLURM_JOB_ID": "9001"})
    p.wait(timeout=60)
    out = log.read_text()
    assert (tmp_path / "cancelled").exists(), out     # the TERM did come during the checkout
    assert "the checkout was interrupted by SIGTERM" in out, out
    _, res = events.wait_for("results")
    assert res["sha"] and res["results_ref"] == "refs/heads/results/exp-1/42", (res, out)
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", "results/exp-1/42", gw.url(user="alice"), str(c), env=env)
    assert (c / "partial.txt").read_text() == "written before the node died\n"
    assert not (c / "resumed.txt").exists()           # the cancelled attempt never ran
    subjects = git(c, "log", "--format=%s", env=env).stdout.splitlines()
    assert "slipway: job 42 attempt 1 (interrupted)" in subjects, subjects
