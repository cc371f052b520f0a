"""results.commit_back against a real GitHttpApp over HTTP."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from git_gateway import repos
from git_gateway.node import gitops, results
from git_gateway.node.runner import Runner
from git_gateway.node.spec import RunnerSpec
from tests.support.git_server import Gateway, client_env, git

pytestmark = pytest.mark.timeout(180)
MB = 1 << 20


@pytest.fixture
def gw(tmp_path):
    with Gateway(tmp_path / "srv") as g:
        g.create()
        yield g


@pytest.fixture
def env(tmp_path):
    e = client_env(tmp_path / "home")
    git(tmp_path, "lfs", "install", env=e)
    return e


def user_push(gw, env, work: Path, branch: str, files=None) -> str:
    if not work.exists():
        work.mkdir(parents=True)
        git(work, "init", "-q", env=env)
        git(work, "remote", "add", "origin", gw.url(user="alice"), env=env)
    for name, content in (files or {"slipway-entrypoint.sh": "echo run\n",
                                    "keep.txt": "keep\n", "gone.txt": "gone\n"}).items():
        (work / name).write_text(content)
    git(work, "add", "-A", env=env)
    git(work, "commit", "-qm", "user commit", env=env)
    git(work, "push", "-q", "origin", f"HEAD:refs/heads/{branch}", env=env)
    return git(work, "rev-parse", "HEAD", env=env).stdout.strip()


def job_checkout(gw, workdir: Path, sha: str, branch: str) -> RunnerSpec:
    spec = RunnerSpec.from_dict({
        "job_id": 42, "repo_url": gw.url(), "username": "job:42", "token": "job-token",
        "commit": sha, "branch": branch, "workdir": str(workdir),
        "container_argv": ["true"]})
    Runner(spec).checkout()
    return spec


def do_commit_back(gw, workdir, sha, branch, **kw):
    return results.commit_back(workdir, repo_url=gw.url(), username="job:42", token="job-token",
                               branch=branch, job_id=42, pushed_sha=sha,
                               exit_code=kw.pop("exit_code", 0), **kw)


def ref(gw, name):
    return repos.resolve_ref(gw.repos_root, "team", "proj", name)


def test_commit_back_pushes_results_ref_and_branch_with_lfs(gw, env, tmp_path):
    sha = user_push(gw, env, tmp_path / "u", "exp-1")
    wd = tmp_path / "job" / "work"
    job_checkout(gw, wd, sha, "exp-1")
    assert git(wd, "rev-parse", "HEAD", env=env).stdout.strip() == sha
    assert (wd / "keep.txt").read_text() == "keep\n"
    # the token is in no file of the checkout
    for p in (wd / ".git").rglob("*"):
        if p.is_file():
            assert b"job-token" not in p.read_bytes(), p

    (wd / "keep.txt").write_text("changed\n")
    (wd / "gone.txt").unlink()
    (wd / "out").mkdir()
    (wd / "out" / "metrics.json").write_text('{"loss": 0.1}\n')
    big = os.urandom(2 * MB)
    (wd / "out" / "model weights [v1].bin").write_bytes(big)
    (wd / "ünï *.bin").write_bytes(big[: MB + 10])
    (wd / "small.bin").write_bytes(b"s" * 100)

    res = do_commit_back(gw, wd, sha, "exp-1", author_name="Slipway Bot",
                         author_email="bot@slipway")
    assert res.changed and res.results_pushed and res.branch_updated, res.message
    assert res.results_ref == "refs/heads/results/exp-1/42"
    assert ref(gw, "refs/heads/results/exp-1/42") == res.sha == ref(gw, "refs/heads/exp-1")
    assert sorted(res.lfs_paths) == ["out/model weights [v1].bin", "ünï *.bin"]
    print(f"\ncommit_back (2 LFS files, 2 pushes): {res.seconds:.2f} s")
    assert res.event() == {"event": "results", "results_ref": "refs/heads/results/exp-1/42",
                           "sha": res.sha, "branch_updated": True, "message": res.message}

    # the user pulls the results home: content, LFS, deletions, message, author
    u = tmp_path / "u"
    git(u, "pull", "-q", "--ff-only", "origin", "exp-1", env=env)
    assert (u / "keep.txt").read_text() == "changed\n"
    assert not (u / "gone.txt").exists()
    assert (u / "out" / "model weights [v1].bin").read_bytes() == big
    assert (u / "ünï *.bin").read_bytes() == big[: MB + 10]
    lfs_files = git(u, "lfs", "ls-files", "-n", env=env).stdout.splitlines()
    assert sorted(lfs_files) == ["out/model weights [v1].bin", "ünï *.bin"]
    log = git(u, "log", "-1", "--format=%s%n%an <%ae>%n%b", env=env).stdout
    assert log.startswith("slipway: results of job 42 (exit 0)\nSlipway Bot <bot@slipway>")
    assert "Slipway-Job: 42" in log
    # the job's pushes were made as the job principal (never start jobs)
    pre = gw.recorder.phase("pre-receive")[-2:]
    assert all(c["pusher"] == "job:42" and c["pusher_is_job"] for c in pre)
    assert [c["updates"][0]["ref"] for c in pre] == ["refs/heads/results/exp-1/42",
                                                      "refs/heads/exp-1"]


def test_user_pushed_meanwhile_branch_refused_both_survive(gw, env, tmp_path):
    sha = user_push(gw, env, tmp_path / "u", "exp-1")
    wd = tmp_path / "work"
    job_checkout(gw, wd, sha, "exp-1")
    newer = user_push(gw, env, tmp_path / "u", "exp-1", {"keep.txt": "user moved on\n"})
    (wd / "result.txt").write_text("42\n")
    res = do_commit_back(gw, wd, sha, "exp-1", exit_code=3)
    assert res.changed and res.results_pushed and not res.branch_updated
    assert "moved since job 42 started" in res.message and "results/exp-1/42" in res.message
    assert ref(gw, "refs/heads/exp-1") == newer
    assert ref(gw, "refs/heads/results/exp-1/42") == res.sha
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", gw.url(user="alice"), str(c), env=env)
    git(c, "fetch", "-q", "origin", "results/exp-1/42", env=env)
    assert git(c, "show", "FETCH_HEAD:result.txt", env=env).stdout == "42\n"
    assert git(c, "log", "-1", "--format=%s", "FETCH_HEAD", env=env).stdout.strip() == \
        "slipway: results of job 42 (exit 3)"
    assert git(c, "show", "origin/exp-1:keep.txt", env=env).stdout == "user moved on\n"
    # and the two histories share the pushed commit: a merge brings both together
    assert git(c, "merge-base", "FETCH_HEAD", "origin/exp-1", env=env).stdout.strip() == sha


def test_nothing_changed_points_results_ref_at_pushed_commit(gw, env, tmp_path):
    sha = user_push(gw, env, tmp_path / "u", "exp-1")
    wd = tmp_path / "work"
    job_checkout(gw, wd, sha, "exp-1")
    res = do_commit_back(gw, wd, sha, "exp-1")
    assert not res.changed and res.results_pushed and not res.branch_updated
    assert res.sha == sha == ref(gw, "refs/heads/results/exp-1/42") == ref(gw, "refs/heads/exp-1")
    assert "changed no files" in res.message


def test_requeued_attempt_builds_on_the_earlier_attempt(gw, env, tmp_path):
    sha = user_push(gw, env, tmp_path / "u", "exp-1")
    wd = tmp_path / "work"
    job_checkout(gw, wd, sha, "exp-1")
    (wd / "a.txt").write_text("attempt 1\n")
    first = do_commit_back(gw, wd, sha, "exp-1", exit_code=143, signal="TERM")
    assert first.branch_updated
    runner = Runner(job_checkout(gw, wd, sha, "exp-1"))   # requeue: same workdir and spec
    runner.checkout()
    assert runner.attempt == 3 and runner.base == first.sha    # resumes from attempt 1's work
    assert (wd / "a.txt").read_text() == "attempt 1\n"
    (wd / "a.txt").write_text("attempt 2\n")
    second = runner.commit_back(0, None)
    # the branch holds attempt 1's results (put there by this job): a fast-forward, not "moved"
    assert second.results_pushed and second.branch_updated, second.message
    assert ref(gw, "refs/heads/results/exp-1/42") == second.sha == ref(gw, "refs/heads/exp-1")
    assert git(wd, "rev-parse", f"{second.sha}^", env=env).stdout.strip() == first.sha


class FlakyProxy:
    """A TCP proxy on a fixed port in front of the gateway: ``down()`` closes it (connections
    are refused, as when Slipway is not running), ``up()`` listens on the same port again."""

    def __init__(self, target: str):
        import socket
        self.target = ("127.0.0.1", int(target.rsplit(":", 1)[1]))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.sock = None
        self.conns = []
        self.accepted = 0
        self.up()

    def url(self, gw) -> str:
        return gw.url().replace(gw.base_url, f"http://127.0.0.1:{self.port}")

    def up(self):
        import socket
        import threading
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self):
        import socket
        sock, self.sock = self.sock, None
        try:
            sock.shutdown(socket.SHUT_RDWR)     # wakes the accept() thread (close alone does not)
        except OSError:
            pass
        sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.conns.clear()

    def _accept(self, sock):
        import socket
        import threading
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            if self.sock is not sock:            # went down while accepting
                client.close()
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        import socket
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_commit_back_waits_out_a_short_outage(gw, env, tmp_path):
    import threading
    import time
    sha = user_push(gw, env, tmp_path / "u", "exp-1")
    wd = tmp_path / "work"
    job_checkout(gw, wd, sha, "exp-1")
    (wd / "r.txt").write_text("result\n")
    proxy = FlakyProxy(gw.base_url)
    proxy.down()                                   # Slipway is unreachable when the job ends
    threading.Timer(4.0, proxy.up).start()         # ... and back 4 s later
    t0 = time.monotonic()
    res = results.commit_back(wd, repo_url=proxy.url(gw), username="job:42", token="job-token",
                              branch="exp-1", job_id=42, pushed_sha=sha, exit_code=0,
                              retry_seconds=60)
    took = time.monotonic() - t0
    print(f"\ncommit_back through a 4 s outage: {took:.2f} s")
    assert res.results_pushed and res.branch_updated, res.message
    assert ref(gw, "refs/heads/results/exp-1/42") == res.sha == ref(gw, "refs/heads/exp-1")
    assert 4.0 <= took < 4.0 + 15 + 5            # waited, then pushed on a retry
    proxy.down()


def test_outage_longer_than_the_retries_keeps_the_commit_for_a_requeue(gw, env, tmp_path):
    import time
    sha = user_push(gw, env, tmp_path / "u", "exp-1")
    wd = tmp_path / "work"
    job_checkout(gw, wd, sha, "exp-1")
    (wd / "r.txt").write_text("result\n")
    proxy = FlakyProxy(gw.base_url)
    proxy.down()
    t0 = time.monotonic()
    res = results.commit_back(wd, repo_url=proxy.url(gw), username="job:42", token="job-token",
                              branch="exp-1", job_id=42, pushed_sha=sha, exit_code=0,
                              retry_seconds=2)
    assert time.monotonic() - t0 < 10              # bounded
    assert res.changed and not res.results_pushed and not res.branch_updated
    assert "could not push the results of job 42" in res.message
    assert "kept in the job's checkout" in res.message
    # nothing was thrown away: the commit is HEAD and under refs/slipway/results
    assert git(wd, "rev-parse", "HEAD", env=env).stdout.strip() == res.sha
    assert git(wd, "rev-parse", "refs/slipway/results", env=env).stdout.strip() == res.sha
    assert ref(gw, "refs/heads/results/exp-1/42") is None and ref(gw, "refs/heads/exp-1") == sha

    proxy.up()                                     # Slipway is back; Slurm requeues the job
    spec = RunnerSpec.from_dict({
        "job_id": 42, "repo_url": proxy.url(gw), "username": "job:42", "token": "job-token",
        "commit": sha, "branch": "exp-1", "workdir": str(wd), "container_argv": ["true"]})
    runner = Runner(spec)
    runner.checkout()
    assert ref(gw, "refs/heads/results/exp-1/42") == res.sha      # pushed before the run
    assert runner.base == res.sha and (wd / "r.txt").read_text() == "result\n"
    final = runner.commit_back(0, None)
    assert final.results_pushed and final.branch_updated, final.message
    assert final.sha == res.sha == ref(gw, "refs/heads/exp-1")    # nothing new: same commit
    proxy.down()


def test_results_ref_and_branch_are_pushed_independently(tmp_path):
    """A refused results ref does not stop the branch push (and both outcomes are reported)."""
    def decide(p):
        if any(u["ref"].startswith("refs/heads/results/") for u in p["updates"]):
            return {"ok": False, "messages": ["slipway: results refs are read-only today"]}
        return {"ok": True, "messages": []}

    with Gateway(tmp_path / "srv", decide=decide) as gw:
        gw.create()
        env = client_env(tmp_path / "home")
        sha = user_push(gw, env, tmp_path / "u", "exp-1")
        wd = tmp_path / "work"
        job_checkout(gw, wd, sha, "exp-1")
        (wd / "r.txt").write_text("result\n")
        res = do_commit_back(gw, wd, sha, "exp-1", retry_seconds=1)
        assert not res.results_pushed and res.branch_updated, res.message
        assert ref(gw, "refs/heads/exp-1") == res.sha
        assert ref(gw, "refs/heads/results/exp-1/42") is None
        assert f"pushed to exp-1 as {res.sha[:12]}" in res.message
        assert "results/exp-1/42 could not be pushed" in res.message
        assert "pre-receive hook declined" in res.message


HOSTILE_OK = [
    "feat/$(touch${IFS}pwned)",
    "a;b",
    "a|b&c`id`",
    "quote'd\"x",
    "ünïcødé/ブランチ",
    "long/" + "y" * 200,
    "--force",            # only as a path component after refs/heads/: never an option
]
HOSTILE_BAD = ["feat/$(touch x)", "a..b", "a b", "x.lock", "-x", "a~b", "a^b", "a:b", "a\\b",
               "a\nb", "", "ends/", "@{1}", "a?b", "a*b", "a[b"]


def test_hostile_branch_names(gw, env, tmp_path):
    assert not os.path.exists("pwned")
    for i, branch in enumerate(HOSTILE_OK):
        if branch.startswith("-"):
            branch = "x/" + branch
        gitops.validate_branch(branch)
        u = tmp_path / f"u{i}"
        sha = user_push(gw, env, u, branch)
        wd = tmp_path / f"w{i}"
        job_checkout(gw, wd, sha, branch)
        (wd / "out.txt").write_text(branch)
        res = do_commit_back(gw, wd, sha, branch)
        assert res.branch_updated, (branch, res.message)
        assert ref(gw, f"refs/heads/{branch}") == res.sha
        assert ref(gw, f"refs/heads/results/{branch}/42") == res.sha
        # the hook callback got the exact name
        names = {up["ref"] for c in gw.recorder.calls for up in c["updates"]}
        assert f"refs/heads/{branch}" in names
    for d in (Path.cwd(), tmp_path, *tmp_path.iterdir()):
        assert not (d / "pwned").exists()
    for branch in HOSTILE_BAD:
        with pytest.raises(gitops.InvalidBranch):
            gitops.validate_branch(branch)
    with pytest.raises(gitops.InvalidBranch):
        do_commit_back(gw, tmp_path / "w0", "0" * 40, "a..b")


def test_push_failure_is_reported_not_raised(gw, env, tmp_path):
    sha = user_push(gw, env, tmp_path / "u", "exp-1")
    wd = tmp_path / "work"
    job_checkout(gw, wd, sha, "exp-1")
    (wd / "r.txt").write_text("r\n")
    res = results.commit_back(wd, repo_url=gw.url(), username="job:42", token="wrong",
                              branch="exp-1", job_id=42, pushed_sha=sha, exit_code=0,
                              push_attempts=1)
    assert res.changed and not res.results_pushed and not res.branch_updated
    assert "could not push the results of job 42" in res.message
    assert "wrong" not in res.message
    assert ref(gw, "refs/heads/results/exp-1/42") is None
