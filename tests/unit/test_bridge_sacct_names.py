"""``accounting(..., names=...)``: find a job by its name (a submission that had no answer)."""
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from slurm_bridge import cli
from slurm_bridge.cli import CliBackend, slurm_time
from slurm_bridge.errors import InvalidRequest
from slurm_bridge.runner import FakeRunner, result

START = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
END = datetime(2024, 5, 1, 11, 0, tzinfo=timezone.utc)
# JobIDRaw,State,ExitCode,Submit,Start,End,ElapsedRaw,NodeList,AllocTRES,Account,QOS,User,JobName
LINES = ["41|COMPLETED|0:0|1714557700|1714557710|1714557770|60|a4k-1|cpu=1,gres/gpu:a4000=1,"
         "gres/gpu=1|team-nlp|normal|sw-alice|slipway-7",
         "42|RUNNING|0:0|1714557700|1714557710|Unknown|60|a4k-1|cpu=1,gres/gpu:a4000=1,"
         "gres/gpu=1|team-nlp|normal|sw-alice|slipway-8"]


def backend(lines=()):
    def answer(argv, _):
        d = next(a for a in argv if a.startswith("--delimiter=")).split("=", 1)[1]
        return result("\n".join(line.replace("|", d) for line in lines))
    runner = FakeRunner({"sacct": answer})
    b = CliBackend(runner, env={"SLURM_CONF": "/c/slurm.conf", "PATH": "/usr/bin"}, as_root=False,
                   user_ids=lambda u: SimpleNamespace(pw_uid=1, pw_gid=1, pw_dir="/"))
    return b, runner


def test_names_filter_is_one_bounded_sacct_name_call():
    b, runner = backend(LINES[:1])
    recs = b.accounting(START, END, names=["slipway-7", "slipway-3", "slipway-7"])
    assert [(r.job_id, r.name, r.account) for r in recs] == [(41, "slipway-7", "team-nlp")]
    argv = runner.calls[0]["argv"]
    assert "--name=slipway-3,slipway-7" in argv and "-j" not in argv
    assert argv[argv.index("-S") + 1] == slurm_time(START)
    assert argv[argv.index("-E") + 1] == slurm_time(END)


def test_no_names_asked_is_no_call_and_odd_names_are_refused():
    b, runner = backend()
    assert b.accounting(START, END, names=[]) == [] and runner.calls == []
    for bad in ("a,b", "-x", "", "x y", 7):
        with pytest.raises(InvalidRequest):
            b.accounting(START, END, names=[bad])
    assert runner.calls == []


def test_names_and_ids_together_keep_both_filters():
    b, runner = backend(LINES)
    recs = b.accounting(START, END, job_ids=[41, 42], names=["slipway-8"])
    assert [r.job_id for r in recs] == [42]
    assert "-j" in runner.calls[0]["argv"]


def test_long_name_lists_are_split():
    b, runner = backend()
    names = [f"slipway-{i}" for i in range(cli.SACCT_MAX_IDS + 1)]
    assert b.accounting(START, END, names=names) == []
    assert len(runner.calls) == 2
