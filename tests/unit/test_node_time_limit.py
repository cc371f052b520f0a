"""The time-limit warning (docs/FAULTS.md, "2. Time limit"): the portal submits every job with
``--signal=B:USR1@<lead>`` and the limit and lead in the batch environment; on SIGUSR1 the node
program forwards the warning to the entrypoint, stops it before the limit, pushes its files and
has Slurm end the job as TIMEOUT (``scontrol update TimeLimit=<minutes run>``).

The runner runs for real against a real git server; Slurm's squeue and scontrol are small fakes
beside the spec's ``srun`` (squeue answers the job's end, scontrol records its arguments and
sends SIGTERM to the runner, as Slurm's time-limit kill does).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from git_gateway import repos
from git_gateway.node import time_limit
from portal.config import Config, ConfigError
from portal.jobs.submit import warning_lead_s, with_time_limit_warning
from slurm_bridge.errors import InvalidRequest
from slurm_bridge.request import JobRequest, validate
from slurm_bridge.script import render_script, sbatch_options
from tests.support.git_server import Gateway, client_env, git, serve
from tests.unit.test_node_sweep_tasks import Events, push_repo, start_runner, write_spec

pytestmark = pytest.mark.timeout(120)
RESULTS = "refs/heads/results/exp-1/42"

# Writes a result at once; on SIGUSR1 a checkpoint (and runs on); on SIGTERM says so and exits.
CHECKPOINTER = """
trap 'echo "step $i" > checkpoint.txt' USR1
trap 'echo "stopped at step $i" > stopped.txt; exit 0' TERM
echo result > result.txt
i=0
while true; do i=$((i+1)); echo "$i" > running; sleep 0.1; done
"""
# Saves a checkpoint on SIGUSR1 and exits 0 by itself.
EXITS_ON_WARNING = """
trap 'echo saved > checkpoint.txt; exit 0' USR1
echo result > result.txt
while true; do echo x > running; sleep 0.1; done
"""


@pytest.fixture
def server(tmp_path):
    """A real git server (the job's remote) and a receiver of the runner's events."""
    events = Events()
    with serve(events) as ev_base, Gateway(tmp_path / "srv") as gw:
        gw.create()
        yield gw, client_env(tmp_path / "home"), events, ev_base


def fake_slurm(tmp_path: Path, end_in_s: int) -> Path:
    """squeue answering ``now + end_in_s`` (epoch, as with SLURM_TIME_FORMAT=%s) and scontrol
    recording its argv and ending the runner with SIGTERM; returns the fake srun's path."""
    d = tmp_path / "slurm-bin"
    d.mkdir()
    log = tmp_path / "slurm-calls.log"
    (d / "squeue").write_text(f"""#!/bin/sh
echo "squeue $* FORMAT=$SLURM_TIME_FORMAT" >> {log}
echo $(( $(date +%s) + {end_in_s} ))
""")
    (d / "scontrol").write_text(f"""#!/bin/sh
echo "scontrol $*" >> {log}
kill -TERM $PPID
""")
    for name in ("squeue", "scontrol"):
        (d / name).chmod(0o755)
    return d / "srun"


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "slurm-calls.log"
    return log.read_text().splitlines() if log.exists() else []


def wait_for_file(path: Path, p: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert p.poll() is None, log.read_text()
        assert time.monotonic() < end, f"{path} never appeared:\n{log.read_text()}"
        time.sleep(0.05)


def run_warned_job(server, tmp_path, script: str, *, end_in_s: int, lead: int,
                   limit: int = 600, grace: float = 1.0):
    gw, env, events, ev_base = server
    sha = push_repo(gw, env, tmp_path, {"slipway-entrypoint.sh": script})
    srun = fake_slurm(tmp_path, end_in_s)
    spec = write_spec(tmp_path / "jobs" / "42" / "spec.json", gw, ev_base, sha,
                      grace_seconds=grace, srun=str(srun))
    log = tmp_path / "runner.log"
    p = start_runner(str(spec), log, **{time_limit.ENV_LIMIT: str(limit),
                                        time_limit.ENV_WARNING: str(lead)})
    wait_for_file(spec.parent / "work" / "running", p, log)
    p.send_signal(signal.SIGUSR1)
    return p, log, sha


def clone_results(gw, env, tmp_path: Path) -> Path:
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", RESULTS[len("refs/heads/"):], gw.url(user="alice"),
        str(c), env=env)
    return c


# ------------------------------------------------------------------------------- the runner
def test_warning_checkpoints_stops_pushes_and_ends_the_job_as_timeout(server, tmp_path):
    gw, env, events, _ = server
    # lead 8 s: stopped 11 s before the end (grace 1 + 10 s for the push), i.e. ~2 s from now
    p, log, sha = run_warned_job(server, tmp_path, CHECKPOINTER, end_in_s=13, lead=8)
    assert p.wait(timeout=60) == 0, log.read_text()
    out = log.read_text()
    assert "received SIGUSR1: the time-limit warning" in out, out
    assert "stopping the entrypoint (SIGTERM" in out, out
    # the files, the checkpoint written on SIGUSR1 and the TERM's last words are on the branch
    c = clone_results(gw, env, tmp_path)
    assert (c / "result.txt").read_text() == "result\n"
    assert (c / "checkpoint.txt").read_text().startswith("step ")
    assert (c / "stopped.txt").read_text().startswith("stopped at step ")
    # ... the entrypoint ran on after the warning until the stop
    ckpt = int((c / "checkpoint.txt").read_text().split()[1])
    stopped = int((c / "stopped.txt").read_text().split()[3])
    assert stopped > ckpt
    assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/exp-1") == \
        repos.resolve_ref(gw.repos_root, "team", "proj", RESULTS)
    res = events.wait_for("results")
    assert res["message"].startswith("slipway: time limit reached: job 42 was stopped at the "
                                     "warning and its files committed"), res
    assert "s before it." in res["message"] and res["sha"]
    # Slurm was asked when the job ends (epoch seconds), then to end it as TIMEOUT: the job ran
    # under a minute, so its limit is lowered to 0 minutes
    assert calls(tmp_path) == ["squeue --noheader --jobs=9001 --format=%e FORMAT=%s",
                               "scontrol update JobId=9001 TimeLimit=0"]
    assert "time limit lowered to 0 min" in out, out
    assert "Slurm did not end the job" not in out


def test_an_entrypoint_that_exits_0_on_the_warning_ends_as_it_chose(server, tmp_path):
    gw, env, events, _ = server
    p, log, _sha = run_warned_job(server, tmp_path, EXITS_ON_WARNING, end_in_s=300, lead=120)
    assert p.wait(timeout=60) == 0, log.read_text()
    c = clone_results(gw, env, tmp_path)
    assert (c / "checkpoint.txt").read_text() == "saved\n"
    assert not events.wait_for("results")["message"].startswith("slipway: time limit")
    # asked when the job ends, but the job is not ended as a timeout: it completed
    assert [x.split()[0] for x in calls(tmp_path)] == ["squeue"]


def test_a_cancel_after_the_warning_is_a_cancel(server, tmp_path):
    gw, env, events, _ = server
    p, log, _sha = run_warned_job(server, tmp_path, CHECKPOINTER, end_in_s=300, lead=120)
    wait_for_file(tmp_path / "jobs" / "42" / "work" / "checkpoint.txt", p, log)
    p.send_signal(signal.SIGTERM)        # the user cancels (scancel --signal=TERM --batch)
    assert p.wait(timeout=60) == 0, log.read_text()
    c = clone_results(gw, env, tmp_path)
    assert (c / "stopped.txt").exists()
    assert not events.wait_for("results")["message"].startswith("slipway: time limit")
    assert not any(x.startswith("scontrol") for x in calls(tmp_path))


def test_without_the_warning_environment_usr1_is_only_forwarded(server, tmp_path):
    gw, env, events, ev_base = server
    script = CHECKPOINTER.replace("while true; do", "for n in $(seq 30); do") + "exit 0\n"
    sha = push_repo(gw, env, tmp_path, {"slipway-entrypoint.sh": script})
    srun = fake_slurm(tmp_path, 300)
    spec = write_spec(tmp_path / "jobs" / "42" / "spec.json", gw, ev_base, sha, srun=str(srun))
    log = tmp_path / "runner.log"
    p = start_runner(str(spec), log)           # no SLIPWAY_TIME_LIMIT_S / _WARNING_S
    wait_for_file(spec.parent / "work" / "running", p, log)
    p.send_signal(signal.SIGUSR1)
    assert p.wait(timeout=60) == 0, log.read_text()
    c = clone_results(gw, env, tmp_path)
    assert (c / "checkpoint.txt").exists() and not (c / "stopped.txt").exists()
    assert calls(tmp_path) == [] and "time-limit warning" not in log.read_text()


# -------------------------------------------------------------------------- the node's plan
def test_configured_reads_the_batch_environment():
    env = {time_limit.ENV_LIMIT: "3600", time_limit.ENV_WARNING: "120"}
    assert time_limit.configured(env) == (3600.0, 120.0)
    for bad in ({}, {time_limit.ENV_LIMIT: "3600"}, dict(env, SLIPWAY_TIME_WARNING_S="x"),
                dict(env, SLIPWAY_TIME_WARNING_S="0"), dict(env, SLIPWAY_TIME_LIMIT_S="nan")):
        assert time_limit.configured(bad) is None, bad


def test_plan_stops_half_the_lead_before_the_end_and_pushes_until_just_before():
    p = time_limit.plan(now=100.0, end=250.0, lead_s=120, grace_s=5)
    assert (p.stop_at, p.push_deadline) == (190.0, 248.0)        # 60 s for TERM grace + push
    short = time_limit.plan(now=100.0, end=160.0, lead_s=15, grace_s=5)
    assert short.stop_at == 145.0                                 # at least grace + 10 s
    late = time_limit.plan(now=100.0, end=104.0, lead_s=120, grace_s=5)
    assert late.stop_at == 100.0 and late.push_deadline == 110.0  # at once; the TERM path after
    assert "time limit in 150 s (slurm)" in p.describe(100.0)


def test_warning_at_asks_slurm_and_falls_back_to_start_plus_limit():
    seen = []

    def run(argv, **kw):
        seen.append((argv, kw["env"]["SLURM_TIME_FORMAT"]))
        return SimpleNamespace(returncode=0, stdout="1000300\n", stderr="")

    w = time_limit.warning_at(now=50.0, now_epoch=1000000.0, start_epoch=999000.0, limit_s=3600,
                              lead_s=120, grace_s=5, job_id="77", squeue="/s/squeue", run=run)
    assert seen == [(["/s/squeue", "--noheader", "--jobs=77", "--format=%e"], "%s")]
    assert (w.end, w.end_source, w.stop_at) == (350.0, "slurm", 290.0)

    def refused(argv, **kw):
        return SimpleNamespace(returncode=1, stdout="", stderr="slurm_load_jobs error: timeout")

    w = time_limit.warning_at(now=50.0, now_epoch=1000000.0, start_epoch=999000.0, limit_s=3600,
                              lead_s=120, grace_s=5, job_id="77", squeue="squeue", run=refused)
    assert (w.end, w.end_source) == (50.0 + 2600.0, "estimate")


def test_end_as_timeout_lowers_the_limit_to_the_whole_minutes_run():
    seen = []

    def run(argv, **kw):
        seen.append(argv)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    assert time_limit.end_as_timeout("77", "scontrol", 3599.9, run=run)
    assert seen == [["scontrol", "update", "JobId=77", "TimeLimit=59"]]
    assert not time_limit.end_as_timeout(None, "scontrol", 10, run=run)

    def refused(argv, **kw):
        return SimpleNamespace(returncode=1, stdout="", stderr="Access/permission denied")

    assert not time_limit.end_as_timeout("77", "scontrol", 10, run=refused)
    assert time_limit.slurm_program("/opt/slurm/bin/srun", "squeue") == "/opt/slurm/bin/squeue"
    assert time_limit.slurm_program("srun", "scontrol") == "scontrol"


# ----------------------------------------------------------------- the portal and the flag
def request(**over) -> JobRequest:
    base = dict(name="slipway-7", user="sw-alice", account="team-a", command=["python3", "-m", "x"],
                workdir="/tmp/j", output="/tmp/j/out.log", time_limit_min=60, env={"PORT": "1"})
    return JobRequest(**{**base, **over})


def test_lead_is_the_configured_one_bounded_to_a_quarter_of_short_limits():
    assert warning_lead_s(60, 120) == 120
    assert warning_lead_s(1, 120) == 15
    assert warning_lead_s(5, 120) == 75
    assert warning_lead_s(60, 0) == 0


def test_every_job_is_submitted_with_the_warning_signal_and_its_environment():
    req = validate(with_time_limit_warning(request(time_limit_min=1), 120), {})
    assert "--signal=B:USR1@15" in sbatch_options(req)
    assert req.env == {"PORT": "1", "SLIPWAY_TIME_LIMIT_S": "60", "SLIPWAY_TIME_WARNING_S": "15"}
    script = render_script(req)
    assert "export SLIPWAY_TIME_LIMIT_S=60\n" in script
    assert "export SLIPWAY_TIME_WARNING_S=15\n" in script
    off = with_time_limit_warning(request(), 0)
    assert off.signal is None and not any(o.startswith("--signal") for o in sbatch_options(off))


def test_the_signal_lead_is_checked():
    assert validate(request(signal="B:USR1@65535"), {})
    for bad, msg in (("B:USR1@65536", "1 to 65535 seconds"), ("B:USR1@0", "1 to 65535 seconds"),
                     ("USR1;rm", "is not allowed")):
        with pytest.raises(InvalidRequest, match=msg):
            validate(request(signal=bad), {})


def test_time_limit_warning_s_config(tmp_path):
    assert Config(data_dir=tmp_path).time_limit_warning_s == 120
    assert Config(data_dir=tmp_path, time_limit_warning_s=0).time_limit_warning_s == 0
    for bad in (-1, 65536):
        with pytest.raises(ConfigError, match="time_limit_warning_s must be 0"):
            Config(data_dir=tmp_path, time_limit_warning_s=bad)


def test_slurm_program_env_is_inherited(monkeypatch):
    """squeue is run with the runner's own environment (SLURM_CONF & co) plus the format."""
    monkeypatch.setenv("SLURM_CONF", "/etc/x/slurm.conf")
    got = {}

    def run(argv, **kw):
        got.update(kw["env"])
        return SimpleNamespace(returncode=0, stdout="5\n", stderr="")

    assert time_limit.slurm_end_epoch("1", "squeue", run=run) == 5.0
    assert got["SLURM_CONF"] == "/etc/x/slurm.conf" and got["SLURM_TIME_FORMAT"] == "%s"
    assert os.environ.get("SLURM_TIME_FORMAT") != "%s"


# ------------------------------------------------------------------------ a multi-node job
RANK_WARNED = r'''import os, signal, sys, time
rank = os.environ["RANK"]
def warned(signum, _frame):
    with open(f"usr1-{rank}.txt", "w") as f:
        f.write("checkpoint\n")
def stop(signum, _frame):
    with open(f"term-{rank}.txt", "w") as f:
        f.write("SIGTERM\n")
    sys.exit(0)     # not 143: srun's --kill-on-bad-exit would end the other rank's step
signal.signal(signal.SIGUSR1, warned)
signal.signal(signal.SIGTERM, stop)
open(f"running-{rank}", "w").close()
while True:
    time.sleep(0.1)
'''


def test_a_multi_node_job_warns_every_rank_and_stops_them_through_slurm(server, tmp_path):
    """srun forwards SIGUSR1 to every rank; the stop reaches them through scancel (srun would
    SIGKILL them), then the files are pushed once and the job is ended as TIMEOUT."""
    import sys

    from tests.unit.test_node_multinode import FAKE_SCANCEL, FAKE_SRUN, free_port
    gw, env, events, ev_base = server
    srun = fake_slurm(tmp_path, 13)
    for name, text in (("srun", FAKE_SRUN), ("scancel", FAKE_SCANCEL)):
        srun.with_name(name).write_text(text.format(python=sys.executable))
        srun.with_name(name).chmod(0o755)
    sha = push_repo(gw, env, tmp_path, {"rank_prog.py": RANK_WARNED})
    spec = write_spec(tmp_path / "jobs" / "42" / "spec.json", gw, ev_base, sha, nodes=2,
                      master_port=free_port(), srun=str(srun), grace_seconds=1,
                      container_argv=[sys.executable, "rank_prog.py"],
                      env={"PORT": str(free_port())})
    log = tmp_path / "runner.log"
    p = start_runner(str(spec), log, FAKE_SRUN_LOG=str(tmp_path / "srun.log"),
                     **{time_limit.ENV_LIMIT: "600", time_limit.ENV_WARNING: "8"})
    work = spec.parent / "work"
    for r in (0, 1):
        wait_for_file(work / f"running-{r}", p, log)
    p.send_signal(signal.SIGUSR1)
    assert p.wait(timeout=60) == 0, log.read_text()
    c = clone_results(gw, env, tmp_path)
    for r in (0, 1):
        assert (c / f"usr1-{r}.txt").read_text() == "checkpoint\n"   # srun forwarded USR1
        assert (c / f"term-{r}.txt").read_text() == "SIGTERM\n"      # stopped through Slurm
    assert (tmp_path / "srun.log.scancel").read_text() == "--signal=TERM 9001\n"
    assert "forcing job termination" not in log.read_text()
    assert events.wait_for("results")["message"].startswith("slipway: time limit reached")
    assert calls(tmp_path)[-1] == "scontrol update JobId=9001 TimeLimit=0"
