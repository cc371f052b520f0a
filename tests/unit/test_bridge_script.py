"""Rendered batch scripts: hostile values arrive verbatim when bash runs the script."""
import os
import subprocess
import sys

import pytest

from slurm_bridge.errors import InvalidRequest
from slurm_bridge.request import GpuRequest, JobRequest, validate
from slurm_bridge.script import HEADER, render_script, sbatch_options

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
    req = make(name="t/p:b", gpus=GpuRequest("a4000", 2), partition="train", qos="emergency",
               mem_mb=512, time_limit_min=30, signal="B:USR1@60", requeue=False, hold=True,
               workdir="/tmp/a b", output="/tmp/a b/%j.out", comment="slipway:42")
    opts = sbatch_options(req)
    for expected in ["--job-name=t/p:b", "--account=team-nlp", "--qos=emergency", "--time=30",
                     "--gres=gpu:a4000:2", "--partition=train", "--mem=512M", "--signal=B:USR1@60",
                     "--no-requeue", "--hold", "--chdir=/tmp/a b", "--output=/tmp/a b/%j.out",
                     "--comment=slipway:42"]:
        assert expected in opts
    assert "--requeue" not in opts


def test_sbatch_options_defaults():
    opts = sbatch_options(make(gpus=GpuRequest("shard", 2)))
    assert "--requeue" in opts and "--gres=shard:2" in opts
    assert not any(o.startswith(("--partition", "--mem", "--signal", "--hold")) for o in opts)


# ------------------------------------------------------------------ no injected #SBATCH lines
INJECTIONS = [
    "\n#SBATCH --uid=0",
    "\n#SBATCH --gres=gpu:a4000:4",
    "x\n#SBATCH --uid=0\n#SBATCH --gres=gpu:a4000:4\n",
    "'\n#SBATCH --uid=0\n'",
    "\r\n#SBATCH --uid=0",
    "\n  #SBATCH --uid=0",
    "\n#SLURM --uid=0",
    "\\\n#SBATCH --uid=0",
]


def sbatch_directive_region(script: str) -> list[str]:
    """The lines sbatch reads directives from (Slurm 22.05 src/sbatch/opt.c): every line up to
    the first one whose first non-blank character is not ``#``. Lines in it that start with
    ``#SBATCH`` (or the old ``#SLURM``) are options, as if given on the command line."""
    region = []
    for line in script.split("\n"):
        stripped = line.lstrip(" \t\r\v\f")
        if stripped and not stripped.startswith("#"):
            break
        region.append(line)
    return region


def directives(script: str) -> list[str]:
    # stricter than sbatch: a #SBATCH after leading blanks counts too
    return [l for l in sbatch_directive_region(script) if l.lstrip().startswith(("#SBATCH", "#SLURM"))]


def test_the_directive_parser_sees_real_directives():
    """The parser above is not vacuous: a script that does carry directives has them found."""
    script = "#!/bin/bash\n# c\n\n#SBATCH --uid=0\nexport A=1\n#SBATCH --gres=gpu:a4000:4\n"
    assert directives(script) == ["#SBATCH --uid=0"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_env_value_never_becomes_an_sbatch_directive(value, tmp_path):
    script = render_script(make(env={"SLIPWAY_VALUE": value, "A_FIRST": value},
                                command=["printenv", "SLIPWAY_VALUE"]))
    assert "#SBATCH --uid=0" in script or "#SLURM" in script or "#SBATCH --gres" in script
    assert directives(script) == []
    # the whole region sbatch reads is our own header, nothing a user wrote
    assert sbatch_directive_region(script) == HEADER.rstrip("\n").split("\n")
    proc = run_bash(script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == value + "\n"  # and the value still arrives verbatim


@pytest.mark.parametrize("value", INJECTIONS)
def test_command_word_never_becomes_an_sbatch_directive(value):
    script = render_script(make(command=["echo", value, "--", value]))
    assert directives(script) == []
    assert sbatch_directive_region(script) == HEADER.rstrip("\n").split("\n")


def test_hostile_script_passes_bash_n(tmp_path):
    """bash -n: the rendered script (every hostile value at once) is one valid bash program."""
    env = {f"V{i}": v for i, v in enumerate(HOSTILE_VALUES + INJECTIONS)}
    script = render_script(make(env=env, command=["printf", "%s\\n", *INJECTIONS, *HOSTILE_VALUES]))
    path = tmp_path / "job.sh"
    path.write_text(script)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    # bash -n catches a broken quote: the check is not vacuous
    broken = tmp_path / "broken.sh"
    broken.write_text(script.replace("exec printf", "exec printf '", 1))
    assert subprocess.run(["bash", "-n", str(broken)], capture_output=True, timeout=30).returncode != 0
    assert directives(script) == []


@pytest.mark.parametrize("field", ["name", "account", "qos", "partition", "comment", "workdir",
                                   "output", "signal"])
@pytest.mark.parametrize("value", ["\n#SBATCH --uid=0", "x\r#SBATCH --uid=0"])
def test_single_line_fields_refuse_newlines(field, value):
    """Values passed as sbatch options must be one line (argv, but Slurm stores and prints them)."""
    base = {"workdir": "/tmp", "output": "/tmp/o", "signal": "USR1@60"}.get(field, "ok")
    with pytest.raises(InvalidRequest):
        make(**{field: base + value})


def test_sbatch_options_carry_no_newline():
    opts = sbatch_options(make(env={"X": "\n#SBATCH --uid=0"}, command=["echo", "\n#SBATCH --uid=0"]))
    assert not any("\n" in o or "\r" in o for o in opts)
    assert not any(o.startswith("--uid") for o in opts)
