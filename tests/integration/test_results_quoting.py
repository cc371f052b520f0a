"""Issue 9 item 6: the results message names a runnable, quoted command even for a branch full
of shell metacharacters (results.commit_back against a real GitHttpApp over HTTP)."""
from __future__ import annotations

import shlex

import pytest

from tests.support.git_server import Gateway, client_env, git

from .test_git_results import do_commit_back, job_checkout, ref, user_push

pytestmark = pytest.mark.timeout(180)


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


@pytest.mark.parametrize("branch", ["x;id", "feat/$(id)", "a'b&&c`id`"])
def test_moved_branch_message_quotes_the_fetch_command(gw, env, tmp_path, branch):
    sha = user_push(gw, env, tmp_path / "u", branch)
    wd = tmp_path / "work"
    job_checkout(gw, wd, sha, branch)
    user_push(gw, env, tmp_path / "u", branch, {"keep.txt": "user moved on\n"})
    (wd / "result.txt").write_text("42\n")
    res = do_commit_back(gw, wd, sha, branch)
    assert res.results_pushed and not res.branch_updated, res.message
    cmd = res.message.rsplit("): ", 1)[1]
    fetch, merge = cmd.split(" && ")
    lex = shlex.shlex(fetch, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    assert "'" in fetch and list(lex) == ["git", "fetch", "slipway", f"results/{branch}/42"]
    assert merge == "git merge FETCH_HEAD"
    assert ref(gw, f"refs/heads/results/{branch}/42") == res.sha
