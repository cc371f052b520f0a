"""Rendered batch scripts: hostile values arrive verbatim when bash runs the script."""
import os
import subprocess
import sys

import pytest

from slurm_bridge.request import GpuRequest, JobRequest, validate
from slurm_bridge.script import render_script, sbatch_options

LIMITS = {"a4000": 4, "a6000": 2, "shard": 8}

HOSTILE_VALUES = [
    "plain",
    "a; touch /tmp/slipway-pwned",
    "$(touch /tmp/slipway-pwned)",
    "`touch /tmp/slipway-pwned`",
    "${HOME}$PATH",
    "it's \"quoted\" \\ back",
    "line1\nline2\n",
    "\n; touch /tmp/slipway-pwned\n",
    "' ; touch /tmp/slipway-pwned ; '",
    "*",
    "-n",
    "",
    "tab\there | pipe & amp > gt < lt",
    "émoji ✓ ünïcode",
    "x" * 60_000,
    "!event",
    "\r\n\x1b[31mred",
]


def make(**kw):
    base = dict(name="n", user="sw-alice", account="team-nlp", command=["true"],
                workdir="/tmp", output="/tmp/o")
    base.update(kw)
    return validate(JobRequest(**base), LIMITS)


def run_bash(script: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "job.sh"
    path.write_text(script)
    env = {"PATH": os.environ["PATH"]}
    return subprocess.run(["bash", str(path)], capture_output=True, cwd=tmp_path, env=env,
                          timeout=30)


@pytest.fixture(autouse=True)
def no_pwned():
    marker = "/tmp/slipway-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    yield
    assert not os.path.exists(marker), "a hostile value was executed by the shell"


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_env_values_arrive_verbatim(value, tmp_path):
    script = render_script(make(env={"SLIPWAY_VALUE": value}, command=["printenv", "SLIPWAY_VALUE"]))
    proc = run_bash(script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == value + "\n"


def test_command_words_arrive_verbatim(tmp_path):
    # python prints its argv as JSON: every word must arrive as exactly one argument
    code = "import json,sys; print(json.dumps(sys.argv[1:]))"
    words = [v for v in HOSTILE_VALUES]
    script = render_script(make(command=[sys.executable, "-c", code, *words]))
    proc = run_bash(script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    import json
    assert json.loads(proc.stdout) == words


def test_many_env_values_together(tmp_path):
    env = {f"V{i}": v for i, v in enumerate(HOSTILE_VALUES)}
    code = "import json,os; print(json.dumps({k: os.environ[k] for k in os.environ if k[0]=='V'}))"
    proc = run_bash(render_script(make(env=env, command=[sys.executable, "-c", code])), tmp_path)
    import json
    assert json.loads(proc.stdout) == env


def test_exit_status_of_command_is_the_scripts(tmp_path):
    proc = run_bash(render_script(make(command=["bash", "-c", "exit 7"])), tmp_path)
    assert proc.returncode == 7


def test_script_shape():
    script = render_script(make(env={"B": "2", "A": "1"}, command=["echo", "hi there"]))
    assert script.startswith("#!/bin/bash\n")
    assert script.endswith("exec echo 'hi there'\n")
    assert script.index("export A=1") < script.index("export B=2")


def test_sbatch_options_are_separate_argv_items():
    req = make(name="t/p:b", gpus=GpuRequest("a4000", 2), partition="gpu", qos="emergency",
               mem_mb=512, time_limit_min=30, signal="B:USR1@60", requeue=False, hold=True,
               workdir="/tmp/a b", output="/tmp/a b/%j.out", comment="slipway:42")
    opts = sbatch_options(req)
    for expected in ["--job-name=t/p:b", "--account=team-nlp", "--qos=emergency", "--time=30",
                     "--gres=gpu:a4000:2", "--partition=gpu", "--mem=512M", "--signal=B:USR1@60",
                     "--no-requeue", "--hold", "--chdir=/tmp/a b", "--output=/tmp/a b/%j.out",
                     "--comment=slipway:42"]:
        assert expected in opts
    assert "--requeue" not in opts


def test_sbatch_options_defaults():
    opts = sbatch_options(make(gpus=GpuRequest("shard", 2)))
    assert "--requeue" in opts and "--gres=shard:2" in opts
    assert not any(o.startswith(("--partition", "--mem", "--signal", "--hold")) for o in opts)
