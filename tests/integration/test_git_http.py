"""git_gateway over real HTTP with real git clients (no mocks of git)."""
from __future__ import annotations

import base64
import concurrent.futures
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from git_gateway import repos
from tests.support.git_server import Gateway, client_env, git

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def gw(tmp_path):
    with Gateway(tmp_path / "srv") as g:
        g.create("team", "proj")
        yield g


@pytest.fixture
def env(tmp_path):
    return client_env(tmp_path / "home")


def make_work(path: Path, env, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", env=env)
    for name, content in (files or {"slipway-entrypoint.sh": "echo hello\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    git(path, "add", "-A", env=env)
    git(path, "commit", "-qm", "initial", env=env)
    return path


def head(path: Path, env) -> str:
    return git(path, "rev-parse", "HEAD", env=env).stdout.strip()


def test_push_clone_pull_with_token_auth(gw, env, tmp_path):
    work = make_work(tmp_path / "w", env)
    url = gw.url(user="alice")
    r = git(work, "push", url, "HEAD:refs/heads/exp-1", env=env)
    assert "[new branch]" in r.stderr
    assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/exp-1") == head(work, env)

    clone = tmp_path / "c"
    git(tmp_path, "clone", "-q", "-b", "exp-1", url, str(clone), env=env)
    assert (clone / "slipway-entrypoint.sh").read_text() == "echo hello\n"

    (work / "more.txt").write_text("more\n")
    git(work, "add", "-A", env=env)
    git(work, "commit", "-qm", "more", env=env)
    git(work, "push", "-q", url, "HEAD:refs/heads/exp-1", env=env)
    git(clone, "pull", "-q", "--ff-only", env=env)
    assert (clone / "more.txt").read_text() == "more\n"

    # hooks saw the pusher, both phases
    pre = gw.recorder.phase("pre-receive")
    assert pre and all(c["pusher"] == "alice" and c["repo"] == "team/proj" for c in pre)
    assert pre[0]["pusher_is_job"] is False
    assert pre[0]["updates"][0]["ref"] == "refs/heads/exp-1"
    assert pre[0]["updates"][0]["old"] == "0" * 40
    assert len(gw.recorder.phase("post-receive")) == 2
    assert gw.recorder.bad_secret == 0


def test_protocol_v0_and_v2_both_work(gw, env, tmp_path):
    work = make_work(tmp_path / "w", env)
    git(work, "push", "-q", gw.url(user="alice"), "HEAD:refs/heads/main", env=env)
    for version in ("0", "2"):
        dst = tmp_path / f"c{version}"
        r = git(tmp_path, "-c", f"protocol.version={version}", "clone", "-q", gw.url(user="alice"),
                str(dst), env=dict(env, GIT_TRACE_PACKET="1"))
        assert (dst / "slipway-entrypoint.sh").exists()
        if version == "2":
            assert "version 2" in r.stderr


def test_wrong_password_is_401_and_git_fails(gw, env, tmp_path):
    r = git(tmp_path, "clone", gw.url(user="alice", password="nope"), str(tmp_path / "c"),
            env=env, check=False)
    assert r.returncode != 0
    assert "Authentication failed" in r.stderr or "401" in r.stderr

    req = urllib.request.Request(gw.url() + "/info/refs?service=git-upload-pack")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401
    assert e.value.headers["WWW-Authenticate"] == 'Basic realm="Slipway"'

    req.add_header("Authorization", "Basic " + base64.b64encode(b"alice:wrong").decode())
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401


def test_unknown_repo_and_no_access_are_404(tmp_path, env):
    with Gateway(tmp_path / "srv", access={"alice": {"team/proj"}, "bob": set()}) as gw:
        gw.create("team", "proj")
        for project, cred in (("nope", b"alice:alice-pw"), ("proj", b"bob:bob-pw")):
            req = urllib.request.Request(gw.url("team", project) + "/info/refs?service=git-upload-pack")
            req.add_header("Authorization", "Basic " + base64.b64encode(cred).decode())
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=10)
            assert e.value.code == 404
        r = git(tmp_path, "clone", gw.url("team", "proj", user="bob"), str(tmp_path / "c"),
                env=env, check=False)
        assert r.returncode != 0 and "not found" in r.stderr.lower()
        # paths outside the smart protocol are not served (no dumb HTTP)
        req = urllib.request.Request(gw.url() + "/HEAD")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 404


def test_pre_receive_refusal_keeps_branch_and_shows_message(tmp_path, env):
    def decide(p):
        if p["phase"] == "pre-receive" and any(u["ref"].endswith("/refused") for u in p["updates"]):
            return {"ok": False, "messages": ["slipway: no entrypoint, no job", "second line"]}
        return {"ok": True, "messages": ["slipway: job 7 queued (a4000 x2)"]}

    with Gateway(tmp_path / "srv", decide=decide) as gw:
        gw.create()
        work = make_work(tmp_path / "w", env)
        url = gw.url(user="alice")
        git(work, "push", "-q", url, "HEAD:refs/heads/refused", "HEAD:refs/heads/ok", env=env,
            check=False)
        ok = git(work, "push", url, "HEAD:refs/heads/ok2", env=env)
        assert "remote: slipway: job 7 queued (a4000 x2)" in ok.stderr
        r = git(work, "push", url, "HEAD:refs/heads/refused", env=env, check=False)
        assert r.returncode != 0
        assert "remote: slipway: no entrypoint, no job" in r.stderr
        assert "remote: second line" in r.stderr
        assert "pre-receive hook declined" in r.stderr
        assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/refused") is None
        # an existing branch stays where it was
        (work / "x").write_text("x")
        git(work, "add", "-A", env=env)
        git(work, "commit", "-qm", "x", env=env)
        before = repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/ok2")
        r = git(work, "push", url, "HEAD:refs/heads/ok2", "HEAD:refs/heads/refused",
                env=env, check=False)
        assert r.returncode != 0
        assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/ok2") == before


def test_unreachable_callback_refuses_push(tmp_path, env):
    with Gateway(tmp_path / "srv") as gw:
        gw.create()
        gw.app.hook_url = "http://127.0.0.1:9/unreachable"
        work = make_work(tmp_path / "w", env)
        r = git(work, "push", gw.url(user="alice"), "HEAD:refs/heads/x", env=env, check=False)
        assert r.returncode != 0
        assert "remote: slipway: the Slipway server is unavailable, try again" in r.stderr
        assert repos.resolve_ref(gw.repos_root, "team", "proj", "refs/heads/x") is None


def test_push_options_and_entrypoint_check_in_quarantine(tmp_path, env):
    seen = {}

    def decide(p):
        if p["phase"] == "pre-receive":
            u = p["updates"][0]
            # what the portal does: look inside the pushed commit while it is quarantined
            seen["check"] = repos.check_entrypoint(gw.repos_root, "team", "proj", u["new"],
                                                   quarantine=p.get("quarantine"))
            seen["content"] = repos.read_file(gw.repos_root, "team", "proj", u["new"],
                                              "slipway-entrypoint.sh",
                                              quarantine=p.get("quarantine"))
            seen["without_quarantine"] = repos.tree_entry(gw.repos_root, "team", "proj",
                                                          u["new"], "slipway-entrypoint.sh")
            return {"ok": seen["check"] is None, "messages": [seen["check"] or "slipway: ok"]}
        return {"ok": True, "messages": []}

    with Gateway(tmp_path / "srv", decide=decide) as gw:
        gw.create()
        work = make_work(tmp_path / "w", env, {"slipway-entrypoint.sh": "python train.py\n"})
        r = git(work, "push", "-o", "gpus=a6000:1", "-o", "time=30m", gw.url(user="alice"),
                "HEAD:refs/heads/exp", env=env)
        assert "remote: slipway: ok" in r.stderr
        assert seen["check"] is None
        assert seen["content"] == b"python train.py\n"
        assert seen["without_quarantine"] is None  # invisible without the quarantine path
        for c in gw.recorder.calls:
            assert c["push_options"] == ["gpus=a6000:1", "time=30m"]

        # a symlink entrypoint is refused with a clear message
        work2 = tmp_path / "w2"
        make_work(work2, env, {"README": "x"})
        (work2 / "slipway-entrypoint.sh").symlink_to("README")
        git(work2, "add", "-A", env=env)
        git(work2, "commit", "-qm", "link", env=env)
        r = git(work2, "push", gw.url(user="alice"), "HEAD:refs/heads/link", env=env, check=False)
        assert r.returncode != 0
        assert "is a symlink; it must be a regular file" in r.stderr


def test_job_pusher_is_marked(gw, env, tmp_path):
    work = make_work(tmp_path / "w", env)
    git(work, "push", "-q", gw.url(user="job:42"), "HEAD:refs/heads/results/main/42", env=env)
    c = gw.recorder.phase("pre-receive")[-1]
    assert c["pusher"] == "job:42" and c["pusher_is_job"] is True


def test_concurrent_pushes(gw, env, tmp_path):
    work = make_work(tmp_path / "w", env)
    git(work, "push", "-q", gw.url(user="alice"), "HEAD:refs/heads/main", env=env)

    def one(i):
        d = tmp_path / f"p{i}"
        git(tmp_path, "clone", "-q", gw.url(user="alice"), str(d), env=env)
        (d / f"f{i}.txt").write_text(f"{i}\n" * 1000)
        git(d, "add", "-A", env=env)
        git(d, "commit", "-qm", f"c{i}", env=env)
        git(d, "push", "-q", "origin", f"HEAD:refs/heads/b{i}", env=env)
        return head(d, env)

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        shas = list(ex.map(one, range(6)))
    for i, sha in enumerate(shas):
        assert repos.resolve_ref(gw.repos_root, "team", "proj", f"refs/heads/b{i}") == sha
    assert len(gw.recorder.phase("post-receive")) == 7


def test_repo_lifecycle_and_usage(tmp_path, env):
    root, lfs = tmp_path / "repos", tmp_path / "lfs"
    p = repos.create_repo(root, "team", "proj")
    assert p == root / "team" / "proj.git"
    cfg = git(p, "config", "--list", "--local", env=env).stdout
    for k, v in repos.REPO_CONFIG:
        assert f"{k.lower()}={v}" in cfg
    assert (p / "hooks" / "pre-receive").stat().st_mode & 0o111
    with pytest.raises(repos.RepoExists):
        repos.create_repo(root, "team", "proj")
    repos.create_repo(root, "team", "proj", exist_ok=True)
    (lfs / "team" / "proj" / "ab" / "cd").mkdir(parents=True)
    (lfs / "team" / "proj" / "ab" / "cd" / ("abcd" + "0" * 60)).write_bytes(b"x" * 1000)
    u = repos.disk_usage(root, "team", "proj", lfs)
    assert u.lfs_bytes == 1000 and u.git_bytes > 0 and u.total_bytes == u.git_bytes + 1000
    assert repos.delete_repo(root, "team", "proj", lfs)
    assert not p.exists() and not (lfs / "team" / "proj").exists()
    assert not repos.delete_repo(root, "team", "proj", lfs)


def test_client_disconnect_does_not_leak_backend(gw, env, tmp_path):
    work = make_work(tmp_path / "w", env, {"slipway-entrypoint.sh": "x\n",
                                           "big.bin": "y" * 3_000_000})
    git(work, "push", "-q", gw.url(user="alice"), "HEAD:refs/heads/main", env=env)
    before = threading.active_count()
    for _ in range(3):
        r = git(tmp_path, "clone", "-q", gw.url(user="alice"), str(tmp_path / "c"), env=env,
                check=False, timeout=60)
        assert r.returncode == 0
        import shutil
        shutil.rmtree(tmp_path / "c")
    assert threading.active_count() <= before + 2


def test_gzip_request_bodies(gw, env, tmp_path):
    """git gzips upload-pack requests over 1 KiB (here: 40 'want' lines): http-backend inflates."""
    work = make_work(tmp_path / "w", env)
    git(work, "push", "-q", gw.url(user="alice"), "HEAD:refs/heads/main", env=env)
    a = tmp_path / "a"
    git(tmp_path, "clone", "-q", gw.url(user="alice"), str(a), env=env)
    for version in ("0", "2"):
        specs = []
        for i in range(40):
            git(work, "commit", "-q", "--allow-empty", "-m", f"v{version} {i}", env=env)
            specs.append(f"HEAD:refs/heads/v{version}-{i}")
        git(work, "push", "-q", gw.url(user="alice"), *specs, env=env)
        r = git(a, "-c", f"protocol.version={version}", "fetch", "origin",
                f"+refs/heads/v{version}-*:refs/remotes/origin/v{version}-*",
                env=dict(env, GIT_TRACE_CURL="1", GIT_TRACE_CURL_NO_DATA="1"))
        assert "Content-Encoding: gzip" in r.stderr
        assert git(a, "log", "-1", "--format=%s", f"origin/v{version}-39", env=env).stdout == \
            f"v{version} 39\n"
