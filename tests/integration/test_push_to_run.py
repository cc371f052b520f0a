"""Push to run, end to end: real git over HTTP → Slipway → the live Slurm cluster → a job in a
real container (ch-run) → results committed and pushed back → `git pull` brings them home."""
from __future__ import annotations

import concurrent.futures
import json
import pwd
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.harness import ENTRYPOINT, cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env)
    try:
        sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
        sw.cli("user", "add", "bob", "--unix-user", "sw-bob")
        sw.cli("team", "add-funds", "alice", "100.00", "--note", "e2e")
        sw.cli("project", "create", "alice", "demo", "--gpus", "a4000:2", "--image", "python")
        sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
        sw.tokens["bob"] = sw.cli("token", "create", "bob").stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


@pytest.fixture
def clone(sw, tmp_path):
    """A fresh clone of alice/demo with the entrypoint committed on `main`."""
    work = tmp_path / "demo"
    sw.git("clone", sw.remote("alice", "alice", "demo"), str(work))
    return work


def _commit_branch(sw, work: Path, branch: str, entrypoint: str = ENTRYPOINT, extra=None) -> None:
    sw.git("checkout", "-B", branch, cwd=work)
    write_project(work, entrypoint, {"branch.txt": branch, **(extra or {})})
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", f"run {branch}", cwd=work)


def test_push_runs_job_in_container_and_results_come_back(sw, clone):
    _commit_branch(sw, clone, "exp-1")
    pushed = sw.git("rev-parse", "HEAD", cwd=clone).stdout.strip()
    out = sw.git("push", "origin", "exp-1", cwd=clone)
    assert re.search(r"remote: slipway: job \d+ queued \(a4000 x2\)", out.stderr), out.stderr
    job_id = job_id_from_push(out.stderr)

    job = sw.wait_results(job_id)
    assert job["state"] == "succeeded", job
    assert job["commit"] == pushed
    assert job["exit_code"] == 0
    assert job["branch_updated"] is True
    assert 10000 <= job["port"] <= 65535

    sw.git("pull", "-q", "origin", "exp-1", cwd=clone)
    result = (clone / "result.txt").read_text()
    gpus = re.search(r"gpus=(\S*)", result).group(1)
    assert len(gpus.split(",")) == 2, result            # two GPUs from Slurm's gres
    assert f"port={job['port']}" in result                # PORT recorded for the job
    assert f"uid={pwd.getpwnam('sw-alice').pw_uid}" in result  # as the pushing user, not root
    assert '"name": "python"' in result                   # ran inside the python image
    # the 2 MiB file went back through git-lfs and comes home intact
    assert (clone / "big.bin").read_bytes() == bytes(range(256)) * 8192
    attrs = (clone / ".gitattributes").read_text()
    assert "big.bin" in attrs and "filter=lfs" in attrs
    msg = sw.git("log", "-1", "--format=%B", cwd=clone).stdout
    assert f"job {job_id}" in msg and "exit 0" in msg
    # the results branch always exists
    ls = sw.git("ls-remote", "origin", f"refs/heads/results/exp-1/{job_id}", cwd=clone).stdout
    assert ls.strip(), "results branch missing"
    # the job's log has the entrypoint's output
    assert "job says hello" in Path(job["log"]).read_text()
    # Slipway's own push did not start another job
    jobs = json.loads(sw.cli("job", "list", "--json").stdout)
    assert [j["id"] for j in jobs if j["branch"] == "exp-1"] == [job_id], jobs


def test_refused_pushes_say_what_to_fix_and_keep_the_branch(sw, clone):
    # no entrypoint
    sw.git("checkout", "-B", "no-entry", cwd=clone)
    (clone / "notes.txt").write_text("x")
    sw.git("add", "-A", cwd=clone)
    sw.git("commit", "-qm", "no entrypoint", cwd=clone)
    out = sw.git("push", "origin", "no-entry", cwd=clone, check=False)
    assert out.returncode != 0 and "slipway-entrypoint.sh" in out.stderr, out.stderr
    assert not sw.git("ls-remote", "origin", "refs/heads/no-entry", cwd=clone).stdout.strip()

    _commit_branch(sw, clone, "bad-opts")
    # an over-request is cut down unless strict=yes (tests/integration/test_policy_live.py)
    for opt, words in [("gpus=a4000:5 strict=yes", "nodes have at most 4 (strict=yes: refused)"),
                       ("gpus=a6000:3 strict=yes", "nodes have at most 2 (strict=yes: refused)"),
                       ("image=nope", "unknown image"), ("colour=red", "colour"),
                       ("image=pytorch", "no build for this cluster's container runtime")]:
        opts = [arg for o in opt.split() for arg in ("-o", o)]
        out = sw.git("push", *opts, "origin", "bad-opts", cwd=clone, check=False)
        assert out.returncode != 0, (opt, out.stderr)
        assert words in out.stderr, (opt, out.stderr)
    assert not sw.git("ls-remote", "origin", "refs/heads/bad-opts", cwd=clone).stdout.strip()


def test_push_options_override_settings_for_one_job(sw, clone):
    _commit_branch(sw, clone, "opts")
    out = sw.git("push", "-o", "gpus=a6000:1", "-o", "time=30m", "origin", "opts", cwd=clone)
    assert "queued (a6000 x1)" in out.stderr, out.stderr
    job = sw.wait_results(job_id_from_push(out.stderr))
    assert (job["gpu_type"], job["gpu_count"], job["time_limit_min"]) == ("a6000", 1, 30)
    assert job["state"] == "succeeded" and job["node"] == "a6k-1", job
    # the project's settings are unchanged: the next push uses a4000 x2 again
    show = sw.cli("project", "show", "alice/demo").stdout
    assert "a4000" in show


SLOW = """#!/bin/bash
echo started > started.txt
for i in $(seq 1 600); do echo "tick $i" >> progress.txt; sleep 0.5; done
echo finished > finished.txt
"""


def test_second_push_to_a_busy_branch_is_refused_other_branches_run_in_parallel(sw, clone):
    _commit_branch(sw, clone, "par-a", SLOW)
    a = job_id_from_push(sw.git("push", "origin", "par-a", cwd=clone).stderr)
    _commit_branch(sw, clone, "par-b", SLOW)
    b = job_id_from_push(sw.git("push", "origin", "par-b", cwd=clone).stderr)
    sw.wait_job(a, {"running"})
    sw.wait_job(b, {"running"})  # both run at the same time

    sw.git("checkout", "par-a", cwd=clone)
    (clone / "more.txt").write_text("more")
    sw.git("add", "-A", cwd=clone)
    sw.git("commit", "-qm", "more", cwd=clone)
    before = sw.git("ls-remote", "origin", "refs/heads/par-a", cwd=clone).stdout.split()[0]
    out = sw.git("push", "origin", "par-a", cwd=clone, check=False)
    assert out.returncode != 0 and f"job {a}" in out.stderr, out.stderr
    assert sw.git("ls-remote", "origin", "refs/heads/par-a", cwd=clone).stdout.split()[0] == before
    for j in (a, b):
        sw.cli("job", "cancel", str(j))
    for j in (a, b):
        assert sw.wait_results(j)["state"] == "cancelled"


def test_concurrent_pushes_to_one_branch_start_exactly_one_job(sw, tmp_path):
    n = 4
    clones, shas = [], []
    for i in range(n):
        work = tmp_path / f"c{i}"
        sw.git("clone", "-q", sw.remote("alice", "alice", "demo"), str(work))
        _commit_branch(sw, work, "race", SLOW, extra={"who.txt": f"clone {i}"})
        clones.append(work)
        shas.append(sw.git("rev-parse", "HEAD", cwd=work).stdout.strip())
    assert len(set(shas)) == n
    barrier = threading.Barrier(n)
    started_at = []

    def push(work):
        barrier.wait(timeout=30)          # all n pushes to the new branch leave together
        started_at.append(time.monotonic())
        # -f: a push that sees the branch already created still reaches Slipway's hook
        return sw.git("push", "-f", "origin", "race", cwd=work, check=False)

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        outs = list(pool.map(push, clones))
    assert max(started_at) - min(started_at) < 0.5, started_at
    winners = [i for i, o in enumerate(outs) if " queued (" in o.stderr]
    assert len(winners) == 1, [o.stderr for o in outs]
    [w] = winners
    assert outs[w].returncode == 0, outs[w].stderr
    job_id = job_id_from_push(outs[w].stderr)
    for i, o in enumerate(outs):
        if i == w:
            continue
        # each loser was refused, told why, and started nothing
        assert o.returncode != 0, o.stderr
        assert (f"branch race already has job {job_id}" in o.stderr
                or "another push to this branch started a job just now" in o.stderr), o.stderr
        assert "push refused; nothing was started" in o.stderr, o.stderr
    race_jobs = [j for j in json.loads(sw.cli("job", "list", "--json").stdout) if j["branch"] == "race"]
    assert [j["id"] for j in race_jobs] == [job_id], race_jobs
    # the branch is the winner's commit, and that is the commit the job runs
    tip = sw.git("ls-remote", "origin", "refs/heads/race", cwd=clones[0]).stdout.split()[0]
    assert tip == shas[w] == sw.job(job_id)["commit"]
    sw.wait_job(job_id, {"running"})
    sw.cli("job", "cancel", str(job_id))
    assert sw.wait_results(job_id)["state"] == "cancelled"


def test_cancel_stops_within_10s_and_files_are_still_pushed(sw, clone):
    _commit_branch(sw, clone, "cancel-me", SLOW)
    job_id = job_id_from_push(sw.git("push", "origin", "cancel-me", cwd=clone).stderr)
    sw.wait_job(job_id, {"running"})
    deadline = time.monotonic() + 60
    while not Path(sw.job(job_id)["log"]).parent.joinpath("work", "progress.txt").exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    t0 = time.monotonic()
    sw.cli("job", "cancel", str(job_id))
    job = sw.wait_results(job_id, timeout=30)
    elapsed = time.monotonic() - t0
    assert job["state"] == "cancelled", job
    assert elapsed < 10, f"cancel to results pushed took {elapsed:.1f} s"
    sw.git("pull", "-q", "origin", "cancel-me", cwd=clone)
    assert (clone / "started.txt").read_text() == "started\n"
    assert "tick 1" in (clone / "progress.txt").read_text()
    assert not (clone / "finished.txt").exists()


def test_user_push_during_job_keeps_both_histories(sw, clone):
    entry = SLOW.replace("seq 1 600", "seq 1 8")
    _commit_branch(sw, clone, "both", entry)
    pushed = sw.git("rev-parse", "HEAD", cwd=clone).stdout.strip()
    job_id = job_id_from_push(sw.git("push", "origin", "both", cwd=clone).stderr)
    sw.wait_job(job_id, {"running"})
    # While the job runs, the user pushes a commit that starts no job (run=no).
    (clone / "mine.txt").write_text("mine")
    sw.git("add", "-A", cwd=clone)
    sw.git("commit", "-qm", "mine", cwd=clone)
    mine = sw.git("rev-parse", "HEAD", cwd=clone).stdout.strip()
    out = sw.git("push", "-o", "run=no", "origin", "both", cwd=clone)
    assert "no job started" in out.stderr, out.stderr
    job = sw.wait_results(job_id)
    assert job["state"] == "succeeded"
    # The branch keeps the user's commit; the job's work is on its results branch.
    assert job["branch_updated"] is False, job
    sw.git("fetch", "-q", "origin", cwd=clone)
    assert sw.git("rev-parse", "origin/both", cwd=clone).stdout.strip() == mine
    results = f"origin/results/both/{job_id}"
    assert "tick 8" in sw.git("show", f"{results}:progress.txt", cwd=clone).stdout
    assert sw.git("rev-parse", f"{results}^", cwd=clone).stdout.strip() == pushed
    # Both histories merge cleanly.
    sw.git("merge", "-q", "--no-edit", results, cwd=clone)
    assert (clone / "mine.txt").exists() and (clone / "progress.txt").exists()
    # Only one job was started on this branch.
    assert [j["id"] for j in json.loads(sw.cli("job", "list", "--json").stdout)
            if j["branch"] == "both"] == [job_id]


def test_hostile_branch_names_run_safely(sw, clone):
    branch = "feat/$(touch${IFS}pwned);`id`"
    _commit_branch(sw, clone, branch)
    out = sw.git("push", "origin", branch, cwd=clone)
    job = sw.wait_results(job_id_from_push(out.stderr))
    assert job["state"] == "succeeded" and job["branch"] == branch, job
    sw.git("pull", "-q", "origin", branch, cwd=clone)
    assert (clone / "result.txt").exists()
    assert not list(Path("/").glob("pwned")) and not list(sw.data_dir.rglob("pwned"))
    out = sw.git("push", "origin", "HEAD:refs/heads/results", cwd=clone, check=False)
    assert out.returncode != 0 and "reserved" in out.stderr
    # the whole results/ namespace is Slipway's: a user branch there would block results refs
    out = sw.git("push", "origin", "HEAD:refs/heads/results/exp-9", cwd=clone, check=False)
    assert out.returncode != 0 and "reserved" in out.stderr, out.stderr
    assert not sw.git("ls-remote", "origin", "refs/heads/results/exp-9", cwd=clone).stdout.strip()
    # ... but cleaning up a results branch is the user's to do
    rref = f"refs/heads/results/{branch}/{job['id']}"
    assert sw.git("ls-remote", "origin", rref, cwd=clone).stdout.strip()
    sw.git("push", "origin", f":{rref}", cwd=clone)
    assert not sw.git("ls-remote", "origin", rref, cwd=clone).stdout.strip()


def test_fifty_megabyte_result_goes_through_lfs(sw, clone):
    entry = """#!/bin/bash
python3 -c "import os; open('model.bin', 'wb').write(os.urandom(50 * 1024 * 1024))"
sha256sum model.bin > model.sha256
"""
    _commit_branch(sw, clone, "big", entry)
    job = sw.wait_results(job_id_from_push(sw.git("push", "origin", "big", cwd=clone).stderr))
    assert job["state"] == "succeeded", job
    sw.git("pull", "-q", "origin", "big", cwd=clone)
    assert (clone / "model.bin").stat().st_size == 50 * 1024 * 1024
    check = subprocess.run(["sha256sum", "-c", "model.sha256"], cwd=clone, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "model.bin" in (clone / ".gitattributes").read_text()
    blob = sw.git("cat-file", "-p", "HEAD:model.bin", cwd=clone).stdout
    assert blob.startswith("version https://git-lfs.github.com/spec/v1")  # a pointer in git


def test_restart_of_slipway_mid_job_loses_nothing(sw, clone):
    entry = SLOW.replace("seq 1 600", "seq 1 12")
    _commit_branch(sw, clone, "restart", entry)
    job_id = job_id_from_push(sw.git("push", "origin", "restart", cwd=clone).stderr)
    sw.wait_job(job_id, {"running"})
    sw.stop()
    time.sleep(3)
    sw.start()
    job = sw.wait_results(job_id)
    assert job["state"] == "succeeded", job
    sw.git("pull", "-q", "origin", "restart", cwd=clone)
    assert "tick 12" in (clone / "progress.txt").read_text()


def _hooks_dir(sw) -> Path:
    return sw.data_dir / "repos" / "alice" / "demo.git" / "hooks"


def _jobs_on(sw, branch: str) -> list[dict]:
    return [j for j in json.loads(sw.cli("job", "list", "--json").stdout) if j["branch"] == branch]


def test_job_runs_and_results_come_back_when_the_post_receive_never_reaches_slipway(
        sw, clone, tmp_path):
    """The post-receive hook dies without telling Slipway (here: replaced by `exit 0` for one
    push). The reservation is not lost: the branch points at the pushed commit, so after the
    grace (30 s) the reconciler submits it exactly as the hook would have, and it runs.
    (A usual push has its post-receive run by the gateway itself, git_gateway/push_report.py;
    a push from a shallow clone, as here, keeps the repository's own hooks.)"""
    _commit_branch(sw, clone, "lost-hook")
    sw.git("push", "-q", "-o", "run=no", "origin", "lost-hook", cwd=clone)
    shallow = tmp_path / "shallow"
    sw.git("clone", "-q", "--depth", "1", "-b", "lost-hook", sw.remote("alice", "alice", "demo"),
           str(shallow))
    sw.git("commit", "-q", "--allow-empty", "-m", "from a shallow clone", cwd=shallow)
    pushed = sw.git("rev-parse", "HEAD", cwd=shallow).stdout.strip()
    hook = _hooks_dir(sw) / "post-receive"
    original = hook.read_bytes()
    hook.write_text("#!/bin/sh\nexit 0\n")
    try:
        out = sw.git("push", "origin", "lost-hook", cwd=shallow)
    finally:
        hook.write_bytes(original)
    assert " queued (" not in out.stderr, out.stderr       # the hook never reached Slipway
    assert sw.git("ls-remote", "origin", "refs/heads/lost-hook", cwd=clone).stdout.split()[0] == pushed
    [reserved] = _jobs_on(sw, "lost-hook")
    assert reserved["state"] == "queued" and reserved["commit"] == pushed, reserved

    job = sw.wait_results(reserved["id"], timeout=150)
    assert job["state"] == "succeeded" and job["exit_code"] == 0, job
    assert job["commit"] == pushed and job["branch_updated"] is True, job
    assert "post-receive hook never reached Slipway" in (job["reason"] or ""), job
    sw.git("pull", "-q", "origin", "lost-hook", cwd=clone)
    assert "job says hello" in Path(job["log"]).read_text()
    assert f"port={job['port']}" in (clone / "result.txt").read_text()
    assert (clone / "big.bin").read_bytes() == bytes(range(256)) * 8192
    assert [j["id"] for j in _jobs_on(sw, "lost-hook")] == [reserved["id"]]   # submitted once


def test_reservation_of_a_push_whose_ref_update_failed_is_released_and_the_branch_is_free(sw, clone):
    """pre-receive reserved a job, then git did not update the ref (a reference-transaction hook
    aborts it, as a lost ref race would): the reservation is failed with a clear reason once the
    grace has passed, and the next push to the branch starts its job."""
    _commit_branch(sw, clone, "ref-lost")
    # in the repository's hooks and in those receive-pack runs with for the gateway's own
    # post-receive (<data_dir>/gateway-hooks, git_gateway/post_receive.py)
    hooks = [d / "reference-transaction" for d in (_hooks_dir(sw), sw.data_dir / "gateway-hooks")]
    for hook in hooks:
        hook.write_text('#!/bin/sh\ninput=$(cat)\n[ "$1" = prepared ] || exit 0\n'
                        'case "$input" in *" refs/heads/ref-lost"*) exit 1;; esac\nexit 0\n')
        hook.chmod(0o755)
    try:
        out = sw.git("push", "origin", "ref-lost", cwd=clone, check=False)
    finally:
        for hook in hooks:
            hook.unlink()
    assert out.returncode != 0, out.stderr
    assert not sw.git("ls-remote", "origin", "refs/heads/ref-lost", cwd=clone).stdout.strip()
    [reserved] = _jobs_on(sw, "ref-lost")
    assert reserved["state"] == "queued", reserved

    job = sw.wait_job(reserved["id"], {"failed"}, timeout=90)
    assert "the push did not complete" in job["reason"] and "push again" in job["reason"], job
    assert job["slurm_job_id"] is None, job                # nothing was ever submitted
    out = sw.git("push", "origin", "ref-lost", cwd=clone)
    assert " queued (" in out.stderr, out.stderr
    again = sw.wait_results(job_id_from_push(out.stderr))
    assert again["state"] == "succeeded", again


def _raw_post(sw, path: str, body_size: int, *headers: str, send_body: bool) -> tuple[bytes, float]:
    """POST ``path`` with a declared body of ``body_size`` bytes (sent only when ``send_body``);
    the server's answer and how long it took."""
    import socket

    host, port = sw.url.split("://", 1)[1].rsplit(":", 1)
    head = "\r\n".join([f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
                         "Content-Type: application/x-git-receive-pack-request",
                         f"Content-Length: {body_size}", *headers]) + "\r\n\r\n"
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.encode())
        if send_body:
            s.sendall(b"\0" * body_size)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out, time.monotonic() - started


def test_a_stranger_cannot_make_slipway_read_a_large_body(sw):
    """Waitress reads a whole body before the app sees it: without the body gate anyone who can
    reach the port could spool 64 GiB into the server's temporary files. A large body from a
    caller without valid credentials is refused as soon as its headers are in (never read);
    with a user's token it is read and answered by the app as before."""
    import base64

    path = "/git/alice/demo.git/git-receive-pack"
    out, took = _raw_post(sw, path, 8 * 1024**3, send_body=False)
    assert out.startswith(b"HTTP/1.1 401"), out[:300]
    assert b"valid credentials" in out and took < 10
    wrong = base64.b64encode(f"alice:{sw.tokens['alice']}x".encode()).decode()
    out, _ = _raw_post(sw, path, 8 * 1024**3, f"Authorization: Basic {wrong}", send_body=False)
    assert out.startswith(b"HTTP/1.1 401"), out[:300]
    right = base64.b64encode(f"alice:{sw.tokens['alice']}".encode()).decode()
    out, _ = _raw_post(sw, path, 3 * 1024**2, f"Authorization: Basic {right}", send_body=True)
    status = out.split(b"\r\n", 1)[0]
    assert b" 401 " not in status and b" 413 " not in status, out[:300]   # read; git's answer
    # a small anonymous body is still read and answered by the app (here: who are you?)
    out, _ = _raw_post(sw, path, 100, send_body=True)
    assert out.startswith(b"HTTP/1.1 401") and b"valid credentials" not in out, out[:300]

