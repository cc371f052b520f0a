"""git-lfs through GitHttpApp, and memory of the server process on 50 MB pushes."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from git_gateway import repos
from git_gateway.lfs import MEDIA_TYPE
from tests.support.git_server import Gateway, HookRecorder, client_env, git, serve

pytestmark = pytest.mark.timeout(300)
MB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture
def server_proc(tmp_path):
    """GitHttpApp in its own process (so its RSS is its own), hooks recorded here."""
    rec = HookRecorder("s3cret")
    with serve(rec) as hook_base:
        repos_root, lfs_root = tmp_path / "repos", tmp_path / "lfs"
        repos.create_repo(repos_root, "team", "proj")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.git_server", "--repos", str(repos_root),
             "--lfs", str(lfs_root), "--hook-url", hook_base + "/hook", "--hook-secret", "s3cret",
             "--user", "alice:pw"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("PORT "), line
            port = int(line.split()[1])
            yield {"proc": proc, "base": f"http://127.0.0.1:{port}", "recorder": rec,
                   "repos": repos_root, "lfs": lfs_root,
                   "url": f"http://alice:pw@127.0.0.1:{port}/git/team/proj.git"}
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _random_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MB))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MB), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.slow
def test_50mb_through_lfs_then_clone(server_proc, tmp_path):
    env = client_env(tmp_path / "home")
    git(tmp_path, "lfs", "install", env=env)        # into the test HOME's global config
    work = tmp_path / "w"
    work.mkdir()
    git(work, "init", "-q", env=env)
    git(work, "lfs", "track", "*.bin", env=env)
    (work / "slipway-entrypoint.sh").write_text("echo\n")
    digest = _random_file(work / "data.bin", 50 * MB)
    git(work, "add", "-A", env=env)
    git(work, "commit", "-qm", "data", env=env)

    pid = server_proc["proc"].pid
    # warm up (imports, first request) before the baseline
    git(tmp_path, "ls-remote", server_proc["url"], env=env)
    rss0 = _status_kib(pid, "VmRSS")
    t0 = time.monotonic()
    r = git(work, "push", server_proc["url"], "HEAD:refs/heads/main", env=env)
    push_s = time.monotonic() - t0
    hwm = _status_kib(pid, "VmHWM")
    stored = repos.lfs_path(server_proc["lfs"], "team", "proj") / digest[:2] / digest[2:4] / digest
    assert stored.stat().st_size == 50 * MB
    assert "Locking support detected" not in r.stderr and "locksverify" not in r.stderr

    clone = tmp_path / "c"
    t1 = time.monotonic()
    git(tmp_path, "clone", "-q", server_proc["url"], str(clone), env=env)
    clone_s = time.monotonic() - t1
    hwm2 = _status_kib(pid, "VmHWM")
    assert _sha256(clone / "data.bin") == digest
    usage = repos.disk_usage(server_proc["repos"], "team", "proj", server_proc["lfs"])
    assert usage.lfs_bytes == 50 * MB and usage.git_bytes < 1 * MB
    print(f"\nLFS 50 MB: push {push_s:.2f} s, clone {clone_s:.2f} s; server RSS before "
          f"{rss0 / 1024:.1f} MiB, peak after push {hwm / 1024:.1f} MiB "
          f"(+{(hwm - rss0) / 1024:.1f} MiB), peak after clone {hwm2 / 1024:.1f} MiB")


@pytest.mark.slow
def test_50mb_plain_git_push_keeps_server_flat(server_proc, tmp_path):
    env = client_env(tmp_path / "home")
    work = tmp_path / "w"
    work.mkdir()
    git(work, "init", "-q", env=env)
    (work / "slipway-entrypoint.sh").write_text("echo\n")
    digest = _random_file(work / "raw.bin", 50 * MB)
    git(work, "add", "-A", env=env)
    git(work, "commit", "-qm", "raw", env=env)
    pid = server_proc["proc"].pid
    git(tmp_path, "ls-remote", server_proc["url"], env=env)
    rss0 = _status_kib(pid, "VmRSS")
    t0 = time.monotonic()
    git(work, "push", "-q", server_proc["url"], "HEAD:refs/heads/main", env=env)
    push_s = time.monotonic() - t0
    hwm = _status_kib(pid, "VmHWM")
    clone = tmp_path / "c"
    git(tmp_path, "clone", "-q", server_proc["url"], str(clone), env=env)
    hwm2 = _status_kib(pid, "VmHWM")
    assert _sha256(clone / "raw.bin") == digest
    print(f"\nplain git 50 MB (chunked request): push {push_s:.2f} s; server RSS before "
          f"{rss0 / 1024:.1f} MiB, peak after push {hwm / 1024:.1f} MiB "
          f"(+{(hwm - rss0) / 1024:.1f} MiB), after clone {hwm2 / 1024:.1f} MiB")


def _req(method, url, body=None, auth=b"alice:alice-pw", headers=None):
    req = urllib.request.Request(url, data=body, method=method)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth).decode())
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_lfs_api_shapes(tmp_path):
    with Gateway(tmp_path / "srv", max_lfs_object_bytes=1000) as gw:
        gw.create()
        lfs = gw.url() + "/info/lfs"
        data = b"hello lfs\n"
        oid = hashlib.sha256(data).hexdigest()
        batch = lambda op, objs, auth=b"alice:alice-pw": _req(  # noqa: E731
            "POST", lfs + "/objects/batch", json.dumps(
                {"operation": op, "transfers": ["basic"], "objects": objs}).encode(), auth=auth,
            headers={"Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE})

        st, h, _ = batch("upload", [{"oid": oid, "size": len(data)}], auth=None)
        assert st == 401 and h["Content-Type"] == MEDIA_TYPE and "Basic" in h["LFS-Authenticate"]
        st, h, body = batch("upload", [{"oid": oid, "size": len(data)},
                                       {"oid": "f" * 64, "size": 5000},
                                       {"oid": "nothex", "size": 1}])
        assert st == 200 and h["Content-Type"] == MEDIA_TYPE
        objs = json.loads(body)["objects"]
        assert json.loads(body)["transfer"] == "basic"
        up = objs[0]["actions"]["upload"]
        assert up["href"] == f"{lfs}/objects/{oid}"
        assert up["header"]["Authorization"].startswith("Basic ")
        assert objs[1]["error"]["code"] == 422 and "limit" in objs[1]["error"]["message"]
        assert objs[2]["error"]["code"] == 422

        # wrong content for the oid is refused and nothing is stored
        st, h, body = _req("PUT", up["href"], b"tampered!!", headers={
            "Content-Type": "application/octet-stream"})
        assert st == 422 and h["Content-Type"] == MEDIA_TYPE and "sha256" in json.loads(body)["message"]
        st, _, _ = _req("PUT", up["href"], data, headers={"Content-Type": "application/octet-stream"})
        assert st == 200
        # too large PUT is refused with the LFS error shape
        big = b"z" * 2000
        st, h, body = _req("PUT", f"{lfs}/objects/{hashlib.sha256(big).hexdigest()}", big)
        assert st == 413 and "limit" in json.loads(body)["message"]

        st, _, body = batch("upload", [{"oid": oid, "size": len(data)}])
        assert "actions" not in json.loads(body)["objects"][0]      # already there
        st, _, body = batch("download", [{"oid": oid, "size": len(data)},
                                         {"oid": "e" * 64, "size": 3}])
        objs = json.loads(body)["objects"]
        st, _, got = _req("GET", objs[0]["actions"]["download"]["href"])
        assert st == 200 and got == data
        assert objs[1]["error"]["code"] == 404
        st, _, body = _req("POST", lfs + "/locks/verify", b"{}",
                           headers={"Content-Type": MEDIA_TYPE})
        assert st == 200 and json.loads(body) == {"ours": [], "theirs": []}
        # unknown repository -> 404 in LFS shape
        st, h, body = _req("POST", gw.url("team", "nope") + "/info/lfs/objects/batch",
                           json.dumps({"operation": "download", "objects": []}).encode())
        assert st == 404 and h["Content-Type"] == MEDIA_TYPE
        # read-only principal cannot upload: authenticate() gets write=True for uploads
        seen = []
        inner = gw.app.authenticate

        def spy(key, user, pw, write):
            seen.append(write)
            return inner(key, user, pw, write)
        gw.app.authenticate = spy
        batch("download", [])
        batch("upload", [])
        assert seen == [False, True]
