"""sbatch's flags for ``slipway submit`` -> a push's overrides (portal.jobs.sbatch_flags)."""
from __future__ import annotations

import pytest

from portal.jobs import sbatch_flags as sf
from slurm_bridge.request import GpuRequest

LIMITS = {"a4000": 4, "a6000": 2}


def parse(*tokens):
    return sf.parse_flags(list(tokens), LIMITS)


def test_every_flag_in_its_long_short_and_spaced_forms():
    r = parse("--gres=gpu:a4000:2", "-t", "2:00:00", "--cpus-per-task", "8", "--mem=16G",
              "-p", "train", "--qos=emergency", "-A", "team-vision", "-u", "alice",
              "-J", "my run", "-N1", "--image", "pytorch", "--compute=a4000x2", "--project=exp")
    assert r.problems == []
    assert r.overrides == {"gpus": GpuRequest("a4000", 2), "time_limit_min": 120, "cpus": 8,
                           "mem_mb": 16384, "partition": "train", "emergency": True,
                           "image": "pytorch", "compute": "a4000x2"}
    assert (r.user, r.account, r.project, r.job_name) == ("alice", "team-vision", "exp", "my run")
    r = parse("-c4", "-t=30", "--qos", "normal", "--gpus=a6000:1")
    assert r.overrides == {"cpus": 4, "time_limit_min": 30, "emergency": False,
                           "gpus": GpuRequest("a6000", 1)}


@pytest.mark.parametrize("text,minutes", [
    ("90", 90), ("5:00", 5), ("5:01", 6), ("0:30", 1), ("1:30:00", 90), ("2:00:59", 121),
    ("1-0", 1440), ("1-12", 2160), ("2-03:15", 2 * 1440 + 195), ("1-00:00:01", 1441),
    ("14-0", 20160),
])
def test_time_in_every_sbatch_form(text, minutes):
    assert sf.parse_time(text) == minutes


@pytest.mark.parametrize("text,words", [
    ("2h", "cannot read --time"), ("1:2:3:4", "cannot read --time"), ("1-", "cannot read"),
    ("0", "at least 1 minute"), ("0:00:00", "at least 1 minute"), ("UNLIMITED", "need a time limit"),
    ("15-0", "at most 20160 minutes"), ("abc", "D-HH:MM:SS"),
])
def test_bad_times_are_refused_with_the_forms(text, words):
    with pytest.raises(ValueError, match=words):
        sf.parse_time(text)


def test_gres_needs_a_type_and_lists_the_types():
    assert parse("--gres=gpu:a4000").overrides["gpus"] == GpuRequest("a4000", 1)
    assert parse("--gres=none").overrides["gpus"] == GpuRequest("cpu", 1)
    for spec in ("gpu:2", "gpu"):
        [msg] = parse(f"--gres={spec}").problems
        assert "names no GPU type" in msg and "types: a4000, a6000" in msg
    [msg] = parse("--gpus=2").problems
    assert "names no GPU type" in msg and "--gpus=a4000:2" in msg
    [msg] = parse("--gres=gpu:h100:1").problems
    assert "unknown GPU type 'h100'" in msg and "a4000, a6000" in msg
    [msg] = parse("--gres=license:foo:1").problems
    assert "only GPUs can be requested" in msg
    [msg] = parse("--gres=gpu:a4000:1,gpu:a6000:1").problems
    assert "one GPU request per job" in msg
    [msg] = parse("--gres=gpu:a4000:x").problems
    assert "a4000" in msg


def test_mem_cpus_qos_nodes_and_names_refused_clearly():
    cases = {
        "--mem=1PB": "--mem=1PB: cannot read memory '1PB'",
        "--mem=0": "memory must be at least 1M",
        "--cpus-per-task=0": "at least 1",
        "--qos=high": "Slipway's QOS are normal and emergency",
        "--nodes=1-4": "Slipway runs a job on an exact number of nodes; write --nodes=1",
        "--nodes=0": "N at least 1",
        "-N": "--nodes needs a value",
        "--nodes=x": "write --nodes=N",
        "--partition=a b": "is not a partition name",
        "--user=../x": "is not a user name",
        "--job-name=a\nb": "one line",
        "--compute=A B": "is not a compute type name",
        "--frobnicate=1": "unknown flag '--frobnicate'",
        "-x": "unknown flag '-x'",
        "job.sh": "unexpected argument 'job.sh'",
        "--time=": "--time needs a value",
    }
    for flag, words in cases.items():
        r = parse(flag)
        assert len(r.problems) == 1 and words in r.problems[0], (flag, r.problems)
        assert r.overrides == {}
    assert parse("--nodes=1", "-N", "1-1").problems == []


@pytest.mark.parametrize("spec,tasks,limit", [("0-15", 16, None), ("0-5%2", 6, 2), ("0", 1, None),
                                               ("0-1000", 1001, None)])
def test_an_array_from_0_is_tasks_and_a_limit(spec, tasks, limit):
    r = parse(f"--array={spec}")
    assert r.problems == [] and r.overrides.get("array_tasks") == tasks
    assert r.overrides.get("max_parallel") == limit
    assert parse("--nodes=2").overrides == {"nodes": 2} and parse("-N", "1").overrides == {}


@pytest.mark.parametrize("spec", ["1,3,5-7", "0-15:4", "7", "1,2%1"])
def test_a_valid_array_in_another_shape_is_refused_with_the_shape_slipway_runs(spec):
    [msg] = parse(f"--array={spec}").problems
    assert "Slipway runs arrays as 0-N or 0-N%M" in msg


@pytest.mark.parametrize("spec,why", [
    ("5-1", "the range 5-1 ends before it starts"),
    ("0-1001", "index 1001 is above the largest allowed, 1000"),
    ("0-15:0", "the step in 0-15:0 must be at least 1"),
    ("1,,3", "'' is not an index"),
    ("a-b", "'a-b' is not an index"),
    ("-3", "is not an index"),
    ("0-5%", "the limit after % must be a whole number"),
    ("0-5%0", "the limit after % must be a whole number"),
    ("%4", "it names no index"),
])
def test_an_array_slurm_would_reject_says_why(spec, why):
    msg = sf.array_problem(spec)
    assert msg is not None and why in msg and "invalid --array specification" in msg
    [p] = parse("-a", spec).problems
    assert why in p and "Slipway runs arrays" not in p


def test_split_argv_finds_the_script_after_the_flags():
    argv = ["--gres", "gpu:a4000:1", "-t", "60", "-u", "alice", "--mem=1G", "job.sh", "x", "-y"]
    assert sf.split_argv(argv) == (argv[:7], ["job.sh", "x", "-y"])
    assert sf.split_argv(["-A", "nlp", "-"]) == (["-A", "nlp"], ["-"])
    assert sf.split_argv(["--unknown", "job.sh"]) == (["--unknown"], ["job.sh"])
    assert sf.split_argv(["-t", "5", "--", "-weird-name.sh"]) == (["-t", "5"], ["-weird-name.sh"])


def test_sbatch_lines_of_the_script_with_the_command_line_on_top():
    script = ("#!/bin/bash\n#SBATCH --gres=gpu:a4000:2 -t 1:00:00  # two GPUs\n"
              "# a comment\n#SBATCH -J from-script\n#SBATCH --mem=8G\n\necho hi\n"
              "#SBATCH --cpus-per-task=99\n")
    r = sf.read_request(script, ["-t", "30", "-J", "given"], LIMITS)
    assert r.problems == []
    assert r.overrides == {"gpus": GpuRequest("a4000", 2), "time_limit_min": 30, "mem_mb": 8192}
    assert r.job_name == "given"
    r = sf.read_request("#!/bin/sh\n#SBATCH --bogus\n#SBATCH -J 'unterminated\n", [], LIMITS)
    assert any("#SBATCH: unknown flag '--bogus'" in p for p in r.problems)
    assert any("line 3 of the script" in p for p in r.problems)
