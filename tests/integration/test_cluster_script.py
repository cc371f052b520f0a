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


# ------------------------------------------------------- one daemon at a time: kill / start

def _script(cluster_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLUSTER_SCRIPT), *args, "--dir", str(cluster_dir)],
                          capture_output=True, text=True, timeout=120)


def _state_of(text: str, daemon: str) -> str:
    return next(l for l in text.splitlines() if l.startswith(daemon + " ")).split()[1]


def test_help_documents_every_command_and_daemon():
    out = subprocess.run([str(CLUSTER_SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for word in ("up ", "--ha", "down", "kill DAEMON", "start DAEMON", "slurmctld-backup",
                 "slurmd:NODE", "SlurmctldTimeout", "unshare --uts --mount"):
        assert word in out.stdout, word


def test_kill_and_start_one_daemon_by_name(slurm_cluster):
    """`kill slurmd:NODE` SIGKILLs that slurmd only (by its PID); `start` brings it back and
    waits until the controller hears from it; the same for slurmdbd."""
    before = _pids(slurm_cluster)
    out = _script(slurm_cluster.dir, "kill", "slurmd:a6k-1")
    assert out.returncode == 0, out.stderr
    assert f"slurmd-a6k-1 (pid {before['slurmd-a6k-1']}) killed with SIGKILL" in out.stderr
    assert not Path(f"/proc/{before['slurmd-a6k-1']}").exists()
    text = subprocess.run([str(CLUSTER_SCRIPT), "status", "--dir", str(slurm_cluster.dir)],
                          capture_output=True, text=True, timeout=30).stdout
    assert _state_of(text, "slurmd-a6k-1") == "down"
    assert all(_state_of(text, d) == "up" for d in DAEMONS if d != "slurmd-a6k-1"), text
    out = _script(slurm_cluster.dir, "start", "slurmd-a6k-1")
    assert out.returncode == 0, out.stderr
    after = _pids(slurm_cluster)
    assert after["slurmd-a6k-1"] != before["slurmd-a6k-1"]
    assert {d: after[d] for d in DAEMONS if d != "slurmd-a6k-1"} == \
        {d: before[d] for d in DAEMONS if d != "slurmd-a6k-1"}  # nothing else was touched
    state = slurm_cluster.run("sinfo", "-h", "-n", "a6k-1", "-o", "%T").stdout.split()[0]
    assert state in {"idle", "mixed", "allocated"}, state

    assert _script(slurm_cluster.dir, "kill", "slurmdbd", "--signal", "TERM").returncode == 0
    assert slurm_cluster.run("sacctmgr", "-n", "show", "cluster", check=False, timeout=60).returncode != 0
    out = _script(slurm_cluster.dir, "start", "slurmdbd")
    assert out.returncode == 0, out.stderr
    assert slurm_cluster.run("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster").stdout.split() \
        == ["slipway"]
    assert _script(slurm_cluster.dir, "start", "slurmdbd").stderr.strip().endswith(
        f"slurmdbd already running (pid {_pids(slurm_cluster)['slurmdbd']})")


@pytest.mark.parametrize("args, message", [
    (("kill",), "usage: "),
    (("kill", "slurmctl"), "unknown daemon 'slurmctl': one of munged, mariadb"),
    (("start", "slurmd:zz-9"), "no node zz-9 (nodes: a4k-1 a4k-2 a6k-1)"),
    (("kill", "slurmd-a4k-1", "--signal", "NOPE"), "unknown signal 'NOPE'"),
    (("kill", "slurmctld-backup"), "this cluster has no backup controller (start it with: up --ha)"),
    (("up", "--ha"), "this cluster runs with one controller: stop it first"),
])
def test_bad_requests_are_refused_with_a_clear_message(slurm_cluster, args, message):
    before = _pids(slurm_cluster)
    out = _script(slurm_cluster.dir, *args)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
    assert _pids(slurm_cluster) == before  # nothing was stopped or started


# -------------------------------------------------------- a backup controller (up --ha)

@pytest.fixture(scope="module")
def ha_cluster():
    from tests.support.ha_cluster import ha_destroy, ha_up
    try:
        yield ha_up()
    finally:
        ha_destroy()


def test_ha_runs_two_controllers_each_under_its_own_name_and_pid_file(ha_cluster):
    from tests.support.ha_cluster import in_control, ping
    text = subprocess.run([str(CLUSTER_SCRIPT), "status", "--dir", str(ha_cluster.dir)],
                          capture_output=True, text=True, timeout=30).stdout
    assert all(_state_of(text, d) == "up" for d in [*DAEMONS, "slurmctld-backup"]), text
    assert ping(ha_cluster) == {"primary": "UP", "backup": "UP"}
    assert in_control(ha_cluster) == "primary"
    pids = _pids(ha_cluster)
    for role, name, host in (("primary", "slurmctld", "ctld-primary"),
                             ("backup", "slurmctld-backup", "ctld-backup")):
        # Slurm's own pid file (SlurmctldPidFile, bind-mounted per controller) names the same PID
        own = (ha_cluster.dir / "run" / f"ctld-{role}" / "slurmctld.pid").read_text().split()[0]
        assert int(own) == pids[name], (role, own, pids[name])
        uts = subprocess.run(["nsenter", "-u", "-t", str(pids[name]), "hostname"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        assert uts == host, (name, uts)
    assert os.uname().nodename not in {"ctld-primary", "ctld-backup"}  # the host keeps its name
    assert "ctld-backup" not in Path("/etc/hosts").read_text()  # ... and its /etc/hosts
    conf = (ha_cluster.dir / "etc" / "slurm.conf").read_text()
    assert "SlurmctldHost=ctld-primary(127.0.0.1)\nSlurmctldHost=ctld-backup(127.0.0.2)\n" in conf


def test_killing_the_primary_hands_over_to_the_backup_and_it_takes_control_back(ha_cluster):
    """A job running through both hand-overs ends normally; a job submitted to the backup while
    the primary is dead runs too."""
    from tests.support.ha_cluster import in_control, ping, script, started_at, wait_for, wait_saved
    tmp_path = Path(tempfile.mkdtemp(prefix="cluster-ha-", dir="/tmp"))
    tmp_path.chmod(0o777)
    try:
        _failover_round_trip(ha_cluster, tmp_path, in_control, ping, wait_saved, script, started_at,
                             wait_for)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _failover_round_trip(ha_cluster, tmp_path, in_control, ping, wait_saved, script, started_at,
                             wait_for):
    sbatch = ["sbatch", "--parsable", "--uid=sw-alice", "--gid=slipway-users", "-A", "slipway-test",
              f"--chdir={tmp_path}", f"--output={tmp_path}/%j.out"]
    long_job = ha_cluster.run(*sbatch, "--wrap", "for i in $(seq 25); do echo $i; sleep 1; done").stdout.strip()
    wait_for("the job to run", lambda: ha_cluster.run("squeue", "-h", "-j", long_job, "-o", "%T")
             .stdout.strip() == "RUNNING", timeout=30)
    running_at = started_at(ha_cluster, long_job)
    primary = _pids(ha_cluster)["slurmctld"]
    # slurmctld writes its state (what the backup reads) at most every 5 s: a controller killed
    # sooner after a submission loses that job (docs/FAULTS.md §3). Wait for the write.
    wait_saved(ha_cluster, running_at, long_job, "the job's state to be saved")

    script("kill", "slurmctld", state_dir=ha_cluster.dir)
    assert not Path(f"/proc/{primary}").exists()
    # sbatch waits while the backup is still standing by (up to 1.5 x SlurmctldTimeout), then the
    # backup, in control, accepts it
    during = ha_cluster.run(*sbatch, "--wrap", "echo during", timeout=60).stdout.strip()
    assert in_control(ha_cluster) == "backup"
    assert ping(ha_cluster) == {"primary": "DOWN", "backup": "UP"}
    assert ha_cluster.run("squeue", "-h", "-j", long_job, "-o", "%T").stdout.strip() == "RUNNING"

    # asked back within seconds of its takeover, a 22.05 backup can hang handing control back:
    # `start` then restarts it by its PID (docs/FAULTS.md §3)
    out = script("start", "slurmctld", state_dir=ha_cluster.dir)
    assert "slurmctld started" in out.stderr
    assert in_control(ha_cluster) == "primary"
    assert ping(ha_cluster) == {"primary": "UP", "backup": "UP"}
    backup_log = (ha_cluster.dir / "log" / "slurmctld-backup.log").read_text()
    assert "REQUEST_CONTROL" in backup_log  # the primary asked for control back

    def ended(job: str) -> str:
        out = ha_cluster.run("sacct", "-n", "-X", "-P", "-j", job, "-S", "now-1hour", "-o", "State").stdout
        state = out.strip()
        return state if state and state not in {"RUNNING", "PENDING"} else ""
    assert wait_for("the jobs to end", lambda: ended(long_job) and ended(during), timeout=60)
    assert ended(long_job) == "COMPLETED" and ended(during) == "COMPLETED"
    assert (tmp_path / f"{long_job}.out").read_text().split() == [str(i) for i in range(1, 26)]
    assert (tmp_path / f"{during}.out").read_text() == "during\n"


def test_down_stops_both_controllers_by_their_pids(ha_cluster):
    from tests.support.ha_cluster import script
    pids = _pids(ha_cluster)
    assert {"slurmctld", "slurmctld-backup"} <= set(pids)
    script("down", state_dir=ha_cluster.dir)
    for name in [*DAEMONS, "slurmctld-backup"]:
        assert not Path(f"/proc/{pids[name]}").exists(), f"{name} (pid {pids[name]}) still runs after down"
    assert not [p for p in (ha_cluster.dir / "run").glob("*.pid") if not p.stem.endswith(".ignored")]
