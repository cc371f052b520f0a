"""The node program's multi-node jobs (docs/SHARING.md, "Multi-node jobs"): the runner checks out,
starts one rank per node through srun, and commits once; ``git_gateway.node.rank`` gives each
container RANK, WORLD_SIZE, MASTER_ADDR/PORT, ...

No Slurm here: a fake ``srun`` (spec.srun) starts the given command once per "node" on this host
with SLURM_PROCID/SLURM_NTASKS/SLURM_LAUNCH_NODE_IPADDR set as Slurm sets them, each rank in its
own session (like ranks on other nodes: only Slurm reaches them), and treats signals the way
Slurm 22.05's srun does (checked on the local cluster): USR1/USR2 forwarded, TERM/HUP turned into
SIGKILL for every rank ("forcing job termination"), INT kept; with ``--kill-on-bad-exit=1`` a
rank that exits non-zero makes it end the step: SIGCONT+SIGTERM to the others, SIGKILL KillWait
later (measured on the local cluster: a rank whose TERM handler took 3 s wrote its file with
KillWait=8; ``FAKE_SRUN_KILLWAIT`` here, 8 s by default). A fake ``scancel --signal=SIG JOB``
beside it signals every rank, as Slurm does for the job's steps. The ranks rendezvous over real
TCP on MASTER_ADDR:MASTER_PORT.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from git_gateway import repos
from git_gateway.node import rank
from git_gateway.node.container_env import launch_env
from git_gateway.node.runner import Runner
from git_gateway.node.spec import RANK_ENV, RunnerSpec, SpecError
from tests.support.git_server import Gateway, client_env, git, serve
from tests.unit.test_node_sweep_tasks import (
    BASE,
    Events,
    job_pushes,
    push_repo,
    start_runner,
    trailer,
    write_spec,
)

pytestmark = pytest.mark.timeout(120)
MULTI = dict(BASE, nodes=2, master_port=29500)

FAKE_SRUN = r'''#!{python}
"""srun on one host: runs the command once per task, each in its own session, and handles
signals as Slurm 22.05's srun does."""
import json, os, signal, subprocess, sys, threading, time
args = sys.argv[1:]
opts = []
while args and args[0].startswith("--"):
    opts.append(args.pop(0))
with open(os.environ["FAKE_SRUN_LOG"], "a") as f:
    f.write(json.dumps({{"opts": opts, "cmd": args, "cwd": os.getcwd(),
                        "pythonpath": os.environ.get("PYTHONPATH", "")}}) + "\n")
n = int(dict(o[2:].split("=", 1) for o in opts)["ntasks"])
kids = []
for i in range(n):
    env = dict(os.environ, SLURM_PROCID=str(i), SLURM_NODEID=str(i), SLURM_LOCALID="0",
               SLURM_NTASKS=str(n), SLURM_STEP_NUM_TASKS=str(n),
               SLURM_LAUNCH_NODE_IPADDR="127.0.0.1", SLURM_STEP_NODELIST="node[1-%d]" % n)
    kids.append(subprocess.Popen(args, env=env, start_new_session=True))
with open(os.environ["FAKE_SRUN_LOG"] + ".pids", "w") as f:
    f.write(" ".join(str(k.pid) for k in kids))
def forward(signum, _frame):
    if signum == signal.SIGINT:
        print("srun: interrupt (one more within 1 sec to abort)", file=sys.stderr)
        return
    if signum in (signal.SIGTERM, signal.SIGHUP):
        print("srun: forcing job termination", file=sys.stderr)
        signum = signal.SIGKILL
    for k in kids:
        if k.returncode is None:
            try:
                os.killpg(k.pid, signum)
            except ProcessLookupError:
                pass
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
    signal.signal(s, forward)
def end_step():
    print("srun: launch/slurm: _step_signal: Terminating StepId=9001.0", file=sys.stderr)
    for signum in (signal.SIGCONT, signal.SIGTERM):
        signal_all(signum)
    deadline = time.monotonic() + float(os.environ.get("FAKE_SRUN_KILLWAIT", "8"))
    while time.monotonic() < deadline and any(k.poll() is None for k in kids):
        time.sleep(0.05)
    signal_all(signal.SIGKILL)
def signal_all(signum):
    for k in kids:
        if k.poll() is None:
            try:
                os.killpg(k.pid, signum)
            except ProcessLookupError:
                pass
codes, ending = [], None
for k in kids:
    rc = k.wait()
    codes.append(rc if rc >= 0 else 128 - rc)
    if rc != 0 and "--kill-on-bad-exit=1" in opts and ending is None:
        ending = threading.Thread(target=end_step, daemon=True)
        ending.start()
sys.exit(max(codes))
'''

FAKE_SCANCEL = r'''#!{python}
"""scancel --signal=SIG JOB: the signal to every step of the job but the batch step (the ranks)."""
import os, signal, sys
sig = signal.Signals["SIG" + sys.argv[1].split("=", 1)[1]]
assert sys.argv[2] == os.environ["SLURM_JOB_ID"], sys.argv
with open(os.environ["FAKE_SRUN_LOG"] + ".scancel", "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
for pid in open(os.environ["FAKE_SRUN_LOG"] + ".pids").read().split():
    try:
        os.killpg(int(pid), sig)
    except ProcessLookupError:
        pass
'''

RANK_PROGRAM = r'''import os, socket, sys, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
keys = ("WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "NNODES", "GPUS_PER_NODE", "PORT")
with open(f"rank-{rank}.txt", "w") as f:
    f.write(f"{addr}:{port} " + " ".join(f"{k}={os.environ.get(k)}" for k in keys) + "\n")
if rank == 0:
    srv = socket.create_server((addr, port))
    srv.settimeout(30)
    got = []
    for _ in range(world - 1):
        conn, _peer = srv.accept()
        got.append(conn.recv(100).decode())
        conn.sendall(b"welcome")
        conn.close()
    with open("rendezvous.txt", "w") as f:
        f.write("\n".join(sorted(got)) + "\n")
else:
    end = time.monotonic() + 30
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)
    conn.sendall(f"hello from rank {rank}".encode())
    with open(f"rank-{rank}-got.txt", "w") as f:
        f.write(conn.recv(100).decode() + "\n")
if os.environ.get("MODE") in ("wait", "ignore"):
    import signal
    def stop(signum, _frame):
        with open(f"term-{rank}.txt", "w") as f:
            f.write(f"SIG{signal.Signals(signum).name[3:]}\n")
        sys.exit(143)
    signal.signal(signal.SIGTERM, stop if os.environ["MODE"] == "wait" else signal.SIG_IGN)
    open(f"running-{rank}", "w").close()
    while True:
        time.sleep(0.1)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ units
def test_spec_fields_are_checked():
    s = RunnerSpec.from_dict(dict(MULTI, srun="/opt/slurm/bin/srun"))
    assert (s.nodes, s.master_port, s.srun) == (2, 29500, "/opt/slurm/bin/srun")
    assert RunnerSpec.from_dict(json.loads(s.to_json())) == s
    for over, msg in (({"nodes": 0}, "nodes must be between 1 and 64"),
                      ({"nodes": 65}, "nodes must be between 1 and 64"),
                      ({"nodes": 2.0}, "nodes must be a whole number"),
                      ({"master_port": 0}, "master_port must be between 1 and 65535"),
                      ({"master_port": 70000}, "master_port must be between 1 and 65535"),
                      ({"srun": ""}, "srun must be a program"), ({"srun": 1}, "srun must be")):
        with pytest.raises(SpecError, match=msg):
            RunnerSpec.from_dict(dict(MULTI, **over))


def test_srun_command_and_environment():
    s = RunnerSpec.from_dict(dict(MULTI, nodes=4))
    assert rank.srun_command(s, "/jobs/42/spec.json", python="/usr/bin/python3") == [
        "srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
        "/usr/bin/python3", "-m", "git_gateway.node.rank", "/jobs/42/spec.json"]
    env = rank.srun_env({"SLURM_JOB_ID": "9", "PYTHONPATH": "/other"}, "12345")
    assert env["SLURM_JOB_ID"] == "9" and env["PYTHONSAFEPATH"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep) == [rank.PACKAGE_ROOT, "/other"]
    assert (Path(rank.PACKAGE_ROOT) / "git_gateway" / "node" / "rank.py").exists()
    assert env[rank.RUNNER_PORT_ENV] == "12345"
    assert rank.RUNNER_PORT_ENV not in rank.srun_env({rank.RUNNER_PORT_ENV: "1"}, None)


def test_first_host_of_a_slurm_host_list():
    assert rank.first_host("a4k-[1-3,5],b1") == "a4k-1"
    assert rank.first_host("b1,a4k-[1-3]") == "b1"
    assert rank.first_host("n[08-09]-ib[2-3]") == "n08-ib2"
    assert rank.first_host("solo") == "solo"
    assert rank.first_host("") is None and rank.first_host(None) is None


def test_rank_environment(capsys):
    s = RunnerSpec.from_dict(dict(MULTI, gpu_count=4))
    env = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.7",
           "CUDA_VISIBLE_DEVICES": "0,1,2"}
    assert rank.rank_env(s, env) == {
        "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29500", "WORLD_SIZE": "2", "RANK": "1",
        "LOCAL_RANK": "0", "NODE_RANK": "1", "NNODES": "2", "GPUS_PER_NODE": "3"}
    assert set(rank.rank_env(s, env)) == set(RANK_ENV)
    # no CUDA_VISIBLE_DEVICES: the spec's per-node count; no launch address: the first host
    fallback = rank.rank_env(s, {"SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "localhost,b[1-2]"})
    assert fallback["GPUS_PER_NODE"] == "4" and fallback["MASTER_ADDR"] == "127.0.0.1"
    assert rank.rank_env(s, dict(env, SLURM_NTASKS="3"))["WORLD_SIZE"] == "2"
    assert "SLURM_NTASKS is 3 but the job has 2 nodes" in capsys.readouterr().err
    for bad, msg in (({}, "SLURM_PROCID is not set"), ({"SLURM_PROCID": "2"}, "outside the job"),
                     ({"SLURM_PROCID": "0"}, "no address for rank 0")):
        with pytest.raises(rank.RankError, match=msg):
            rank.rank_env(s, bad)


def test_apptainer_gets_the_rank_variables_through_cleanenv():
    s = RunnerSpec.from_dict(dict(MULTI, container_argv=["apptainer", "exec", "i.sif", "x"]))
    ranks = rank.rank_env(s, {"SLURM_PROCID": "1", "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.7"})
    env = launch_env(s, {"PATH": "/bin", "USER": "u"}, extra=ranks)
    for name in RANK_ENV:
        assert env[f"APPTAINERENV_{name}"] == env[name] == ranks[name]


def test_rank_refuses_outside_srun_or_without_the_checkout(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dict(MULTI, workdir=str(tmp_path / "work"))))
    spec.chmod(0o600)
    assert rank.main([str(spec)], environ={}) == 2
    assert "SLURM_PROCID is not set: a rank runs under srun" in capsys.readouterr().err
    env = {"SLURM_PROCID": "1", "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1"}
    assert rank.main([str(spec)], environ=env) == 2
    assert "is not on this node (the job directory must be on a filesystem every node sees)" \
        in capsys.readouterr().err


@pytest.mark.parametrize("over, spec_path, msg", [
    ({}, None, "job 42 cannot start: a job on 2 nodes needs its spec file (for srun)"),
    ({"master_port": None}, "/jobs/42/spec.json",
     "job 42 cannot start: a job on 2 nodes needs master_port (the ranks' rendezvous port)")])
def test_a_multi_node_job_that_cannot_start_is_reported(tmp_path, monkeypatch, over, spec_path,
                                                        msg):
    posted = []
    r = Runner(RunnerSpec.from_dict(dict(MULTI, workdir=str(tmp_path / "w"), **over)),
               post=lambda url, token, event: posted.append(event), spec_path=spec_path)
    monkeypatch.setattr(r, "checkout", lambda: None)
    monkeypatch.setattr(Runner, "install_signal_handlers", lambda self: None)
    assert r.run() == 1
    assert [e["event"] for e in posted] == ["finishing", "results"]
    assert posted[-1]["message"] == f"slipway: {msg}"
    with pytest.raises(rank.RankError, match="no master_port"):
        rank.rank_env(RunnerSpec.from_dict(dict(MULTI, master_port=None)), {"SLURM_PROCID": "0"})


# ----------------------------------------------------------------- end to end, with a fake srun
@pytest.fixture
def multinode(tmp_path):
    events = Events()
    with serve(events) as ev_base, Gateway(tmp_path / "srv") as gw:
        gw.create()
        env = client_env(tmp_path / "home")
        (tmp_path / "bin").mkdir()
        for name, text in (("srun", FAKE_SRUN), ("scancel", FAKE_SCANCEL)):
            (tmp_path / "bin" / name).write_text(text.format(python=sys.executable))
            (tmp_path / "bin" / name).chmod(0o755)
        sha = push_repo(gw, env, tmp_path, {"rank_prog.py": RANK_PROGRAM})
        port = free_port()

        def spec(**job_env):
            return write_spec(tmp_path / "jobs" / "42" / "spec.json", gw, ev_base, sha, nodes=2,
                              master_port=port, srun=str(tmp_path / "bin" / "srun"),
                              gpu_type="a4000", gpu_count=2, gpu_rate="0.50",
                              container_argv=[sys.executable, "rank_prog.py"],
                              env={"PORT": str(free_port()), **job_env})
        yield gw, env, events, sha, port, spec


def runner_env(tmp_path) -> dict:
    return {"FAKE_SRUN_LOG": str(tmp_path / "srun.log"), "CUDA_VISIBLE_DEVICES": "0,1",
            "SLURMD_NODENAME": "node1"}


def test_two_ranks_rendezvous_and_the_results_are_committed_once(multinode, tmp_path):
    gw, env, events, sha, port, make_spec = multinode
    spec = make_spec()
    log = tmp_path / "slurm.out"
    p = start_runner(str(spec), log, **runner_env(tmp_path))
    assert p.wait(timeout=60) == 0, log.read_text()
    calls = [json.loads(line) for line in (tmp_path / "srun.log").read_text().splitlines()]
    assert len(calls) == 1
    assert calls[0]["opts"] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                                "--kill-on-bad-exit=1"]
    assert calls[0]["cmd"] == [sys.executable, "-m", "git_gateway.node.rank", str(spec)]
    assert calls[0]["cwd"] == str(spec.parent / "work")
    assert events.names() == ["started", "finishing", "results"]
    started, res = events.wait_for("started"), events.wait_for("results")
    assert res["branch_updated"] is True and res["results_ref"] == "refs/heads/results/exp-1/42"
    assert job_pushes(gw) == ["refs/heads/results/exp-1/42", "refs/heads/exp-1"]   # once each
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", "exp-1", gw.url(user="alice"), str(c), env=env)
    assert (c / "rendezvous.txt").read_text() == "hello from rank 1\n"
    assert (c / "rank-1-got.txt").read_text() == "welcome\n"
    for r in (0, 1):
        assert (c / f"rank-{r}.txt").read_text().startswith(
            f"127.0.0.1:{port} WORLD_SIZE=2 NODE_RANK={r} LOCAL_RANK=0 NNODES=2 GPUS_PER_NODE=2 ")
    # rank 0 runs where the runner settled PORT; the runner's commit is the only one
    assert (c / "rank-0.txt").read_text().split()[-1] == f"PORT={started['port']}"
    assert git(c, "rev-list", "--count", f"{sha}..HEAD", env=env).stdout.strip() == "1"
    assert git(c, "log", "-1", "--format=%s", env=env).stdout.strip() == \
        "slipway: results of job 42 (exit 0)"
    assert trailer(c, env, "Slipway-Nodes") == "2"
    assert trailer(c, env, "Slipway-GPUs") == "a4000 x4"     # 2 per node, on 2 nodes
    assert "on 2 nodes (srun)" in log.read_text()


def test_term_reaches_every_rank_and_the_results_still_get_committed(multinode, tmp_path):
    gw, env, events, sha, port, make_spec = multinode
    spec = make_spec(MODE="wait")
    log = tmp_path / "slurm.out"
    p = start_runner(str(spec), log, **runner_env(tmp_path))
    work = spec.parent / "work"
    end = time.monotonic() + 30
    while not all((work / f"running-{r}").exists() for r in (0, 1)):
        assert time.monotonic() < end and p.poll() is None, log.read_text()
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)          # scancel: the batch step's runner gets TERM
    assert p.wait(timeout=30) == 143, log.read_text()
    fin, res = events.wait_for("finishing"), events.wait_for("results")
    assert fin == {"event": "finishing", "exit_code": 143, "signal": "TERM", "stopped": True}
    assert res["branch_updated"] is True, res
    assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/exp-1") == res["sha"]
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", "exp-1", gw.url(user="alice"), str(c), env=env)
    for r in (0, 1):
        assert (c / f"term-{r}.txt").read_text() == "SIGTERM\n"     # srun forwarded it to both
    assert (c / "rendezvous.txt").read_text() == "hello from rank 1\n"
    assert "signal TERM" in git(c, "log", "-1", "--format=%s", env=env).stdout
    # through Slurm (scancel), not srun: srun would have SIGKILLed them
    assert (tmp_path / "srun.log.scancel").read_text() == "--signal=TERM 9001\n"
    assert "forcing job termination" not in log.read_text()


def test_ranks_past_the_grace_are_ended_through_srun(multinode, tmp_path):
    """Ranks that ignore TERM: after grace_seconds srun gets SIGTERM (SIGKILL to every rank);
    the results are still committed."""
    gw, env, events, sha, port, make_spec = multinode
    spec = make_spec(MODE="ignore")
    spec.write_text(json.dumps(dict(json.loads(spec.read_text()), grace_seconds=1)))
    log = tmp_path / "slurm.out"
    p = start_runner(str(spec), log, **runner_env(tmp_path))
    work = spec.parent / "work"
    end = time.monotonic() + 30
    while not all((work / f"running-{r}").exists() for r in (0, 1)):
        assert time.monotonic() < end and p.poll() is None, log.read_text()
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 128 + signal.SIGKILL, log.read_text()
    out = log.read_text()
    assert "SIGTERM to srun (it ends every rank with SIGKILL)" in out
    assert "forcing job termination" in out
    res = events.wait_for("results")
    assert res["branch_updated"] is True, res
    assert not list(work.glob("term-*.txt"))


def test_without_scancel_the_signal_goes_to_srun(tmp_path):
    s = RunnerSpec.from_dict(dict(MULTI, srun=str(tmp_path / "no-such" / "srun")))
    srun = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert rank.signal_ranks(s, signal.SIGTERM, srun.pid, environ={"SLURM_JOB_ID": "9"}) \
            is False
        assert srun.wait(timeout=10) == -signal.SIGTERM
    finally:
        srun.kill()
    calls = []
    ok = rank.signal_ranks(s, signal.SIGINT, 1 << 22, environ={"SLURM_JOB_ID": "9"},
                           run=lambda cmd, **kw: calls.append(cmd) or
                           subprocess.CompletedProcess(cmd, 0, b"", b""))
    assert ok is True
    assert calls == [[str(tmp_path / "no-such" / "scancel"), "--signal=INT", "9"]]
    assert rank.slurm_program(RunnerSpec.from_dict(MULTI), "scancel") == "scancel"
