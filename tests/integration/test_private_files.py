"""Issue 9 item 2, live: a hostile job of one team tries to read what is Slipway's (database,
secrets, lock files) and what is another team's (bare repository, LFS object, job directory,
spec and log), and is refused each time.

The job's container (ch-run) sees only its image and its checkout (``/work``); ch-run makes no
PID namespace, so the probe also tries every target through each ``/proc/<pid>/root`` it may
enter (today: none of the host's). The job's Unix user is not confined to the container, though:
its runner and batch script run on the host as that user (and the user may be able to run
anything there), so the same probe runs on the host as the job's user, where it must read its
OWN spec and the node-side program (the route works) and nothing else; and ``cat``/``ls``/
``git clone`` are tried with ``runuser`` as both teams' users.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.harness import ENTRYPOINT, cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PROBE = r'''
import json, os

targets = json.load(open("targets.json"))
own = os.environ["SLIPWAY_JOB_ID"]
targets["own_spec"] = {"path": os.path.join(targets.pop("jobs_dir"), own, "spec.json"), "kind": "file"}
roots = [""]  # the container's own view, then the host's through processes we may enter
for pid in sorted(os.listdir("/proc")):
    if pid.isdigit():
        try:
            os.listdir(f"/proc/{pid}/root/")
            roots.append(f"/proc/{pid}/root")
        except OSError:
            pass
results = {"host_views": len(roots) - 1}
for name, t in sorted(targets.items()):
    outcome = "absent"  # not there at all (in the container: not visible)
    for root in roots:
        path = root + t["path"]
        try:
            if t["kind"] == "dir":
                os.listdir(path)
            else:
                with open(path, "rb") as fh:
                    fh.read(16)
            outcome = "read"
            break
        except PermissionError:
            outcome = "refused"
        except OSError:
            pass
    results[name] = outcome
results["own_workdir"] = "read" if "targets.json" in os.listdir(".") else "missing"
json.dump(results, open("results.json", "w"), indent=1, sort_keys=True)
'''

PROBE_ENTRYPOINT = "#!/bin/bash\nset -e\npython3 probe.py\n"


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env)
    try:
        for user, unix in (("alice", "sw-alice"), ("bob", "sw-bob")):
            sw.cli("user", "add", user, "--unix-user", unix)
            sw.cli("team", "add-funds", user, "100.00", "--note", "e2e")
            sw.cli("project", "create", user, "proj", "--gpus", "a4000:1", "--image", "python")
            sw.tokens[user] = sw.cli("token", "create", user).stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def _run(sw, user: str, work: Path, branch: str, entrypoint: str, extra: dict[str, str]) -> dict:
    sw.git("clone", sw.remote(user, user, "proj"), str(work))
    sw.git("checkout", "-B", branch, cwd=work)
    write_project(work, entrypoint, extra)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", branch, cwd=work)
    out = sw.git("push", "origin", branch, cwd=work)
    job = sw.wait_results(job_id_from_push(out.stderr), timeout=180)
    assert job["state"] == "succeeded", (job, Path(job["log"]).read_text())
    sw.git("pull", "-q", "origin", branch, cwd=work)
    return job


def _probe_on_host(unix_user: str, job_id: int, spec: dict) -> dict:
    d = Path(tempfile.mkdtemp(prefix="slipway-probe-", dir="/tmp"))
    try:
        (d / "probe.py").write_text(PROBE)
        (d / "targets.json").write_text(json.dumps(spec))
        pw = pwd.getpwnam(unix_user)
        for p in (d, d / "probe.py", d / "targets.json"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        r = subprocess.run(["runuser", "-u", unix_user, "--", "env", f"SLIPWAY_JOB_ID={job_id}",
                            "/usr/bin/python3", "probe.py"], cwd=d, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads((d / "results.json").read_text())
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as(unix_user: str, *argv: str, cwd: str = "/tmp") -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", unix_user, "--", *argv], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def test_a_job_cannot_read_the_database_secrets_or_another_teams_files(sw, tmp_path):
    data = sw.data_dir
    # Team B: a job with a log, results and an LFS object (big.bin, 2 MiB)
    job_b = _run(sw, "bob", tmp_path / "b", "exp-b", ENTRYPOINT, {})
    [lfs_object] = [p for p in (data / "lfs" / "bob" / "proj").rglob("*")
                    if p.is_file() and p.parent.name != "tmp"]
    b_dir = data / "jobs" / str(job_b["id"])
    repo_b = data / "repos" / "bob" / "proj.git"
    node = next((data / "node").iterdir())
    targets = {
        "database": (data / "slipway.db", "file"),
        "database_wal": (data / "slipway.db-wal", "file"),
        "database_shm": (data / "slipway.db-shm", "file"),
        "hook_secret": (data / "hook_secret", "file"),
        "secret_key": (data / "secret_key", "file"),
        "reconciler_lock": (data / "reconciler.lock", "file"),
        "data_dir_listing": (data, "dir"),
        "jobs_dir_listing": (data / "jobs", "dir"),
        "repos_listing": (data / "repos", "dir"),
        "b_repo_config": (repo_b / "config", "file"),
        "b_repo_objects": (repo_b / "objects", "dir"),
        "b_repo_head": (repo_b / "HEAD", "file"),
        "b_lfs_object": (lfs_object, "file"),
        "b_job_dir": (b_dir, "dir"),
        "b_spec": (b_dir / "spec.json", "file"),
        "b_log": (Path(job_b["log"]), "file"),
        "node_program": (node / "git_gateway" / "node" / "runner.py", "file"),
    }
    for name, (path, _kind) in targets.items():
        assert path.exists(), (name, path)  # every target is really there while the probe runs
    spec = {name: {"path": str(p), "kind": k} for name, (p, k) in targets.items()}
    spec["jobs_dir"] = str(data / "jobs")

    # Team A's job probes them all from inside its container
    job_a = _run(sw, "alice", tmp_path / "a", "probe", PROBE_ENTRYPOINT,
                 {"probe.py": PROBE, "targets.json": json.dumps(spec)})
    inside = json.loads((tmp_path / "a" / "results.json").read_text())
    assert inside["own_workdir"] == "read", inside  # the probe ran, in its checkout
    read = {n: r for n, r in inside.items() if r == "read" and n != "own_workdir"}
    assert not read, inside

    # The same probe on the host as the job's user (where its batch script and runner run)
    host = _probe_on_host("sw-alice", job_a["id"], spec)
    # not vacuous: it reads what is its own, and the node-side program every job runs
    assert host["own_spec"] == "read" and host["node_program"] == "read", host
    refused = {n: host[n] for n in targets if n != "node_program"}
    assert set(refused.values()) == {"refused"}, refused

    # ... and on the host, as either team's Unix user
    a_dir = data / "jobs" / str(job_a["id"])
    for user, others in (("sw-bob", [a_dir / "spec.json", Path(job_a["log"])]),
                         ("sw-alice", [b_dir / "spec.json", Path(job_b["log"]), lfs_object])):
        for path in [data / "slipway.db", data / "slipway.db-wal", data / "hook_secret",
                     data / "secret_key", repo_b / "config", *others]:
            r = _as(user, "cat", str(path))
            assert r.returncode != 0 and "Permission denied" in r.stderr, (user, path, r)
        for d in (data, data / "jobs", data / "repos"):
            r = _as(user, "ls", str(d))
            assert r.returncode != 0 and "Permission denied" in r.stderr, (user, d, r)
    clone = _as("sw-alice", "git", "clone", "-q", str(repo_b), "/tmp/stolen-" + tmp_path.name)
    assert clone.returncode != 0 and not Path("/tmp/stolen-" + tmp_path.name).exists(), clone
    # a job's user reads its own spec (what the runner needs) on the host too
    assert _as("sw-alice", "cat", str(a_dir / "spec.json")).returncode == 0
