"""Slurm's refusals (recorded from the local cluster, tests/fixtures/slurm) become typed errors
whose messages a user can act on."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from slurm_bridge.cli import CliBackend, gres_inventory
from slurm_bridge.errors import (ControllerUnavailable, GresUnavailable, SlurmRejected,
                                 is_gres_refusal, is_unavailable, slurm_text)
from slurm_bridge.records import parse_nodes
from slurm_bridge.request import GpuRequest, JobRequest
from slurm_bridge.runner import FakeRunner, result
from slurm_bridge.sync import Change, DesiredState, apply, read_current, sync

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
ALICE = SimpleNamespace(pw_uid=1001, pw_gid=1500, pw_dir="/home/sw-alice")
OFFERED = {"a4000": 4, "a6000": 2, "shard": 8}  # the local cluster: sinfo.json


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def recorded(name: str):
    """A recorded stderr fixture (its last line is ``rc=N``) as a CommandResult."""
    body, _, rc = fixture(name).rpartition("rc=")
    return result("", body, rc=int(rc))


def backend(responses, **kw):
    runner = FakeRunner(responses)
    kw.setdefault("as_root", True)
    return CliBackend(runner, env={"SLURM_CONF": "/c/slurm.conf", "PATH": "/usr/bin"},
                      user_ids=lambda u: ALICE, **kw), runner


def req(gpus=None, **kw):
    return JobRequest(name="team/proj:main", user="sw-alice", account="team-test", command=["true"],
                      workdir="/tmp/w", output="/tmp/w/%j.out", gpus=gpus, **kw)


def programs(runner):
    return [c["argv"][0] for c in runner.calls]


# ------------------------------------------------------------------------------ gres refusals
def test_inventory_from_the_recorded_nodes():
    nodes = parse_nodes(json.loads(fixture("sinfo.json")))
    assert gres_inventory(nodes) == OFFERED


def test_unknown_gpu_type_says_what_the_cluster_offers():
    """Recorded: sbatch --gres=gpu:h100:1 -> only "Requested node configuration is not available"."""
    b, runner = backend({"sbatch": recorded("stderr_sbatch_gres_type.txt"),
                         "sinfo": result(fixture("sinfo.json"))})
    with pytest.raises(GresUnavailable) as info:
        b.submit(req(GpuRequest("h100", 1)))
    err = info.value
    assert isinstance(err, SlurmRejected)  # callers catching SlurmRejected still catch it
    assert str(err) == (
        "Slurm refused the job: no node has h100 GPUs (you asked for h100 x1, --gres=gpu:h100:1). "
        "This cluster offers a4000 (at most 4 GPUs per node), a6000 (at most 2 GPUs per node), "
        "shard (at most 8 shards per node). (Slurm: Requested node configuration is not available)")
    assert err.requested == "gpu:h100:1" and err.offered == OFFERED
    assert err.slurm_message == "Requested node configuration is not available"
    assert programs(runner) == ["sbatch", "sinfo"]  # sinfo only because sbatch refused


def test_too_many_gpus_says_the_most_one_node_has():
    b, _ = backend({"sbatch": recorded("stderr_sbatch_gres_over.txt"),
                    "sinfo": result(fixture("sinfo.json"))})
    with pytest.raises(GresUnavailable, match=r"no node has 5 GPUs of type a4000: the most one node "
                                              r"has is 4 \(you asked for a4000 x5, --gres=gpu:a4000:5\)"):
        b.submit(req(GpuRequest("a4000", 5)))


def test_too_many_shards():
    b, _ = backend({"sbatch": recorded("stderr_sbatch_shard_over.txt")}, gres_inventory=OFFERED)
    with pytest.raises(GresUnavailable, match=r"no node has 9 shards of type shard: the most one node has is 8"):
        b.submit(req(GpuRequest("shard", 9)))


def test_a_given_inventory_needs_no_slurm_call():
    b, runner = backend({"sbatch": recorded("stderr_sbatch_gres_type.txt")},
                        gres_inventory={"a4000": 4})
    with pytest.raises(GresUnavailable, match=r"no node has a6000 GPUs .*This cluster offers a4000 "
                                              r"\(at most 4 GPUs per node\)\."):
        b.submit(req(GpuRequest("a6000", 1)))
    assert programs(runner) == ["sbatch"]


def test_a_site_without_shards():
    """Recorded: a gres name not in GresTypes -> "Invalid generic resource (gres) specification"."""
    b, _ = backend({"sbatch": recorded("stderr_sbatch_gres_name.txt")},
                   gres_inventory={"a4000": 4, "a6000": 2})
    with pytest.raises(GresUnavailable, match=r"no node has shards \(you asked for shard x2, "
                                              r"--gres=shard:2\)\. This cluster offers a4000"):
        b.submit(req(GpuRequest("shard", 2)))


def test_gpus_that_exist_point_at_cpus_and_memory():
    b, _ = backend({"sbatch": recorded("stderr_sbatch_gres_over.txt")}, gres_inventory=OFFERED)
    with pytest.raises(GresUnavailable, match="no node can run --gres=gpu:a4000:2 together with the CPUs "
                                              "and memory asked for"):
        b.submit(req(GpuRequest("a4000", 2), cpus=512))


def test_inventory_unknown_when_sinfo_does_not_answer():
    b, runner = backend({"sbatch": recorded("stderr_sbatch_gres_type.txt"),
                         "sinfo": result("", "sinfo: error: Unable to contact slurm controller "
                                             "(connect failure)\n", rc=1)})
    with pytest.raises(GresUnavailable) as info:
        b.submit(req(GpuRequest("h100", 1)))
    assert str(info.value) == (
        "Slurm refused the job's GPU request --gres=gpu:h100:1 (h100 x1): Requested node "
        "configuration is not available; ask for a GPU type and count one node of the cluster has")
    assert info.value.offered == {}


def test_node_configuration_refusal_without_gpus_is_plain():
    b, runner = backend({"sbatch": recorded("stderr_sbatch_gres_over.txt")})
    with pytest.raises(SlurmRejected) as info:
        b.submit(req(cpus=512))
    assert not isinstance(info.value, GresUnavailable)
    assert str(info.value) == "Slurm refused the job: Requested node configuration is not available"
    assert programs(runner) == ["sbatch"]


def test_a_successful_submit_asks_nothing_more():
    b, runner = backend({"sbatch": result("12\n")})
    assert b.submit(req(GpuRequest("a4000", 2))) == 12
    assert programs(runner) == ["sbatch"]


def test_other_refusals_are_not_gres():
    for name in ("stderr_sbatch_qos.txt", "stderr_sbatch_account.txt"):
        assert not is_gres_refusal(fixture(name))
    for name in ("stderr_sbatch_gres_type.txt", "stderr_sbatch_gres_over.txt",
                 "stderr_sbatch_gres_name.txt"):
        assert is_gres_refusal(fixture(name))


# ------------------------------------------------------------------------- unavailable or not
@pytest.mark.parametrize("stderr", [
    "srun: error: Timed out waiting for job step to complete\n",
    "sacctmgr: error: account 'timed out runs' has no such user\n",
    "scontrol: error: job 12 timed out\n",
])
def test_timed_out_in_other_words_is_not_unavailable(stderr):
    assert not is_unavailable(stderr)


@pytest.mark.parametrize("stderr", [
    "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n",
    "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection to "
    "host:10.0.0.1:6819: Connection timed out\n",
    "squeue: error: Unable to contact slurm controller (connect failure)\n",
])
def test_timeouts_of_the_connection_are_unavailable(stderr):
    assert is_unavailable(stderr)


def test_a_refusal_mentioning_timed_out_stays_a_refusal():
    b, _ = backend({"scontrol": result("", "scontrol: error: job 9 timed out\n", rc=1)})
    with pytest.raises(SlurmRejected, match="job 9 timed out"):
        b.requeue(9)


# ---------------------------------------------------------------------- sacctmgr and scancel
def test_sacctmgr_with_slurmdbd_down_is_unavailable():
    """Recorded: sacctmgr -P -n show assoc with slurmdbd stopped."""
    b, _ = backend({"sacctmgr": recorded("stderr_down_sacctmgr.txt")}, as_root=False)
    with pytest.raises(ControllerUnavailable, match="Connection refused") as info:
        read_current(b)
    assert "error:" not in str(info.value)
    with pytest.raises(ControllerUnavailable):
        sync(b, DesiredState())


def test_sacctmgr_refusal_carries_slurms_text():
    """Recorded: sacctmgr -i add user sw-alice account=no-such-account."""
    b, runner = backend({"sacctmgr": recorded("stderr_sacctmgr_bad.txt")}, as_root=False)
    changes = [Change(("add", "user", "sw-alice", "account=no-such-account"), "add user sw-alice"),
               Change(("add", "user", "sw-bob", "account=no-such-account"), "add user sw-bob")]
    with pytest.raises(SlurmRejected) as info:
        apply(b, changes)
    assert info.value.slurm_message == ("This account 'no-such-account' doesn't exist.; "
                                        "Contact your admin to add this account.")
    assert str(info.value) == ("sacctmgr refused -i add user sw-alice account=no-such-account: "
                               "This account 'no-such-account' doesn't exist.; "
                               "Contact your admin to add this account.")
    assert runner.calls[0]["argv"] == ("sacctmgr", "-i", "add", "user", "sw-alice",
                                       "account=no-such-account")
    assert len(runner.calls) == 1  # stopped at the first refusal


def test_scancel_of_an_unknown_job_is_quiet():
    """Recorded: scancel 999999 prints nothing and exits 0 (22.05)."""
    b, runner = backend({"scancel": recorded("stderr_scancel_unknown.txt")})
    assert recorded("stderr_scancel_unknown.txt").rc == 0
    b.cancel(999999)
    assert runner.calls[0]["argv"] == ("scancel", "999999")
    assert slurm_text(fixture("stderr_scancel_unknown.txt").rpartition("rc=")[0]) == ""
