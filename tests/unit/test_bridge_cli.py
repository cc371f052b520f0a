"""CliBackend through a FakeRunner: the argv it builds and how Slurm's answers are mapped."""
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from slurm_bridge.backend import SlurmBackend
from slurm_bridge.cli import CliBackend, slurm_time
from slurm_bridge.errors import (ControllerUnavailable, GresUnavailable, InvalidRequest, JobNotFound,
                                 SlurmRejected)
from slurm_bridge.request import GpuRequest, JobRequest
from slurm_bridge.runner import FakeRunner, result
from tests.support.squeue_text import text_answer

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
LIMITS = {"a4000": 4, "a6000": 2, "shard": 8}
ALICE = SimpleNamespace(pw_uid=1001, pw_gid=1500, pw_dir="/home/sw-alice")


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def backend(responses, **kw):
    runner = FakeRunner(responses)
    kw.setdefault("as_root", True)
    kw.setdefault("gpu_limits", LIMITS)
    b = CliBackend(runner, env={"SLURM_CONF": "/c/slurm.conf", "PATH": "/usr/bin",
                                "SECRET": "portal-only"}, user_ids=lambda u: ALICE, **kw)
    return b, runner


def req(**kw):
    base = dict(name="team/proj:main", user="sw-alice", account="team-test",
                command=["printenv", "CUDA_VISIBLE_DEVICES"], workdir="/tmp/w",
                output="/tmp/w/%j.out", gpus=GpuRequest("a4000", 2), env={"A": "$(id)"})
    base.update(kw)
    return JobRequest(**base)


def test_cli_backend_is_a_slurm_backend():
    assert isinstance(CliBackend(FakeRunner(), env={}), SlurmBackend)


def test_submit_argv_stdin_and_clean_env():
    b, runner = backend({"sbatch": result("4242\n")})
    assert b.submit(req()) == 4242
    call = runner.calls[0]
    argv = call["argv"]
    assert argv[:4] == ("sbatch", "--parsable", "--uid=1001", "--gid=1500")
    assert "--gres=gpu:a4000:2" in argv and "--account=team-test" in argv
    assert call["input"].startswith("#!/bin/bash") and "export A='$(id)'" in call["input"]
    assert call["env"] == {"SLURM_CONF": "/c/slurm.conf", "PATH": "/usr/bin", "HOME": "/home/sw-alice",
                           "USER": "sw-alice", "LOGNAME": "sw-alice"}  # no SECRET, no LANG given
    assert call["timeout"] == 30.0


def test_submit_not_root_has_no_uid():
    b, runner = backend({"sbatch": result("7;slipway\n")}, as_root=False)
    assert b.submit(req()) == 7
    assert not any(a.startswith("--uid") for a in runner.calls[0]["argv"])


def test_submit_refuses_over_limit_without_calling_slurm():
    b, runner = backend({})
    with pytest.raises(InvalidRequest, match="a4000 allows at most 4 GPUs per job; you asked for 5"):
        b.submit(req(gpus=GpuRequest("a4000", 5)))
    assert runner.calls == []


def test_submit_without_limits_leaves_gpu_checks_to_slurm():
    b, runner = backend({"sbatch": result("5\n")}, gpu_limits=None)
    assert b.submit(req(gpus=GpuRequest("a4000", 9))) == 5


def test_submit_garbage_output():
    b, _ = backend({"sbatch": result("hello\n")})
    with pytest.raises(SlurmRejected, match="no job id"):
        b.submit(req())


def test_submit_timeout_is_controller_unavailable():
    b, _ = backend({"sbatch": result(timed_out=True, rc=-1)})
    with pytest.raises(ControllerUnavailable, match="did not answer"):
        b.submit(req())


@pytest.mark.parametrize("kw,expected", [
    ({}, ("scancel", "42")),
    ({"signal": "TERM"}, ("scancel", "--signal=TERM", "--full", "42")),
    ({"signal": "USR1", "batch_only": True}, ("scancel", "--signal=USR1", "--batch", "42")),
])
def test_cancel_argv(kw, expected):
    b, runner = backend({"scancel": result()})
    b.cancel(42, **kw)
    assert runner.calls[0]["argv"] == expected


RECORDED_ERRORS = [
    # (fixture, command, exception, text that must reach the user)
    ("stderr_sbatch_gres_over.txt", "submit", GresUnavailable, "Requested node configuration is not available"),
    ("stderr_sbatch_gres_type.txt", "submit", GresUnavailable, "Requested node configuration is not available"),
    ("stderr_sbatch_qos.txt", "submit", SlurmRejected, "Invalid qos specification"),
    ("stderr_sbatch_account.txt", "submit", SlurmRejected, "Invalid account"),
    ("stderr_down_sbatch.txt", "submit", ControllerUnavailable, "Unable to contact slurm controller"),
    ("stderr_down_scancel.txt", "cancel", ControllerUnavailable, "Unable to contact slurm controller"),
    ("stderr_down_scontrol.txt", "hold", ControllerUnavailable, "Unexpected message received"),
    ("stderr_hold_unknown.txt", "hold", JobNotFound, "Invalid job id specified"),
    ("stderr_requeue_unknown.txt", "requeue", JobNotFound, "Invalid job id specified"),
    ("stderr_release_done.txt", "release", SlurmRejected, "Job has already finished"),
    ("stderr_down_sacct.txt", "accounting", ControllerUnavailable, "Connection refused"),
]


def recorded(name):
    text = fixture(name)
    body, _, rc = text.rpartition("rc=")
    return result("", body, rc=int(rc))


@pytest.mark.parametrize("name,op,exc,text", RECORDED_ERRORS)
def test_recorded_slurm_errors_become_typed_exceptions(name, op, exc, text):
    prog = {"submit": "sbatch", "cancel": "scancel", "accounting": "sacct"}.get(op, "scontrol")
    b, _ = backend({prog: recorded(name), "sinfo": result(fixture("sinfo.json"))})
    call = {
        "submit": lambda: b.submit(req()),
        "accounting": lambda: b.accounting(datetime(2024, 1, 1), datetime(2024, 1, 2)),
    }.get(op, lambda: getattr(b, op)(999999))
    with pytest.raises(exc) as info:
        call()
    assert text in str(info.value)
    assert "error:" not in str(info.value)  # Slurm's prefixes are stripped


def test_submit_rejection_keeps_slurms_own_text():
    b, _ = backend({"sbatch": recorded("stderr_sbatch_qos.txt")})
    with pytest.raises(SlurmRejected) as info:
        b.submit(req())
    assert info.value.slurm_message == "Invalid qos specification"
    assert str(info.value) == "Slurm refused the job: Invalid qos specification"


def test_cancel_of_ended_or_unknown_job_is_quiet():
    # recorded: scancel of a finished or unknown job id prints nothing and exits 0
    b, _ = backend({"scancel": recorded("stderr_scancel_done.txt")})
    b.cancel(999999)


def test_cancel_refuses_odd_signal_and_ids():
    b, runner = backend({"scancel": result()})
    with pytest.raises(InvalidRequest):
        b.cancel(42, signal="TERM;ls")
    with pytest.raises(InvalidRequest):
        b.cancel("42; ls")  # type: ignore[arg-type]
    assert runner.calls == []


@pytest.mark.parametrize("method,argv", [
    ("hold", ("scontrol", "hold", "9")), ("release", ("scontrol", "release", "9")),
    ("requeue", ("scontrol", "requeue", "9")),
])
def test_scontrol_argv(method, argv):
    b, runner = backend({"scontrol": result()})
    getattr(b, method)(9)
    assert runner.calls[0]["argv"] == argv


def delimiter_of(argv) -> str:
    return next(a for a in argv if a.startswith("--delimiter=")).removeprefix("--delimiter=")


def sacct_answer(text: str):
    """A FakeRunner responder: recorded sacct text (``|``) in the delimiter the call asked for."""
    def answer(argv, _):
        d = delimiter_of(argv)
        return result("\n".join("|".join(line.split("|", 12)).replace("|", d, 12)
                                if line.count("|") >= 12 and line.split("|", 1)[0].isdigit()
                                else line for line in text.split("\n")))
    return answer


def test_accounting_always_bounded_parsable_allocations_with_duplicates():
    b, runner = backend({"sacct": result("")})
    start = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    end = datetime(2024, 5, 1, 11, 0, tzinfo=timezone.utc)
    assert b.accounting(start, end, job_ids=[3, 1, 3]) == []
    call = runner.calls[0]
    argv = call["argv"]
    assert argv[:3] == ("sacct", "--parsable2", "--noheader")
    assert {"--allusers", "--duplicates", "-X"} <= set(argv)
    assert ("--format=JobIDRaw,JobID,State,ExitCode,Submit,Start,End,ElapsedRaw,NodeList,AllocTRES,"
            "Account,QOS,User,JobName") in argv
    assert argv[argv.index("-S") + 1] == slurm_time(start)
    assert argv[argv.index("-E") + 1] == slurm_time(end)
    assert argv[-2:] == ("-j", "1,3")
    assert call["env"]["SLURM_TIME_FORMAT"] == "%s" and call["env"]["SLURM_CONF"] == "/c/slurm.conf"
    d = delimiter_of(argv)
    assert d.startswith("\x1f") and len(d) > 2
    assert b.accounting(start, end, job_ids=[]) == []  # nothing asked: no call
    assert len(runner.calls) == 1
    b.accounting(start, end)
    assert delimiter_of(runner.calls[1]["argv"]) != d  # a fresh delimiter per call
    with pytest.raises(InvalidRequest):
        b.accounting(end, start)


def test_accounting_parses_the_recorded_answer_with_exit_code_3():
    b, runner = backend({"sacct": sacct_answer(fixture("sacct.txt"))})
    start = datetime.fromtimestamp(1795452581 - 3600, tz=timezone.utc)  # all submitted later
    recs = {r.name: r for r in b.accounting(start, start + timedelta(hours=2))}
    assert len(runner.calls) == 1  # every job submitted well inside the window: no lookback
    assert recs["rec-exit3"].exit_code == 3 and recs["rec-exit3"].state == "FAILED"
    assert recs["rec-a4000"].exit_code == 0 and dict(recs["rec-a4000"].gpus) == {"a4000": 2}
    assert "rec-odd|name\n99|COMPLETED|0:0" in recs


def test_accounting_error_and_unavailable_with_exit_0():
    b, _ = backend({"sacct": result("", "sacct: error: Problem talking to the database: "
                                    "Connection refused\n", rc=0)})
    with pytest.raises(ControllerUnavailable):
        b.accounting(datetime(2024, 1, 1), datetime(2024, 1, 2))
    b, _ = backend({"sacct": result("", "sacct: error: Invalid field requested: \"Bogus\"\n", rc=1)})
    with pytest.raises(SlurmRejected, match="Invalid field"):
        b.accounting(datetime(2024, 1, 1), datetime(2024, 1, 2))


def test_accounting_splits_long_job_id_lists():
    from slurm_bridge import cli
    b, runner = backend({"sacct": result("")})
    ids = list(range(1, cli.SACCT_MAX_IDS * 2 + 2))
    assert b.accounting(datetime(2024, 1, 1), datetime(2024, 1, 2), job_ids=ids) == []
    assert len(runner.calls) == 3
    assert all(len(c["argv"][-1]) < 128 * 1024 for c in runner.calls)


def test_slurm_time_is_local_wall_clock():
    aware = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert slurm_time(aware) == aware.astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    assert slurm_time(datetime(2024, 5, 1, 10, 0, 5)) == "2024-05-01T10:00:05"


def test_squeue_with_controller_down_is_unavailable_not_empty():
    # recorded: squeue exits 1 with "Unable to contact slurm controller" when slurmctld is stopped
    b, _ = backend({"squeue": recorded("stderr_down_squeue_text.txt")})
    with pytest.raises(ControllerUnavailable, match="Unable to contact"):
        b.jobs()


def test_sacct_nothing_found_is_an_empty_answer():
    # recorded: sacct --parsable2 --noheader with no jobs in the window prints nothing, exit 0
    b, runner = backend({"sacct": result("")})
    assert b.accounting(datetime(2020, 1, 1), datetime(2020, 1, 2)) == []
    assert len(runner.calls) == 1


def test_jobs_is_one_squeue_call_filtered_by_comment():
    b, runner = backend({"squeue": text_answer(fixture("squeue.json"))})
    jobs = b.jobs()
    assert [c["argv"][0] for c in runner.calls] == ["squeue"]
    assert all(r.comment == "slipway" or r.comment.startswith("slipway:") for r in jobs.values())
    assert len(jobs) >= 2 and all(isinstance(k, int) for k in jobs)
    everything = b.jobs(comment=None)
    assert {r.comment for r in everything.values()} >= {"other"}


def test_nodes_use_sinfo_json():
    b, runner = backend({"sinfo": result(fixture("sinfo.json"))})
    assert {n.name for n in b.nodes()} == {"a4k-1", "a4k-2", "a6k-1"}
    assert runner.calls[0]["argv"] == ("sinfo", "--json")


def test_accounting_numbers_attempts_from_a_wider_lookup():
    """Recorded: a window that holds only the victim's second attempt; the second call (-j the
    victim, window opened earlier) finds the first, so the attempt keeps number 1."""
    narrow = fixture("sacct_window_second_attempt.txt")
    full = "".join(line + "\n" for line in fixture("sacct.txt").splitlines() if "rec-victim" in line)
    victim = narrow.split("|", 1)[0]
    start = datetime.fromtimestamp(int(narrow.split("|")[4]), tz=timezone.utc)
    b, runner = backend({"sacct": lambda argv, _: sacct_answer(
        narrow if argv[argv.index("-S") + 1] == slurm_time(start) else full)(argv, _)})
    recs = b.accounting(start, start, job_ids=[int(victim)])
    assert len(runner.calls) == 2
    wide = runner.calls[1]["argv"]
    assert wide[-2:] == ("-j", victim) and wide[wide.index("-S") + 1] == slurm_time(start - timedelta(days=7))
    assert [(r.attempt, r.state) for r in recs] == [(1, "CANCELLED")]


def test_accounting_without_lookback_answer_keeps_window_numbering():
    narrow = fixture("sacct_window_second_attempt.txt")
    start = datetime.fromtimestamp(int(narrow.split("|")[4]), tz=timezone.utc)
    b, runner = backend({"sacct": sacct_answer(narrow)})
    recs = b.accounting(start, start)
    assert len(runner.calls) == 2 and [(r.attempt, r.state) for r in recs] == [(0, "CANCELLED")]
