"""Issue 17 item 1: the post-receive of a push over the direct receive-pack path is run by the
gateway itself (git_gateway/push_report.py): receive-pack runs no post-receive hook, the
gateway reads its report, calls the post-receive with exactly the refs that moved, and its
messages reach the client as `remote:` lines, as a hook's would. Requests it cannot follow (no
side-band) keep the repository's own hooks."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from git_gateway import repos
from git_gateway.http import GitHttpApp
from tests.support.git_server import client_env, git, serve, static_authenticator

pytestmark = pytest.mark.timeout(120)


def _app(tmp_path, refuse=()):
    seen, lock = [], threading.Lock()

    def hooks(payload):
        with lock:   # (the hook listener's threads serve hook processes' callbacks)
            seen.append({**payload, "by_hook": "process_request" in threading.current_thread().name})
        refs = [u["ref"] for u in payload["updates"]]
        if payload["phase"] == "pre-receive":
            bad = [r for r in refs if r in refuse]
            return (not bad), [f"slipway: {r} refused" for r in bad], 200
        return True, [f"slipway: job for {r} queued" for r in refs] + ["two\nlines"], 200

    repos.create_repo(tmp_path / "repos", "t", "p")
    app = GitHttpApp(tmp_path / "repos", static_authenticator({"alice": "pw"}), hook_url="",
                     hook_secret="s3cret", lfs_root=tmp_path / "lfs", hooks=hooks,
                     gateway_hooks_dir=tmp_path / "gateway-hooks")
    return app, seen


def _work(tmp_path, env) -> Path:
    work = tmp_path / "w"
    git(tmp_path, "init", "-q", str(work), env=env)
    (work / "slipway-entrypoint.sh").write_text("true\n")
    git(work, "add", "-A", env=env)
    git(work, "commit", "-qm", "x", env=env)
    return work


def test_the_gateway_runs_the_post_receive_with_the_refs_that_moved(tmp_path):
    app, seen = _app(tmp_path)
    env = client_env(tmp_path / "home")
    gw_hooks = tmp_path / "gateway-hooks"
    assert (gw_hooks / "pre-receive").exists() and not (gw_hooks / "post-receive").exists()
    assert (gw_hooks.stat().st_mode & 0o777) == 0o700
    with serve(app) as base:
        url = base.replace("http://", "http://alice:pw@") + "/git/t/p.git"
        work = _work(tmp_path, env)
        r = git(work, "push", "-o", "gpus=a4000:1", url, "HEAD:refs/heads/a", "HEAD:refs/heads/b",
                env=env)
        assert "remote: slipway: job for refs/heads/a queued" in r.stderr, r.stderr
        assert "remote: slipway: job for refs/heads/b queued" in r.stderr
        lines = [ln.rstrip() for ln in r.stderr.splitlines()]   # (git pads remote: lines)
        assert lines[2:4] == ["remote: two", "remote: lines"], lines   # one message, two lines
        sha = git(work, "rev-parse", "HEAD", env=env).stdout.strip()
        post = [p for p in seen if p["phase"] == "post-receive"]
        assert len(post) == 1 and post[0]["repo"] == "t/p" and post[0]["pusher"] == "alice"
        assert post[0]["updates"] == [{"old": "0" * 40, "new": sha, "ref": "refs/heads/a"},
                                      {"old": "0" * 40, "new": sha, "ref": "refs/heads/b"}]
        assert not post[0]["by_hook"]                          # no post-receive process
        pre = [p for p in seen if p["phase"] == "pre-receive"]
        assert pre[0]["push_options"] == ["gpus=a4000:1"] and pre[0]["by_hook"]   # as before
        # the checks were asked for ahead, with exactly what the pre-receive hook then sent
        ahead = [p for p in seen if p["phase"] == "pre-check"]
        assert len(ahead) == 1 and not ahead[0]["by_hook"]
        assert {k: ahead[0][k] for k in ("repo", "pusher", "push_options", "updates")} == \
            {k: pre[0][k] for k in ("repo", "pusher", "push_options", "updates")}
        # the repository has what was pushed; receive-pack ran no hook of the repository's
        assert git(tmp_path, "--git-dir", str(tmp_path / "repos/t/p.git"), "rev-parse",
                   "refs/heads/b", env=env).stdout.strip() == sha
        # a deletion moves a ref too: the post-receive gets it (and decides it starts nothing)
        seen.clear()
        git(work, "push", url, ":refs/heads/a", env=env)
        assert [p["updates"] for p in seen if p["phase"] == "post-receive"] == \
            [[{"old": sha, "new": "0" * 40, "ref": "refs/heads/a"}]]
    app.close()


def test_refs_the_pre_receive_refused_get_no_post_receive(tmp_path):
    app, seen = _app(tmp_path, refuse=("refs/heads/bad",))
    env = client_env(tmp_path / "home")
    with serve(app) as base:
        url = base.replace("http://", "http://alice:pw@") + "/git/t/p.git"
        work = _work(tmp_path, env)
        r = git(work, "push", url, "HEAD:refs/heads/bad", env=env, check=False)
        assert r.returncode != 0 and "remote: slipway: refs/heads/bad refused" in r.stderr
        assert [p for p in seen if p["phase"] == "post-receive"] == []
        r = git(work, "push", url, "HEAD:refs/heads/good", env=env)
        assert "remote: slipway: job for refs/heads/good queued" in r.stderr
    app.close()


def test_a_push_the_gateway_cannot_follow_keeps_the_repositorys_hooks(tmp_path):
    """A push from a shallow clone starts its request with `shallow` lines, not commands: the
    gateway leaves it to receive-pack with the repository's own hooks, post-receive included,
    and the pusher sees the same messages."""
    app, seen = _app(tmp_path)
    env = client_env(tmp_path / "home")
    with serve(app) as base:
        url = base.replace("http://", "http://alice:pw@") + "/git/t/p.git"
        work = _work(tmp_path, env)
        git(work, "commit", "-q", "--allow-empty", "-m", "second", env=env)
        git(work, "push", url, "HEAD:refs/heads/main", env=env)
        shallow = tmp_path / "shallow"
        git(tmp_path, "clone", "-q", "--depth", "1", url, str(shallow), env=env)
        git(shallow, "commit", "-q", "--allow-empty", "-m", "third", env=env)
        seen.clear()
        r = git(shallow, "push", url, "HEAD:refs/heads/from-shallow", env=env)
        assert "remote: slipway: job for refs/heads/from-shallow queued" in r.stderr, r.stderr
        assert [(p["updates"][0]["ref"], p["by_hook"]) for p in seen
                if p["phase"] == "post-receive"] == [("refs/heads/from-shallow", True)]
    app.close()
    # and what the gateway read before it knew goes on to receive-pack whole
    import io

    from git_gateway import push_report
    body = b"0032push-cert\0report-status side-band-64k\n0000"
    with pytest.raises(push_report.NotAPush) as e:
        push_report.read_commands(io.BytesIO(body).read)
    assert body.startswith(e.value.args[1]) and e.value.args[1]
