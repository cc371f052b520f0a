"""GPU sharing, sweeps and multi-node jobs against the live cluster, through a real Slipway
(issue 14, docs/SHARING.md): two teams' jobs on shards of one a6000 at once, each billed 2/8;
a 6-task sweep with max-parallel=2 (never more than 2 running, every task's files in its own
folder, the ledger equal to sacct per task); a 2-node job whose ranks meet over TCP; cancel of
a running sweep ends every task with its files pushed."""
from __future__ import annotations

import csv
import io
import math
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env, SLIPWAY_GPU_RATES="a4000:0.50,a6000:1.00")
    sw.cluster_env = slurm_cluster.env
    try:
        for name in ("alice", "bob"):
            sw.cli("user", "add", name, "--unix-user", f"sw-{name}")
            sw.cli("team", "add-funds", name, "100.00", "--note", "sweeps e2e")
            sw.cli("project", "create", name, "p", "--gpus", "a4000:1", "--image", "python")
            sw.tokens[name] = sw.cli("token", "create", name).stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def _slurm(sw, *argv: str) -> str:
    res = subprocess.run(list(argv), env=sw.env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, (argv, res.stdout, res.stderr)
    return res.stdout


def _clone(sw, tmp_path: Path, user: str) -> Path:
    work = tmp_path / f"{user}-p"
    if not work.exists():
        sw.git("clone", "-q", sw.remote(user, user, "p"), str(work))
    return work


def _push(sw, work: Path, branch: str, entry: str, *options: str) -> str:
    sw.git("checkout", "-q", "-B", branch, cwd=work)
    write_project(work, entry)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", branch, "--allow-empty", cwd=work)
    args = ["push", "-q", "origin", branch]
    for o in options:
        args[1:1] = ["-o", o]
    return sw.git(*args, cwd=work, check=False).stderr


def _show(sw, work: Path, branch: str, path: str) -> str:
    sw.git("fetch", "-q", "origin", cwd=work)
    return sw.git("show", f"origin/{branch}:{path}", cwd=work).stdout


def _wait(what, fn, timeout=120, every=0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def _ledger(sw, team: str) -> list[dict]:
    rows = csv.DictReader(io.StringIO(sw.cli("team", "ledger", team, "--csv").stdout))
    return [r for r in rows if r["kind"] == "gpu"]


def _sacct(sw, slurm_id: int) -> dict[str, dict]:
    out = _slurm(sw, "sacct", "-j", str(slurm_id), "-X", "-n", "-P", "-S", "now-1day", "-E", "now",
                 "-o", "JobID,State,ElapsedRaw,AllocTRES,NodeList")
    rows = [dict(zip(("id", "state", "elapsed", "tres", "nodes"), line.split("|")))
            for line in out.splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def test_two_teams_share_one_a6000_at_once_each_billed_two_eighths(sw, tmp_path):
    entry = "#!/bin/bash\necho \"$CUDA_VISIBLE_DEVICES\" > cvd.txt\nsleep 10\n"
    ids, works = {}, {}
    for team in ("alice", "bob"):
        works[team] = _clone(sw, tmp_path, team)
        out = _push(sw, works[team], "share", entry, "gpus=a6000-shard:2")
        ids[team] = job_id_from_push(out)
    # running (the runner's event) and on a node (Slurm's queue, a tick later)
    _wait("both shard jobs running at once",
          lambda: all((j := sw.job(ids[t]))["state"] == "running" and j["node"] for t in ids), 90)
    nodes = {t: sw.job(ids[t])["node"] for t in ids}
    assert nodes == {"alice": "a6k-1", "bob": "a6k-1"}, nodes
    jobs = {t: sw.wait_results(ids[t], timeout=120) for t in ids}
    cvd = {t: _show(sw, works[t], "share", "cvd.txt").strip() for t in ids}
    assert cvd["alice"] == cvd["bob"] and cvd["alice"] != "", cvd     # one GPU, two teams
    for team, job in jobs.items():
        assert job["state"] == "succeeded", job
        assert job["shape"]["compute"] == "2/8 of an a6000", job["shape"]
        acct = _sacct(sw, job["slurm_job_id"])[str(job["slurm_job_id"])]
        assert "gres/shard=2" in acct["tres"], acct
        minutes = math.ceil(int(acct["elapsed"]) / 60)
        # 2 shards × ($1.00 / 8 per shard-hour), per started minute
        want = Decimal(minutes) * 2 * Decimal("1.00") / 8 / 60
        _wait(f"{team}'s final charge",
              lambda: abs(Decimal(sw.job(ids[team])["cost"]) - want) < Decimal("0.000002"), 30)


def test_a_throttled_sweep_runs_two_at_a_time_and_each_tasks_files_land_in_its_folder(sw, tmp_path):
    work = _clone(sw, tmp_path, "alice")
    entry = ("#!/bin/bash\necho \"lr=$SLIPWAY_PARAM_LR bs=$SLIPWAY_PARAM_BS "
             "task=$SLIPWAY_TASK_ID slurm=$SLURM_ARRAY_TASK_ID\" > out.txt\nsleep 3\n")
    out = _push(sw, work, "sweep", entry, "sweep=lr=0.1,0.01,0.001;bs=32,64", "max-parallel=2")
    assert "6 tasks (--array=0-5%2)" in out, out
    job_id = job_id_from_push(out)
    slurm_id = _wait("submitted", lambda: sw.job(job_id)["slurm_job_id"], 30)
    most = 0
    deadline = time.monotonic() + 240
    while sw.job(job_id)["state"] not in ("succeeded", "failed", "cancelled"):
        running = _slurm(sw, "squeue", "-h", "-r", "-t", "R", "-j", str(slurm_id), "-o", "%i")
        most = max(most, len(running.split()))
        assert time.monotonic() < deadline, sw.job(job_id)
        time.sleep(0.5)
    assert 1 <= most <= 2, most
    job = sw.wait_job(job_id)
    assert job["state"] == "succeeded", job
    _wait("the merge onto the branch", lambda: sw.job(job_id)["results_sha"], 30)
    combos = [(lr, bs) for lr in ("0.1", "0.01", "0.001") for bs in ("32", "64")]
    for i, (lr, bs) in enumerate(combos):
        text = _show(sw, work, "sweep", f"sweep-{job_id}/task-{i}/out.txt").strip()
        assert text == f"lr={lr} bs={bs} task={i} slurm={i}", (i, text)
    tasks = sw.job(job_id)["tasks"]
    assert [t["state"] for t in tasks] == ["succeeded"] * 6
    # the ledger equals sacct per task: each task's minutes, from 0 to ceil(elapsed / 60)
    acct = _sacct(sw, slurm_id)
    _wait("every task billed", lambda: {r["resource"] for r in _ledger(sw, "alice")
                                        if r["job"] == str(job_id)}
          == {f"{job_id}_{i}" for i in range(6)}, 30)
    rows = [r for r in _ledger(sw, "alice") if r["job"] == str(job_id)]
    for i in range(6):
        rec = acct[f"{slurm_id}_{i}"]
        mine = sorted((int(r["from_minute"]), int(r["to_minute"])) for r in rows
                      if r["resource"] == f"{job_id}_{i}")
        assert mine and mine[0][0] == 0 and mine[-1][1] == math.ceil(int(rec["elapsed"]) / 60), \
            (i, mine, rec)
        assert all(a[1] == b[0] for a, b in zip(mine, mine[1:])), mine
    total = sum(-Decimal(r["amount"]) for r in rows)
    assert Decimal(sw.job(job_id)["cost"]) == total


RANKS = r'''#!/bin/bash
python3 - <<'PY'
import os, socket, time
rank, world = int(os.environ["RANK"]), os.environ["WORLD_SIZE"]
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
if rank == 0:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(1); s.settimeout(60)
    conn, _ = s.accept(); msg = conn.recv(100).decode(); conn.close()
else:
    for _ in range(120):
        try:
            c = socket.create_connection((addr, port), timeout=2); break
        except OSError:
            time.sleep(0.5)
    c.sendall(f"hello from {rank}".encode()); c.close(); msg = "sent"
with open(f"rank-{rank}.txt", "w") as f:
    f.write(f"world={world} node_rank={os.environ['NODE_RANK']} local={os.environ['LOCAL_RANK']} "
            f"msg={msg}\n")
PY
'''


def test_a_two_node_job_runs_one_rank_per_node_that_meet_over_tcp(sw, tmp_path):
    work = _clone(sw, tmp_path, "bob")
    out = _push(sw, work, "ddp", RANKS, "nodes=2", "gpus=a4000:1")
    assert "2 nodes × a4000 x1" in out, out
    job_id = job_id_from_push(out)
    job = sw.wait_results(job_id, timeout=150)
    assert job["state"] == "succeeded", job
    r0 = _show(sw, work, "ddp", "rank-0.txt")
    r1 = _show(sw, work, "ddp", "rank-1.txt")
    assert r0.startswith("world=2 node_rank=0 local=0 ") and "msg=hello from 1" in r0, r0
    assert r1.startswith("world=2 node_rank=1 local=0 ") and "msg=sent" in r1, r1
    assert sorted(n["node"] for n in job["nodes"]) == ["a4k-1", "a4k-2"], job["nodes"]
    acct = _sacct(sw, job["slurm_job_id"])[str(job["slurm_job_id"])]
    assert "gres/gpu:a4000=2" in acct["tres"] or "gres/gpu=2" in acct["tres"], acct
    rows = _wait(f"billed (sacct: {acct})",
                 lambda: [r for r in _ledger(sw, "bob") if r["job"] == str(job_id)], 30)
    assert {r["gpu_count"] for r in rows} == {"2"}, rows   # every node's GPU is billed


def test_cancel_of_a_running_sweep_ends_every_task_with_its_files_pushed(sw, tmp_path):
    work = _clone(sw, tmp_path, "bob")
    entry = ("#!/bin/bash\ntrap 'echo stopped > stop.txt; exit 0' TERM\n"
             "echo \"started $SLIPWAY_PARAM_X\" > start.txt\n"
             "while true; do sleep 0.2; done\n")
    out = _push(sw, work, "sweep-c", entry, "sweep=x=a,b,c,d", "max-parallel=3")
    job_id = job_id_from_push(out)
    _wait("three tasks running, one waiting",
          lambda: [t["state"] for t in sw.job(job_id).get("tasks", [])]
          == ["running"] * 3 + ["pending"], 120)
    time.sleep(2)   # the entrypoints wrote start.txt
    said = sw.cli("job", "cancel", str(job_id)).stdout
    assert "1 waiting task(s) cancelled" in said, said
    job = sw.wait_job(job_id, timeout=120)
    assert job["state"] == "cancelled", job
    _wait("the merge onto the branch", lambda: sw.job(job_id)["results_sha"], 60)
    for i, x in enumerate("abc"):
        assert _show(sw, work, "sweep-c", f"sweep-{job_id}/task-{i}/start.txt").strip() == \
            f"started {x}"
        assert _show(sw, work, "sweep-c", f"sweep-{job_id}/task-{i}/stop.txt").strip() == "stopped"
    tree = sw.git("ls-tree", "--name-only", f"origin/sweep-c:sweep-{job_id}", cwd=work).stdout
    assert tree.split() == ["task-0", "task-1", "task-2"], tree   # task 3 never ran
    tasks = sw.job(job_id)["tasks"]
    assert [t["state"] for t in tasks] == ["cancelled"] * 4
    assert Decimal(tasks[3]["cost"]) == 0 and all(Decimal(t["cost"]) > 0 for t in tasks[:3])


def test_cancel_of_a_two_node_job_stops_every_rank_and_pushes_their_files(sw, tmp_path):
    work = _clone(sw, tmp_path, "alice")
    entry = ("#!/bin/bash\ntrap 'echo stopped > stop-$RANK.txt; exit 0' TERM\n"
             "echo up > up-$RANK.txt\nwhile true; do sleep 0.2; done\n")
    out = _push(sw, work, "ddp-c", entry, "nodes=2", "gpus=a4000:1")
    job_id = job_id_from_push(out)
    _wait("both nodes running", lambda: [n["state"] for n in sw.job(job_id).get("nodes", [])]
          == ["running"] * 2, 120)
    time.sleep(3)   # every rank is up
    sw.cli("job", "cancel", str(job_id))
    job = sw.wait_results(job_id, timeout=120)
    assert job["state"] == "cancelled", job
    for rank in (0, 1):
        assert _show(sw, work, "ddp-c", f"up-{rank}.txt").strip() == "up"
        assert _show(sw, work, "ddp-c", f"stop-{rank}.txt").strip() == "stopped"
    assert [n["state"] for n in sw.job(job_id)["nodes"]] == ["cancelled"] * 2
