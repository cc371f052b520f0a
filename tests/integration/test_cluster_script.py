"""The local cluster script: every daemon up (inside its state dir), nodes with their GPUs,
re-running `up` is harmless, `down` ends job processes only, stale pid files are not trusted."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import CLUSTER_SCRIPT

pytestmark = pytest.mark.cluster

DAEMONS = ["munged", "mariadb", "slurmdbd", "slurmctld", "slurmd-a4k-1", "slurmd-a4k-2", "slurmd-a6k-1"]


def _status(cluster) -> str:
    out = subprocess.run([str(CLUSTER_SCRIPT), "status", "--dir", str(cluster.dir)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_status_reports_every_daemon_up(slurm_cluster):
    text = _status(slurm_cluster)
    for daemon in DAEMONS:
        line = next(l for l in text.splitlines() if l.startswith(daemon + " "))
        assert " up " in line, line


def test_nodes_have_their_gpus_and_are_usable(slurm_cluster):
    out = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %T %G").stdout
    nodes = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert set(nodes) == {"a4k-1", "a4k-2", "a6k-1"}
    assert "gpu:a4000:4" in nodes["a4k-1"][1]
    assert "gpu:a4000:4" in nodes["a4k-2"][1]
    assert "gpu:a6000:2" in nodes["a6k-1"][1] and "shard" in nodes["a6k-1"][1]
    assert all(state[0] in {"idle", "mixed", "allocated"} for state in nodes.values()), nodes


def test_accounting_has_qos_and_test_users(slurm_cluster):
    qos = slurm_cluster.run("sacctmgr", "-n", "-P", "show", "qos", "format=name,preempt").stdout
    rows = dict(line.split("|") for line in qos.splitlines())
    assert rows["emergency"] == "normal"  # emergency preempts normal
    assoc = slurm_cluster.run("sacctmgr", "-n", "-P", "show", "assoc", "where", "account=slipway-test",
                              "format=user").stdout.split()
    assert {"sw-alice", "sw-bob", "sw-carol"} <= set(assoc)


def test_up_again_is_quick_and_harmless(slurm_cluster):
    before = _status(slurm_cluster)
    out = subprocess.run([str(CLUSTER_SCRIPT), "up", "--dir", str(slurm_cluster.dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "already up" in out.stderr
    assert _status(slurm_cluster) == before  # same PIDs: nothing was restarted


def _pids(cluster) -> dict[str, int]:
    return {f.stem: int(f.read_text()) for f in (cluster.dir / "run").glob("*.pid")
            if f.read_text().strip().isdigit() and not f.stem.endswith(".ignored")}


def test_daemons_run_inside_the_state_dir(slurm_cluster):
    """A daemon's core dump lands in its cwd: that must be the state dir, never the repo."""
    pids = _pids(slurm_cluster)
    assert set(DAEMONS) <= set(pids), pids
    state_dir = slurm_cluster.dir.resolve()
    for name in DAEMONS:
        cwd = Path(os.readlink(f"/proc/{pids[name]}/cwd"))
        assert cwd.is_relative_to(state_dir), f"{name} (pid {pids[name]}) runs in {cwd}"
        # the pid file names the daemon itself, not a wrapper (setsid, env, a subshell)
        argv0 = Path(f"/proc/{pids[name]}/cmdline").read_bytes().split(b"\0")[0].decode()
        expected = {"mariadb": "mariadbd"}.get(name, name.split("-")[0])
        assert os.path.basename(argv0) == expected, (name, argv0)


def _sleeper(env: dict[str, str], argv0: str = "sleep") -> subprocess.Popen:
    """A stand-in process with exactly ``env`` (plus PATH) in its environment."""
    return subprocess.Popen(["bash", "-c", f'exec -a "{argv0}" sleep 300'],
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env})


def _leftovers(state_dir: Path) -> set[int]:
    out = subprocess.run([str(CLUSTER_SCRIPT), "leftovers", "--dir", str(state_dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {int(line) for line in out.stdout.split()}


def _wait_exit(proc: subprocess.Popen, timeout: float = 10) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.fixture
def fake_state_dir():
    """A cluster state dir with no daemon running: ``down`` there only looks for leftovers."""
    path = Path(tempfile.mkdtemp(prefix="cluster-fake-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_down_ends_job_processes_only(fake_state_dir):
    """`down` SIGKILLs job processes of its cluster (our SLURM_CONF and a SLURM_JOB_ID, or our
    slurmstepd), never a process that merely has our SLURM_CONF (a Slipway server, a shell
    after `source env.sh`) nor a job of another cluster."""
    conf = str(fake_state_dir / "etc" / "slurm.conf")
    procs = {
        "server": _sleeper({"SLURM_CONF": conf}),
        "job": _sleeper({"SLURM_CONF": conf, "SLURM_JOB_ID": "17"}),
        "stepd": _sleeper({"SLURM_CONF": conf}, argv0="slurmstepd: [17.batch]"),
        "other cluster's job": _sleeper({"SLURM_CONF": "/elsewhere/slurm.conf", "SLURM_JOB_ID": "17"}),
        "no slurm": _sleeper({}),
    }
    try:
        time.sleep(0.3)  # let bash exec the sleeps (environ and argv0 are then final)
        assert _leftovers(fake_state_dir) == {procs["job"].pid, procs["stepd"].pid}
        out = subprocess.run([str(CLUSTER_SCRIPT), "down", "--dir", str(fake_state_dir)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert _wait_exit(procs["job"]) == -signal.SIGKILL
        assert _wait_exit(procs["stepd"]) == -signal.SIGKILL
        for name in ("server", "other cluster's job", "no slurm"):
            assert procs[name].poll() is None, f"{name} was killed by down"
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


def test_a_reused_pid_is_neither_up_nor_killed(fake_state_dir):
    """A pid file left by a dead daemon may name a PID the kernel gave to another process."""
    conf = str(fake_state_dir / "etc" / "slurm.conf")
    (fake_state_dir / "run").mkdir()
    # same SLURM_CONF, but not slurmctld / not slurmd -N a4k-1: only cmdline tells them apart
    impostors = {"slurmctld": _sleeper({"SLURM_CONF": conf}),
                 "slurmd-a4k-1": _sleeper({"SLURM_CONF": conf}, argv0="slurmd"),
                 "munged": _sleeper({"SLURM_CONF": "/elsewhere/slurm.conf"}, argv0="munged")}
    try:
        time.sleep(0.3)
        for name, proc in impostors.items():
            (fake_state_dir / "run" / f"{name}.pid").write_text(f"{proc.pid}\n")
        out = subprocess.run([str(CLUSTER_SCRIPT), "status", "--dir", str(fake_state_dir)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 3, out.stdout + out.stderr  # not up
        for name in impostors:
            line = next(l for l in out.stdout.splitlines() if l.startswith(name + " "))
            assert line.split()[1] == "down", line
        out = subprocess.run([str(CLUSTER_SCRIPT), "down", "--dir", str(fake_state_dir)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        for name, proc in impostors.items():
            assert proc.poll() is None, f"down killed the process holding {name}'s old PID"
            assert not (fake_state_dir / "run" / f"{name}.pid").exists()
        assert "is no longer slurmctld of this cluster" in out.stderr
    finally:
        for proc in impostors.values():
            proc.kill()
            proc.wait()


def test_leftovers_of_the_live_cluster_are_its_job_processes(slurm_cluster):
    """On the live cluster: a running job's processes are listed, a client shell is not."""
    jobdir = Path(tempfile.mkdtemp(prefix="cluster-it-", dir="/tmp"))
    jobdir.chmod(0o777)
    shell = _sleeper({"SLURM_CONF": slurm_cluster.slurm_conf})
    job_id = slurm_cluster.run("sbatch", "--parsable", "--uid=sw-alice", "--gid=slipway-users",
                               "-A", "slipway-test", f"--chdir={jobdir}", f"--output={jobdir}/%j.out",
                               "--comment=cluster-it", "--wrap", "sleep 120").stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while slurm_cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip() != "RUNNING":
            assert time.monotonic() < deadline, "job did not start"
            time.sleep(0.2)
        time.sleep(0.5)
        found = _leftovers(slurm_cluster.dir)
        argv = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                for pid in found if Path(f"/proc/{pid}").exists()}
        assert any("sleep 120" in a for a in argv.values()), argv
        assert any(a.startswith("slurmstepd") for a in argv.values()), argv
        assert shell.pid not in found
        assert not set(_pids(slurm_cluster).values()) & found  # no daemon
        assert os.getpid() not in found
    finally:
        slurm_cluster.run("scancel", job_id, check=False)
        shell.kill()
        shell.wait()
        shutil.rmtree(jobdir, ignore_errors=True)
