"""Validation of JobRequest / GpuRequest: refusals carry messages a user can act on."""
import pytest

from slurm_bridge.errors import InvalidRequest
from slurm_bridge.request import GpuRequest, JobRequest, validate, validate_gpus

LIMITS = {"a4000": 4, "a6000": 2, "shard": 8}


def make(**kw):
    base = dict(name="team-nlp/proj:main", user="sw-alice", account="team-nlp",
                command=["printenv", "X"], workdir="/tmp/w", output="/tmp/w/slurm-%j.out")
    base.update(kw)
    return JobRequest(**base)


def test_valid_request_passes_and_is_returned():
    req = make(gpus=GpuRequest("a4000", 2), env={"X": "1"}, signal="B:USR1@120")
    assert validate(req, LIMITS) is req


@pytest.mark.parametrize("gpus,gres", [
    (GpuRequest("a4000", 2), "gpu:a4000:2"),
    (GpuRequest("a6000", 1), "gpu:a6000:1"),
    (GpuRequest("shard", 2), "shard:2"),
])
def test_gres_strings(gpus, gres):
    assert gpus.gres == gres


@pytest.mark.parametrize("text,expected", [
    ("a4000:2", GpuRequest("a4000", 2)), ("gpu:a6000:1", GpuRequest("a6000", 1)),
    ("shard:3", GpuRequest("shard", 3)), ("A4000", GpuRequest("a4000", 1)),
])
def test_parse_gpu_request(text, expected):
    assert GpuRequest.parse(text) == expected


@pytest.mark.parametrize("text", ["a4000:two", "", "gpu:a4000:2:3", ":2"])
def test_parse_gpu_request_refuses_garbage(text):
    with pytest.raises(InvalidRequest, match="TYPE:COUNT"):
        GpuRequest.parse(text)


def test_too_many_gpus_message():
    with pytest.raises(InvalidRequest) as exc:
        validate_gpus(GpuRequest("a4000", 5), LIMITS)
    assert str(exc.value) == "a4000 allows at most 4 GPUs per job; you asked for 5"


def test_too_many_shards_message():
    with pytest.raises(InvalidRequest, match="shard allows at most 8 shards per job; you asked for 9"):
        validate_gpus(GpuRequest("shard", 9), LIMITS)


def test_unknown_gpu_type_lists_known_types():
    with pytest.raises(InvalidRequest) as exc:
        validate_gpus(GpuRequest("h100", 1), LIMITS)
    assert "unknown GPU type 'h100'" in str(exc.value)
    assert "a4000, a6000, shard" in str(exc.value)


@pytest.mark.parametrize("count", [0, -1, True, 1.5])
def test_bad_gpu_count(count):
    with pytest.raises(InvalidRequest, match="GPU count"):
        validate_gpus(GpuRequest("a4000", count), LIMITS)


HOSTILE = ["a;rm -rf /", "$(id)", "`id`", "a\nb", "a b", "'", '"', "a|b", "a&b", "../x", "-x",
           "a\x00b", "x" * 300, "ä", "a$b", "a>b", ""]


@pytest.mark.parametrize("field", ["user", "account", "qos", "partition"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_slurm_names_refused(field, value):
    with pytest.raises(InvalidRequest, match=field if field != "qos" else "QOS"):
        validate(make(**{field: value}), LIMITS)


@pytest.mark.parametrize("value", [v for v in HOSTILE if v not in ("../x",)])
def test_hostile_job_names_refused(value):
    with pytest.raises(InvalidRequest, match="job name"):
        validate(make(name=value), LIMITS)


@pytest.mark.parametrize("value", ["a;b", "a b", "$(id)", "a\nb", "x" * 251])
def test_hostile_comment_refused(value):
    with pytest.raises(InvalidRequest, match="comment"):
        validate(make(comment=value), LIMITS)


@pytest.mark.parametrize("field,label", [("workdir", "working directory"), ("output", "output path")])
@pytest.mark.parametrize("value", ["relative/path", "/a\nb", "/a\x00b", "/" + "x" * 5000])
def test_bad_paths_refused(field, label, value):
    with pytest.raises(InvalidRequest, match=label):
        validate(make(**{field: value}), LIMITS)


def test_paths_with_spaces_and_quotes_are_allowed():
    # paths go to sbatch as argv, never through a shell
    validate(make(workdir="/tmp/a b/it's $(x)", output="/tmp/o %j.out"), LIMITS)


@pytest.mark.parametrize("key", ["1A", "A-B", "A B", "A=B", "", "$(id)", "LD_PRELOAD",
                                 "SLURM_JOB_ID", "BASH_ENV", "PATH", "IFS", "BASH_FUNC_x%%"])
def test_bad_or_reserved_env_names_refused(key):
    with pytest.raises(InvalidRequest, match="environment variable"):
        validate(make(env={key: "v"}), LIMITS)


def test_env_value_with_nul_refused():
    with pytest.raises(InvalidRequest, match="NUL"):
        validate(make(env={"A": "x\x00y"}), LIMITS)


def test_env_value_too_long_refused():
    with pytest.raises(InvalidRequest, match="characters long"):
        validate(make(env={"A": "x" * 70_000}), LIMITS)


def test_command_checks():
    with pytest.raises(InvalidRequest, match="command is empty"):
        validate(make(command=[]), LIMITS)
    with pytest.raises(InvalidRequest, match="NUL"):
        validate(make(command=["echo", "a\x00"]), LIMITS)
    with pytest.raises(InvalidRequest, match="must be text"):
        validate(make(command=["echo", 3]), LIMITS)


@pytest.mark.parametrize("kw,match", [
    ({"cpus": 0}, "cpus"), ({"time_limit_min": 0}, "time limit"), ({"mem_mb": -5}, "memory"),
    ({"signal": "USR1;id"}, "signal"), ({"cpus": "2"}, "cpus"),
])
def test_numbers_and_signal(kw, match):
    with pytest.raises(InvalidRequest, match=match):
        validate(make(**kw), LIMITS)


def test_request_is_frozen_against_later_mutation():
    env = {"A": "1"}
    cmd = ["echo"]
    req = make(env=env, command=cmd)
    env["B"] = "2"
    cmd.append("x")
    assert dict(req.env) == {"A": "1"} and req.command == ("echo",)
