"""slurm_bridge against the live local cluster (fixture ``slurm_cluster`` from tests/conftest.py).

Without that fixture, a cluster named by SLURM_CONF in the environment is used; with neither,
these tests are skipped.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from slurm_bridge.cli import CliBackend
from slurm_bridge.errors import GresUnavailable, InvalidRequest, SlurmRejected
from slurm_bridge.request import GpuRequest, JobRequest
from slurm_bridge.sync import AccountSpec, DesiredState, QosSpec, UserSpec, read_current, sync

pytestmark = pytest.mark.cluster
LIMITS = {"a4000": 4, "a6000": 2, "shard": 8}


@pytest.fixture(scope="module")
def slurm_env(request) -> dict[str, str]:
    try:
        cluster = request.getfixturevalue("slurm_cluster")
        env = dict(cluster.env)
    except pytest.FixtureLookupError:
        if not os.environ.get("SLURM_CONF"):
            pytest.skip("no slurm_cluster fixture and no SLURM_CONF")
        env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    env.setdefault("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    return env


@pytest.fixture(scope="module")
def bridge(slurm_env) -> CliBackend:
    return CliBackend(env=slurm_env, gpu_limits=LIMITS)


@pytest.fixture
def jobdir():
    """A directory the job user can write (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="bridge-it-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def submitted(bridge):
    """Job ids to cancel when the test ends, whatever happened."""
    ids: list[int] = []
    yield ids
    for job_id in ids:
        try:
            bridge.cancel(job_id)
        except Exception:
            pass


def wait_for(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def job(jobdir: Path, name: str, command, **kw) -> JobRequest:
    kw.setdefault("account", "slipway-test")
    kw.setdefault("user", "sw-alice")
    return JobRequest(name=f"bridge-it/{name}", command=command, workdir=str(jobdir),
                      output=f"{jobdir}/%j.out", comment="slipway:it", time_limit_min=5, **kw)


def state(bridge: CliBackend, job_id: int) -> str:
    rec = bridge.jobs(comment=None).get(job_id)
    return rec.state if rec else "GONE"


def settled_record(bridge, job_id, since, timeout=30.0, named=False):
    """The job's sacct records once the last is settled; ``named``: and its JobName is in (a
    settled record may still be slurmdbd's one from the completion message, named
    "allocation" until the start message is processed: what billing reads is final, the name
    comes a moment later)."""
    def check():
        recs = [r for r in bridge.accounting(since, datetime.now(timezone.utc) + timedelta(minutes=1),
                                             job_ids=[job_id]) if r.job_id == job_id]
        ok = recs and recs[-1].settled and not (named and (recs[-1].name == "allocation"
                                                           or not recs[-1].qos))
        return recs if ok else None
    return wait_for(check, timeout, f"job {job_id} settled in sacct", interval=0.5)


def test_two_a4000_gpus_are_visible_in_the_job(bridge, jobdir, submitted):
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    req = job(jobdir, "cuda", ["bash", "-c", 'echo "CVD=$CUDA_VISIBLE_DEVICES V=$HOSTILE"; sleep 2'],
              gpus=GpuRequest("a4000", 2), env={"HOSTILE": "$(id) `id` ; 'x'\nline2"})
    job_id = bridge.submit(req)
    submitted.append(job_id)
    recs = settled_record(bridge, job_id, since, named=True)
    out = (jobdir / f"{job_id}.out").read_text()
    line = out.splitlines()[0]
    devices = line.split()[0].removeprefix("CVD=").split(",")
    assert len(devices) == 2, out
    assert out.endswith("V=$(id) `id` ; 'x'\nline2\n")

    # the accounting record: right GPU type/count, elapsed time, node, user, QOS
    rec = recs[-1]
    assert rec.state == "COMPLETED" and rec.exit_code == 0
    assert dict(rec.gpus) == {"a4000": 2}
    assert rec.elapsed_s >= 2 and rec.node.startswith("a4k-")
    assert rec.user == "sw-alice" and rec.account == "slipway-test" and rec.qos == "normal"
    assert rec.name == "bridge-it/cuda"


def test_exit_code_3_reaches_the_record(bridge, jobdir, submitted):
    """sacct --json (22.05) says return_code 0 for this job; the bridge reads ExitCode 3:0."""
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    job_id = bridge.submit(job(jobdir, "exit3", ["bash", "-c", "sleep 1; exit 3"]))
    submitted.append(job_id)
    rec = settled_record(bridge, job_id, since, named=True)[-1]
    assert rec.state == "FAILED" and rec.exit_code == 3 and rec.signal is None
    assert rec.name == "bridge-it/exit3" and rec.start.tzinfo == timezone.utc
    assert abs((rec.end - datetime.now(timezone.utc)).total_seconds()) < 60  # no zone shift


def test_over_limit_is_refused_by_us_and_by_slurm(bridge, slurm_env, jobdir):
    with pytest.raises(InvalidRequest, match="a4000 allows at most 4 GPUs per job; you asked for 5"):
        bridge.submit(job(jobdir, "five", ["true"], gpus=GpuRequest("a4000", 5)))
    # without site limits, Slurm itself refuses and its text reaches the user
    raw = CliBackend(env=slurm_env)
    with pytest.raises(SlurmRejected, match="(?i)gres|node configuration"):
        raw.submit(job(jobdir, "five", ["true"], gpus=GpuRequest("a4000", 5)))
    with pytest.raises(SlurmRejected, match="(?i)qos"):
        raw.submit(job(jobdir, "qos", ["true"], qos="no-such-qos"))


def test_cancel_ends_a_running_job_quickly(bridge, jobdir, submitted):
    job_id = bridge.submit(job(jobdir, "cancel", ["sleep", "300"]))
    submitted.append(job_id)
    wait_for(lambda: state(bridge, job_id) == "RUNNING", 30, "job running")
    started = time.monotonic()
    bridge.cancel(job_id)
    wait_for(lambda: state(bridge, job_id) not in ("RUNNING", "COMPLETING"), 15, "job ended",
             interval=0.1)
    took = time.monotonic() - started
    print(f"cancel took {took:.2f} s")
    assert took < 10
    bridge.cancel(job_id)  # cancelling again is a no-op, not an error


def test_cancel_ends_a_job_that_ignores_term_within_10_s(bridge, jobdir, submitted):
    """scancel: SIGTERM, KillWait (8 s), SIGKILL. A job that ignores TERM still ends in < 10 s."""
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    job_id = bridge.submit(job(jobdir, "deaf", ["bash", "-c", "trap '' TERM; echo trapped; sleep 300"]))
    submitted.append(job_id)
    wait_for(lambda: state(bridge, job_id) == "RUNNING", 30, "job running")
    wait_for(lambda: (jobdir / f"{job_id}.out").exists()
             and "trapped" in (jobdir / f"{job_id}.out").read_text(), 10, "trap set")
    started = time.monotonic()
    bridge.cancel(job_id)
    wait_for(lambda: state(bridge, job_id) not in ("RUNNING", "COMPLETING"), 15, "job ended",
             interval=0.1)
    took = time.monotonic() - started
    print(f"cancel of a TERM-ignoring job took {took:.2f} s")
    assert took < 10
    assert took > 5, "the job ended before KillWait: it did not ignore TERM, the test proves nothing"
    rec = settled_record(bridge, job_id, since)[-1]
    assert rec.state == "CANCELLED", rec


def test_requeue_of_a_running_job_runs_it_again(bridge, jobdir, submitted):
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    job_id = bridge.submit(job(jobdir, "requeue", ["sleep", "120"]))
    submitted.append(job_id)
    wait_for(lambda: state(bridge, job_id) == "RUNNING", 30, "job running")
    bridge.requeue(job_id)

    def again():
        rec = bridge.jobs(comment=None).get(job_id)
        return rec if rec and rec.restart_count == 1 and rec.state in ("PENDING", "RUNNING") else None
    rec = wait_for(again, 10, "job back in the queue with restart count 1", interval=0.2)
    assert rec.state in ("PENDING", "RUNNING")
    # requeued jobs wait cred_expire (5 s) before they may start again
    wait_for(lambda: state(bridge, job_id) == "RUNNING", 40, "requeued job running again")

    def two_attempts():
        recs = bridge.accounting(since, datetime.now(timezone.utc) + timedelta(minutes=1),
                                 job_ids=[job_id])
        return recs if len(recs) == 2 else None
    first, second = wait_for(two_attempts, 20, "both attempts in sacct", interval=0.5)
    assert (first.attempt, first.state) == (0, "REQUEUED") and first.end is not None
    assert (second.attempt, second.state) == (1, "RUNNING") and second.restart_count == 1


def test_injected_directives_do_nothing(bridge, jobdir, submitted):
    """An env value and a command word holding "\n#SBATCH ..." lines: real sbatch ignores them."""
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    evil = "\n#SBATCH --uid=0\n#SBATCH --gres=gpu:a4000:4\n#SBATCH --job-name=pwned\n"
    job_id = bridge.submit(job(jobdir, "inject", ["bash", "-c", 'id -un; echo "CVD=$CUDA_VISIBLE_DEVICES"; '
                                                  'printf "%s" "$EVIL"', evil], env={"EVIL": evil}))
    submitted.append(job_id)
    rec = settled_record(bridge, job_id, since, named=True)[-1]
    assert rec.state == "COMPLETED" and rec.user == "sw-alice" and rec.name == "bridge-it/inject"
    assert dict(rec.gpus) == {}
    out = (jobdir / f"{job_id}.out").read_text()
    assert out == "sw-alice\nCVD=\n" + evil


def test_gres_refusal_says_what_the_cluster_offers(slurm_env, jobdir):
    """Slurm says only "Requested node configuration is not available"; the bridge adds the rest
    (from sinfo, asked only because sbatch refused)."""
    raw = CliBackend(env=slurm_env)
    with pytest.raises(GresUnavailable) as info:
        raw.submit(job(jobdir, "h100", ["true"], gpus=GpuRequest("h100", 1)))
    assert "no node has h100 GPUs" in str(info.value)
    assert "a4000 (at most 4 GPUs per node), a6000 (at most 2 GPUs per node), shard (at most 16 shards" \
        in str(info.value)
    assert info.value.offered == {"a4000": 4, "a6000": 2, "shard": 16}  # 2 a6000 x 8 shards
    with pytest.raises(GresUnavailable, match="the most one node has is 2"):
        raw.submit(job(jobdir, "a6k3", ["true"], gpus=GpuRequest("a6000", 3)))


def test_hold_release(bridge, jobdir, submitted):
    job_id = bridge.submit(job(jobdir, "hold", ["true"], hold=True))
    submitted.append(job_id)
    rec = bridge.jobs(comment="slipway")[job_id]
    assert rec.state == "PENDING" and rec.held and rec.user == "sw-alice"
    bridge.release(job_id)
    wait_for(lambda: not bridge.jobs(comment=None).get(job_id) or
             not bridge.jobs(comment=None)[job_id].held, 10, "released")


def test_emergency_preempts_normal_and_victim_is_requeued(bridge, jobdir, submitted):
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    victim = bridge.submit(job(jobdir, "victim", ["sleep", "120"], gpus=GpuRequest("a6000", 2)))
    submitted.append(victim)
    wait_for(lambda: state(bridge, victim) == "RUNNING", 30, "victim running")
    urgent = bridge.submit(job(jobdir, "urgent", ["sleep", "1"], gpus=GpuRequest("a6000", 2),
                               qos="emergency", user="sw-bob"))
    submitted.append(urgent)
    wait_for(lambda: state(bridge, urgent) in ("RUNNING", "COMPLETING", "COMPLETED", "GONE"), 30, "urgent running")
    rec = wait_for(lambda: bridge.jobs(comment=None).get(victim), 10, "victim in queue")
    assert rec.state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "RUNNING") and rec.restart_count >= 1

    def preempted():
        recs = [r for r in bridge.accounting(since, datetime.now(timezone.utc) + timedelta(minutes=1),
                                             job_ids=[victim])]
        return recs if any(r.state in ("PREEMPTED", "REQUEUED") for r in recs) else None
    recs = wait_for(preempted, 20, "victim's preempted attempt in sacct -D", interval=0.5)
    first = recs[0]
    assert first.attempt == 0 and first.state in ("PREEMPTED", "REQUEUED")
    assert first.node == "a6k-1" and dict(first.gpus) == {"a6000": 2} and first.end is not None
    urgent_rec = settled_record(bridge, urgent, since, named=True)[-1]
    assert urgent_rec.qos == "emergency" and urgent_rec.user == "sw-bob"
    assert urgent_rec.start >= first.start


def test_nodes_report_gpus(bridge):
    nodes = {n.name: n for n in bridge.nodes()}
    assert set(nodes) >= {"a4k-1", "a4k-2", "a6k-1"}
    assert nodes["a4k-1"].gpus["a4000"].total == 4
    assert nodes["a6k-1"].gpus["a6000"].total == 2 and nodes["a6k-1"].gpus["shard"].total == 16
    assert all(n.gpus[t].free <= n.gpus[t].total for n in nodes.values() for t in n.gpus)


def test_sync_adds_then_removes_a_user(bridge):
    acct, user = "team-bridge-sync", "sw-bridge-sync"
    scope = dict(managed_accounts={acct}, qos_prefix="slipway-it")
    with_user = DesiredState(accounts=(AccountSpec(acct, fairshare=7, grp_tres_mins={"billing": 5000}),),
                             users=(UserSpec(user, acct, {acct: ("normal", "emergency")}),),
                             qos=(QosSpec("slipway-it", priority=5, preempt=("normal",)),), **scope)
    try:
        made = sync(bridge, with_user)
        assert [c.summary for c in made] == ["add QOS slipway-it", f"add account {acct} (fairshare 7)",
                                             f"add user {user} to {acct} (normal, emergency)"]
        cur = read_current(bridge)
        assert cur.assocs[(user, acct)].qos == ("emergency", "normal")
        assert cur.accounts[acct].grp_tres_mins == (("billing", 5000),)
        assert cur.default_accounts[user] == acct
        assert cur.qos["slipway-it"] == QosSpec("slipway-it", priority=5, preempt=("normal",))
        assert sync(bridge, with_user) == []          # idempotent

        no_user = DesiredState(accounts=(AccountSpec(acct, fairshare=7),), **scope)
        assert [c.summary for c in sync(bridge, no_user)] == [
            f"update account {acct} (fairshare 7, GrpTRESMins none)", f"remove user {user}",
            "remove QOS slipway-it"]
        cur = read_current(bridge)
        assert (user, acct) not in cur.assocs and user not in cur.default_accounts
        assert ("sw-alice", "slipway-test") in cur.assocs  # unmanaged things untouched
        assert sync(bridge, no_user) == []
    finally:
        sync(bridge, DesiredState(**scope))            # removes the account again
    cur = read_current(bridge)
    assert acct not in cur.accounts and "slipway-it" not in cur.qos and "emergency" in cur.qos


def test_two_slipways_on_one_slurm_database_do_not_undo_each_other(bridge):
    """Each Slipway owns its account prefix; with a shared user, both converge and then stay put.

    Before prefixes were per instance, two Slipways sharing a slurmdbd removed each other's
    accounts and flipped users' default accounts on every convergence, and slurmdbd 22.05
    crashed under that churn ("Can't find parent id ..." then SIGSEGV).
    """
    def state(prefix):
        acct = f"{prefix}lab"
        return DesiredState(accounts=(AccountSpec(acct, fairshare=10),),
                            users=(UserSpec("sw-carol", acct, {acct: ("normal",)}),),
                            account_prefix=prefix)

    a, b = state("swa-"), state("swb-")
    try:
        assert sync(bridge, a) and sync(bridge, b)
        for _ in range(2):
            assert sync(bridge, a) == [] and sync(bridge, b) == []
        cur = read_current(bridge)
        assert {("sw-carol", "swa-lab"), ("sw-carol", "swb-lab"), ("sw-carol", "slipway-test")} <= set(cur.assocs)
    finally:
        sync(bridge, DesiredState(account_prefix="swa-"))
        sync(bridge, DesiredState(account_prefix="swb-"))
    cur = read_current(bridge)
    assert not any(acct.startswith(("swa-", "swb-")) for acct in cur.accounts)
    assert ("sw-carol", "slipway-test") in cur.assocs
