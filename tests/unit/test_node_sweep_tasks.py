"""The node program's sweep tasks (docs/SHARING.md, "Sweeps"): the spec fields, ``{task}`` in the
spec path, results pushed to the task's own ref (never the branch, never results/<branch>/<job>),
the requeue save going there too, and every event carrying the task -- against a real git server.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from git_gateway import repos
from git_gateway.node import results, runner
from git_gateway.node.container_env import launch_env
from git_gateway.node.runner import Runner
from git_gateway.node.spec import RANK_ENV, TASK_ENV, RunnerSpec, SpecError, resolve_spec_path
from tests.support.git_server import Gateway, client_env, git, serve

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
SHA = "a" * 40
BASE = {"job_id": 42, "repo_url": "http://127.0.0.1:1/git/team/proj.git", "username": "job:42",
        "token": "job-token", "commit": SHA, "branch": "exp-1", "workdir": "/tmp/w",
        "container_argv": ["true"]}
TASK_REF = "refs/heads/results/exp-1/42/3"


class Events:
    """WSGI receiver for the runner's job events."""

    def __init__(self):
        self.events: list[dict] = []
        self.cond = threading.Condition()

    def __call__(self, environ, start_response):
        n = int(environ.get("CONTENT_LENGTH") or 0)
        with self.cond:
            self.events.append(json.loads(environ["wsgi.input"].read(n)))
            self.cond.notify_all()
        start_response("204 No Content", [])
        return [b""]

    def wait_for(self, name: str, timeout: float = 30) -> dict:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if ev.get("event") == name:
                        return ev
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {name} event; got {self.names()}")
                self.cond.wait(left)

    def names(self) -> list[str]:
        return [ev["event"] for ev in self.events]


@pytest.fixture
def server(tmp_path):
    events = Events()
    with serve(events) as ev_base, Gateway(tmp_path / "srv") as gw:
        gw.create()
        yield gw, client_env(tmp_path / "home"), events, ev_base


def push_repo(gw, env, tmp_path: Path, files: dict[str, str], branch: str = "exp-1") -> str:
    u = tmp_path / "u"
    u.mkdir()
    git(u, "init", "-q", env=env)
    git(u, "remote", "add", "origin", gw.url(user="alice"), env=env)
    for name, text in files.items():
        (u / name).write_text(text)
    git(u, "add", "-A", env=env)
    git(u, "commit", "-qm", "run", env=env)
    git(u, "push", "-q", "origin", f"HEAD:refs/heads/{branch}", env=env)
    return git(u, "rev-parse", "HEAD", env=env).stdout.strip()


def write_spec(path: Path, gw, ev_base: str, sha: str, **over) -> Path:
    spec = {"job_id": 42, "repo_url": gw.url(), "username": "job:42", "token": "job-token",
            "commit": sha, "branch": "exp-1", "workdir": str(path.parent / "work"),
            "container_argv": ["bash", "slipway-entrypoint.sh"], "grace_seconds": 5,
            "callback_url": ev_base + "/internal/jobs/42/events"}
    spec.update(over)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    path.chmod(0o600)
    return path


def start_runner(spec_arg: str, log: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "git_gateway.node.runner", spec_arg], cwd=ROOT,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={"PATH": os.environ["PATH"], "HOME": str(log.parent),
                                 "LANG": "C.UTF-8", "SLURM_JOB_ID": "9001", **env})


def job_pushes(gw) -> list[str]:
    return [c["updates"][0]["ref"] for c in gw.recorder.phase("pre-receive") if c["pusher_is_job"]]


def trailer(c: Path, env, key: str, rev: str = "HEAD") -> str:
    return git(c, "log", "-1", f"--format=%(trailers:key={key},valueonly)", rev,
               env=env).stdout.strip()


# --------------------------------------------------------------------------------- the spec
def test_old_specs_load_with_the_plain_job_defaults():
    s = RunnerSpec.from_dict(BASE)
    assert (s.task_id, s.results_ref, s.push_branch) == (None, None, True)
    assert (s.nodes, s.master_port, s.srun) == (1, None, "srun")
    assert RunnerSpec.from_dict(json.loads(s.to_json())) == s


def test_task_fields_round_trip_and_are_checked():
    s = RunnerSpec.from_dict(dict(BASE, task_id=3, results_ref=TASK_REF, push_branch=False))
    assert (s.task_id, s.results_ref, s.push_branch) == (3, TASK_REF, False)
    assert RunnerSpec.from_dict(json.loads(s.to_json())) == s
    bad = [({"results_ref": "refs/heads/exp-1"}, "must be a full ref under refs/heads/results/"),
           ({"results_ref": "results/exp-1/42/3"}, "must be a full ref under"),
           ({"results_ref": "refs/heads/results/"}, "must be a full ref under"),
           ({"results_ref": "refs/heads/results/a..b/42/3"}, "is not a valid ref name"),
           ({"results_ref": "refs/heads/results/x/42/3.lock"}, "is not a valid ref name"),
           ({"task_id": -1}, "task_id must be between 0"), ({"task_id": "3"}, "whole number"),
           ({"task_id": True}, "whole number"), ({"push_branch": "no"}, "true or false"),
           ({"task_id": 1, "nodes": 2, "master_port": 29500}, "runs on one node")]
    for over, msg in bad:
        with pytest.raises(SpecError, match=msg.replace(".", r"\.")):
            RunnerSpec.from_dict(dict(BASE, **over))


def test_exported_environment_names():
    assert RANK_ENV == ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
                        "NODE_RANK", "NNODES", "GPUS_PER_NODE")
    assert TASK_ENV == ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID")


def test_task_placeholder_in_the_spec_path():
    path = "/jobs/42/task-{task}/spec.json"
    assert resolve_spec_path(path, {"SLURM_ARRAY_TASK_ID": "3"}) == "/jobs/42/task-3/spec.json"
    assert resolve_spec_path(path, {"SLURM_ARRAY_TASK_ID": "007"}) == "/jobs/42/task-7/spec.json"
    assert resolve_spec_path("/jobs/42/spec.json", {}) == "/jobs/42/spec.json"
    with pytest.raises(SpecError, match="SLURM_ARRAY_TASK_ID is not set"):
        resolve_spec_path(path, {})
    for bad in ("", "3; rm", "-1", "../1", "٣"):
        with pytest.raises(SpecError, match="SLURM_ARRAY_TASK_ID must be digits"):
            resolve_spec_path(path, {"SLURM_ARRAY_TASK_ID": bad})


def test_main_refuses_a_task_path_outside_an_array(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert runner.main([str(tmp_path / "task-{task}" / "spec.json")]) == 2
    assert "SLURM_ARRAY_TASK_ID is not set" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "x1")
    assert runner.main([str(tmp_path / "task-{task}" / "spec.json")]) == 2
    assert "SLURM_ARRAY_TASK_ID must be digits, not 'x1'" in capsys.readouterr().err


def test_task_environment_reaches_the_container():
    s = RunnerSpec.from_dict(dict(BASE, task_id=3, container_argv=["apptainer", "exec", "i.sif"],
                                  passthrough_env=["CUDA_VISIBLE_DEVICES", *TASK_ENV]))
    base = {"PATH": "/bin", "USER": "u", "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_JOB_ID": "900"}
    env = launch_env(s, base)
    assert env["APPTAINERENV_SLURM_ARRAY_TASK_ID"] == "3"
    assert env["APPTAINERENV_SLURM_ARRAY_JOB_ID"] == "900"
    plain = launch_env(RunnerSpec.from_dict(dict(BASE, task_id=3)), base)
    assert (plain["SLURM_ARRAY_TASK_ID"], plain["SLURM_ARRAY_JOB_ID"]) == ("3", "900")
    assert "SLURM_ARRAY_TASK_ID" not in launch_env(s, {"PATH": "/bin", "USER": "u"})


def test_every_event_carries_the_task(tmp_path, monkeypatch):
    posted = []
    spec = RunnerSpec.from_dict(dict(BASE, task_id=3, results_ref=TASK_REF, push_branch=False,
                                     workdir=str(tmp_path / "work"),
                                     output_dir=str(tmp_path / "missing")))
    r = Runner(spec, post=lambda url, token, event: posted.append(event))
    monkeypatch.setattr(r, "checkout", lambda: None)
    monkeypatch.setattr(Runner, "install_signal_handlers", lambda self: None)
    assert r.run() == 1
    assert [(e["event"], e["task"]) for e in posted] == [("finishing", 3), ("results", 3)]
    assert posted[1]["message"].startswith("slipway: job 42 task 3 cannot start")


def test_commit_messages_name_the_task():
    assert results.commit_message(12, 0, task_id=3) == "slipway: results of job 12 task 3 (exit 0)"
    assert results.commit_message(12, 143, "TERM", 0) == \
        "slipway: results of job 12 task 0 (exit 143, signal TERM)"
    assert results.commit_message(12, 0) == "slipway: results of job 12 (exit 0)"


# ------------------------------------------------------------------------ against a real server
def test_a_task_pushes_its_own_ref_and_leaves_the_branch(server, tmp_path):
    gw, env, events, ev_base = server
    script = "set -e\nmkdir -p out\necho \"task $SLURM_ARRAY_TASK_ID\" > out/task.txt\n"
    sha = push_repo(gw, env, tmp_path, {"slipway-entrypoint.sh": script})
    jobs = tmp_path / "jobs" / "42"
    for i in (2, 3):     # the runner must pick the array task's spec, not another task's
        write_spec(jobs / f"task-{i}" / "spec.json", gw, ev_base, sha, task_id=i,
                   results_ref=f"refs/heads/results/exp-1/42/{i}", push_branch=False)
    log = tmp_path / "task-3.log"
    p = start_runner(str(jobs / "task-{task}" / "spec.json"), log, SLURM_ARRAY_TASK_ID="3",
                     SLURM_ARRAY_JOB_ID="9000")
    assert p.wait(timeout=60) == 0, log.read_text()
    assert events.names() == ["started", "finishing", "results"]
    assert all(ev["task"] == 3 for ev in events.events), events.events
    res = events.wait_for("results")
    assert res["results_ref"] == TASK_REF and res["branch_updated"] is False
    assert "branch left to Slipway (sweep task)" in res["message"], res
    assert f"pushed to results/exp-1/42/3 as {res['sha'][:12]}" in res["message"]
    # the branch is where the user left it; the job has no results/<branch>/<job> ref
    assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/exp-1") == sha
    assert repos.resolve_ref(gw.repos_root, "team", "proj", TASK_REF) == res["sha"]
    assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/results/exp-1/42") is None
    assert job_pushes(gw) == [TASK_REF]
    assert not (jobs / "task-2" / "work").exists()
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", "results/exp-1/42/3", gw.url(user="alice"), str(c), env=env)
    assert (c / "out" / "task.txt").read_text() == "task 3\n"   # SLURM_ARRAY_TASK_ID passed on
    assert git(c, "log", "-1", "--format=%s", env=env).stdout.strip() == \
        "slipway: results of job 42 task 3 (exit 0)"
    assert (trailer(c, env, "Slipway-Job"), trailer(c, env, "Slipway-Task")) == ("42", "3")


def test_a_requeued_task_saves_the_dead_attempt_to_its_own_ref(server, tmp_path):
    gw, env, events, ev_base = server
    script = "set -e\ncat partial.txt > resumed.txt\necho done > done.txt\n"
    sha = push_repo(gw, env, tmp_path, {"slipway-entrypoint.sh": script})
    spec_path = write_spec(tmp_path / "jobs" / "42" / "task-3" / "spec.json", gw, ev_base, sha,
                           task_id=3, results_ref=TASK_REF, push_branch=False)
    # attempt 1 checked out, wrote a file, and its node died before any commit-back
    Runner(RunnerSpec.load(str(spec_path))).checkout()
    (spec_path.parent / "work" / "partial.txt").write_text("from attempt 1\n")

    log = tmp_path / "attempt2.log"
    p = start_runner(str(spec_path), log, SLURM_ARRAY_TASK_ID="3")    # Slurm requeues the task
    assert p.wait(timeout=60) == 0, log.read_text()
    out = log.read_text()
    assert "job 42 task 3: pushed attempt 1's work" in out and "results/exp-1/42/3" in out, out
    res = events.wait_for("results")
    assert res["results_ref"] == TASK_REF and res["branch_updated"] is False and res["task"] == 3
    assert job_pushes(gw) == [TASK_REF, TASK_REF]        # the save, then the results: no branch
    assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/exp-1") == sha
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", "results/exp-1/42/3", gw.url(user="alice"), str(c), env=env)
    assert (c / "resumed.txt").read_text() == "from attempt 1\n"
    subjects = git(c, "log", "--format=%s", env=env).stdout.splitlines()
    assert subjects == ["slipway: results of job 42 task 3 (exit 0)",
                        "slipway: job 42 task 3 attempt 1 (interrupted)", "run"], subjects
    assert trailer(c, env, "Slipway-Task", "HEAD^") == "3"
    assert trailer(c, env, "Slipway-Attempt", "HEAD") == "2"
