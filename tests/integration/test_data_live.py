"""Issue 11, live: data versions uploaded through the API and bound read-only at /input0..4 of
real jobs (git push -o input0=..., Slurm, ch-run as the pusher's Unix user), every job's /output
kept after it ends and served by the API and the CLI, continue, a version made from a job's
output, another team's access (refused while private, allowed once public; the host's ACL
gates), the storage charge of a version on the ledger, and the storage quota.

One Slipway serves the whole module; the jobs it runs are module fixtures, so each test reads
what an earlier fixture's job left (a test run alone still starts what it needs).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.support.data_live import (api, as_unix, db_rows, ok, repo_id, team_id, upload,
                                     wait_output_kept)
from tests.support.harness import SLIPWAY, cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

HELLO = b"hello from the dataset\n"
C_BIN = bytes(range(256)) * 1200          # 300 KiB, binary
OUTPUT = {"a.txt": b"alpha\n", "b.txt": b"beta\n", "sub/c.bin": C_BIN}

# Job A writes three files to /output, reads /input0 and tries to write there. The same commit
# continued (job B) finds A's files in its /output and changes them.
FIRST_AND_CONTINUED = """#!/bin/bash
if [ -e /output/a.txt ]; then
  (cd /output && find . -type f | sort) > /tmp/saw.txt
  cp /tmp/saw.txt /output/saw.txt
  cat /output/a.txt > /output/a-before.txt
  echo "changed by the continuation" > /output/a.txt
  echo "new in the continuation" > /output/d.txt
  rm /output/b.txt
  echo "continued run done"
  exit 0
fi
cat /input0/hello.txt > seen.txt
if echo x > /input0/new.txt 2> write-err.txt; then echo "input write: WROTE"; else echo "input write refused: $(cat write-err.txt)"; fi
if mkdir /input0/newdir 2>> write-err.txt; then echo "input mkdir: MADE"; fi
mkdir -p /output/sub
printf 'alpha\\n' > /output/a.txt
printf 'beta\\n' > /output/b.txt
python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 1200)" > /output/sub/c.bin
echo "first run done"
"""

READ_VERSION_AND_JOB = """#!/bin/bash
set -e
cat /input0/a.txt > from-version-a.txt
sha256sum /input0/sub/c.bin | cut -d' ' -f1 > from-version-c.sha
cat /input1/b.txt > from-job-b.txt
ls /input0 > version-listing.txt
"""

READ_HELLO = "#!/bin/bash\nset -e\ncat /input0/hello.txt > seen.txt\n"


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    # storage is billed at every tick (not every 10 minutes): a version's first charge shows up
    # as soon as the minute it was made has passed
    sw = start_slipway(slurm_cluster.env, SLIPWAY_STORAGE_INTERVAL="1")
    try:
        for user in ("alice", "bob"):
            sw.cli("user", "add", user, "--unix-user", "sw-" + user)
            sw.cli("team", "add-funds", user, "100.00", "--note", "e2e")
            sw.cli("project", "create", user, "proj", "--gpus", "a4000:1", "--image", "python")
            sw.tokens[user] = sw.cli("token", "create", user).stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def _create(sw, user: str, team: str, name: str) -> None:
    ok(api(sw, user, "POST", "data", {"team": team, "name": name, "kind": "dataset"}), 201)


def _push(sw, tmp: Path, user: str, branch: str, entrypoint: str, *options: str,
          check: bool = True) -> subprocess.CompletedProcess:
    work = tmp / f"{user}-{branch}"
    if not work.exists():
        sw.git("clone", "-q", sw.remote(user, user, "proj"), str(work))
        sw.git("checkout", "-B", branch, cwd=work)
        write_project(work, entrypoint)
        sw.git("add", "-A", cwd=work)
        sw.git("commit", "-qm", branch, cwd=work)
    opts = [a for o in options for a in ("-o", o)]
    return sw.git("push", *opts, "origin", branch, cwd=work, check=check)


def _results_file(sw, tmp: Path, user: str, branch: str, job_id: int, path: str) -> str:
    work = tmp / f"{user}-{branch}"
    sw.git("fetch", "-q", "origin", cwd=work)
    return sw.git("show", f"origin/results/{branch}/{job_id}:{path}", cwd=work).stdout


def _succeeded(sw, job_id: int) -> dict:
    job = sw.wait_results(job_id, timeout=150)
    assert job["state"] == "succeeded", (job, Path(job["log"]).read_text())
    return job


def _labels(sw, job_id: int) -> list[str]:
    """The bindings recorded for a job, by slot (the job page shows them; its JSON does not)."""
    return [label for (label,) in db_rows(sw, "SELECT label FROM job_inputs WHERE job_id = ? "
                                               "ORDER BY slot", job_id)]


def _kept_dir(sw, team: str, job_id: int) -> Path:
    return sw.data_dir / "datastore" / "outputs" / str(team_id(sw, team)) / str(job_id)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("data-live")


@pytest.fixture(scope="module")
def hello(sw):
    """alice/hello:1 = {hello.txt}, uploaded through the API."""
    _create(sw, "alice", "alice", "hello")
    v = ok(upload(sw, "alice", "alice", "hello", {"hello.txt": HELLO}), 201)["version"]
    assert (v["number"], v["file_count"], v["size_bytes"]) == (1, 1, len(HELLO)), v
    return v


@pytest.fixture(scope="module")
def job_a(sw, tmp, hello):
    out = _push(sw, tmp, "alice", "first", FIRST_AND_CONTINUED, "input0=alice/hello:1")
    job = _succeeded(sw, job_id_from_push(out.stderr))
    wait_output_kept(sw, "alice", job["id"])
    return job


@pytest.fixture(scope="module")
def job_b(sw, job_a):
    """Job A continued through the API."""
    r = ok(api(sw, "alice", "POST", f"jobs/{job_a['id']}/continue"), 201)
    assert r["continue_of"] == job_a["id"], r
    job = _succeeded(sw, r["job"])
    wait_output_kept(sw, "alice", job["id"])
    return job


# ---------------------------------------------------------------------------------- (1)

def test_job_reads_its_input_and_cannot_write_there(sw, tmp, job_a):
    assert _results_file(sw, tmp, "alice", "first", job_a["id"], "seen.txt").encode() == HELLO
    log = Path(job_a["log"]).read_text()
    assert "input write refused:" in log and "Read-only file system" in log, log
    assert "input write: WROTE" not in log and "input mkdir: MADE" not in log, log
    assert "inputs are not read-only mounts" not in log, log   # a real read-only bind mount
    assert _labels(sw, job_a["id"]) == ["alice/hello:1"]
    # the version's tree is untouched
    tree = sw.data_dir / "datastore" / "repos" / str(repo_id(sw, "alice", "hello")) / "versions" / "1"
    assert sorted(p.name for p in tree.iterdir()) == ["hello.txt"]


# ---------------------------------------------------------------------------------- (2)

def test_output_is_kept_listed_and_downloaded_byte_identical(sw, tmp, job_a):
    jid = job_a["id"]
    out = wait_output_kept(sw, "alice", jid)
    assert {f["path"]: f["size"] for f in out["files"]} == {p: len(b) for p, b in OUTPUT.items()}, out
    assert out["file_count"] == 3 and out["size_bytes"] == sum(map(len, OUTPUT.values())), out
    for path, data in OUTPUT.items():
        r = api(sw, "alice", "GET", f"jobs/{jid}/output/files/{path}")
        assert r.status == 200 and r.body == data, (path, r.status, r.body[:200])
    r = api(sw, "alice", "GET", f"jobs/{jid}/output/archive")
    assert r.status == 200, r.body[:500]
    with tarfile.open(fileobj=io.BytesIO(r.body)) as tar:
        got = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert got == OUTPUT
    # kept on disk, read-only, root-owned
    kept = _kept_dir(sw, "alice", jid)
    for path, data in OUTPUT.items():
        st = (kept / path).stat()
        assert (kept / path).read_bytes() == data and st.st_uid == 0 and st.st_mode & 0o777 == 0o444
    # another team sees nothing
    assert api(sw, "bob", "GET", f"jobs/{jid}/output").status == 404

    # the CLI, remote mode (token), both ways
    env = {**sw.env, "SLIPWAY_URL": sw.url, "SLIPWAY_TOKEN": sw.tokens["alice"]}
    archive, folder = tmp / "a-out.tar", tmp / "a-out"
    for args in (["--archive", str(archive)], ["--download", str(folder)]):
        res = subprocess.run([SLIPWAY, "job", "output", str(jid), *args], env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
    with tarfile.open(archive) as tar:
        got = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert got == OUTPUT
    assert {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == OUTPUT


# ---------------------------------------------------------------------------------- (3)

def test_continued_job_starts_from_the_output_which_stays_unchanged(sw, job_a, job_b):
    assert job_b["commit"] == job_a["commit"] and job_b["branch"] == "first", job_b
    assert "continued run done" in Path(job_b["log"]).read_text()
    b = wait_output_kept(sw, "alice", job_b["id"])
    assert b["continue_from"] == job_a["id"], b
    files = {}
    for f in b["files"]:
        files[f["path"]] = api(sw, "alice", "GET", f"jobs/{job_b['id']}/output/files/{f['path']}").body
    assert files == {"a.txt": b"changed by the continuation\n", "a-before.txt": b"alpha\n",
                     "d.txt": b"new in the continuation\n", "sub/c.bin": C_BIN,
                     "saw.txt": b"./a.txt\n./b.txt\n./sub/c.bin\n"}, files
    # the same bindings as job A
    assert _labels(sw, job_b["id"]) == ["alice/hello:1"]
    # job A's kept output did not change: API and disk, byte for byte
    a = ok(api(sw, "alice", "GET", f"jobs/{job_a['id']}/output"))["output"]
    assert a["state"] == "kept" and {f["path"] for f in a["files"]} == set(OUTPUT), a
    kept = _kept_dir(sw, "alice", job_a["id"])
    assert {str(p.relative_to(kept)): p.read_bytes() for p in kept.rglob("*") if p.is_file()} == OUTPUT
    for path, data in OUTPUT.items():
        assert api(sw, "alice", "GET", f"jobs/{job_a['id']}/output/files/{path}").body == data


# ---------------------------------------------------------------------------------- (4)

def test_version_from_a_job_output_is_bound_by_a_third_job(sw, tmp, job_a):
    _create(sw, "alice", "alice", "from-job")
    v = ok(api(sw, "alice", "POST", "data/alice/from-job/from-job", {"job": job_a["id"]}), 201)["version"]
    assert (v["number"], v["file_count"], v["source_job"]) == (1, 3, job_a["id"]), v
    out = _push(sw, tmp, "alice", "third", READ_VERSION_AND_JOB,
                "input0=alice/from-job", f"input1=job:{job_a['id']}")
    job = _succeeded(sw, job_id_from_push(out.stderr))
    assert _labels(sw, job["id"]) == ["alice/from-job:1", f"job:{job_a['id']}"]
    read = lambda p: _results_file(sw, tmp, "alice", "third", job["id"], p)  # noqa: E731
    assert read("from-version-a.txt") == "alpha\n"
    assert read("from-version-c.sha").strip() == hashlib.sha256(C_BIN).hexdigest()
    assert read("from-job-b.txt") == "beta\n"
    assert read("version-listing.txt").split() == ["a.txt", "b.txt", "sub"]


# ---------------------------------------------------------------------------------- (8)

def test_host_gates_let_in_members_unix_users_only(sw, hello, job_a):
    tree = sw.data_dir / "datastore" / "repos" / str(repo_id(sw, "alice", "hello")) / "versions" / "1"
    bob = as_unix("sw-bob", "cat", str(tree / "hello.txt"))
    assert bob.returncode != 0 and "Permission denied" in bob.stderr, bob
    alice = as_unix("sw-alice", "cat", str(tree / "hello.txt"))
    assert alice.returncode == 0 and alice.stdout == HELLO.decode(), alice
    kept = _kept_dir(sw, "alice", job_a["id"]) / "a.txt"
    bob = as_unix("sw-bob", "cat", str(kept))
    assert bob.returncode != 0 and "Permission denied" in bob.stderr, bob
    alice = as_unix("sw-alice", "cat", str(kept))
    assert alice.returncode == 0 and alice.stdout == "alpha\n", alice
    # a member may read, never write
    alice = as_unix("sw-alice", "sh", "-c", f"echo x >> {tree / 'hello.txt'}")
    assert alice.returncode != 0, alice


# ---------------------------------------------------------------------------------- (5)

def _slipway_lines(text: str) -> list[str]:
    return [line.split("remote: ", 1)[-1] for line in text.splitlines() if "slipway:" in line]


def test_other_team_binds_a_private_dataset_only_once_it_is_public(sw, tmp, hello):
    refused = _push(sw, tmp, "bob", "borrow", READ_HELLO, "input0=alice/hello:1", check=False)
    missing = _push(sw, tmp, "bob", "borrow", READ_HELLO, "input0=alice/hellx:1", check=False)
    assert refused.returncode != 0 and missing.returncode != 0
    assert "input0:" in refused.stderr and "queued (" not in refused.stderr, refused.stderr
    lines = _slipway_lines(refused.stderr)
    assert any("input0: there is no data repository alice/hello" in x for x in lines), refused.stderr
    # the refusal of what exists is the refusal of what does not: nothing leaks
    assert [s.replace("hello", "NAME") for s in _slipway_lines(refused.stderr)] == \
        [s.replace("hellx", "NAME") for s in _slipway_lines(missing.stderr)], (refused.stderr, missing.stderr)
    assert api(sw, "bob", "GET", "data/alice/hello").status == 404
    assert api(sw, "bob", "GET", "data/alice/hello/versions/1/files/hello.txt").status == 404

    sw.cli("data", "public", "alice/hello", "--on")   # cluster administrator (the operator)
    out = _push(sw, tmp, "bob", "borrow", READ_HELLO, "input0=alice/hello:1")
    job = _succeeded(sw, job_id_from_push(out.stderr))
    assert _results_file(sw, tmp, "bob", "borrow", job["id"], "seen.txt").encode() == HELLO
    r = api(sw, "bob", "GET", "data/alice/hello/versions/1/files/hello.txt")
    assert r.status == 200 and r.body == HELLO


# ---------------------------------------------------------------------------------- (6)

def test_storage_charge_of_a_data_version_is_on_the_ledger(sw, hello):
    deadline = time.monotonic() + 90        # the first whole minute after the version was made
    while True:
        rows = list(csv.DictReader(io.StringIO(sw.cli("team", "ledger", "alice", "--csv").stdout)))
        mine = [r for r in rows if r["kind"] == "storage" and r["resource"] == "data:alice/hello:1"]
        if mine:
            break
        assert time.monotonic() < deadline, [r for r in rows if r["kind"] == "storage"]
        time.sleep(1)
    assert int(mine[0]["bytes"]) == len(HELLO), mine
    assert int(mine[0]["to_minute"]) > int(mine[0]["from_minute"]), mine


# ---------------------------------------------------------------------------------- (7)

def test_team_over_its_storage_quota_is_refused(sw, tmp):
    _create(sw, "bob", "bob", "weights")
    ok(upload(sw, "bob", "bob", "weights", {"w.bin": os.urandom(4000)}), 201)
    sw.cli("team", "storage", "bob", "--quota", "5000")
    # an upload that would pass the quota: 413, usage, quota and what to delete
    r = upload(sw, "bob", "bob", "weights", {"w2.bin": os.urandom(2000)})
    assert r.status == 413, (r.status, r.body)
    msg = r.json()["error"]
    assert "over its storage quota" in msg and "bob/weights" in msg, msg
    # one that fits still goes in
    ok(upload(sw, "bob", "bob", "weights", {"small.bin": os.urandom(500)}), 201)
    # over the quota (lowered below what is used): a push starts no job
    sw.cli("team", "storage", "bob", "--quota", "1000")
    out = _push(sw, tmp, "bob", "over", READ_HELLO, check=False)
    assert out.returncode != 0 and "over its storage quota" in out.stderr, out.stderr
    assert "queued (" not in out.stderr
    sw.cli("team", "storage", "bob", "--quota", "none")
