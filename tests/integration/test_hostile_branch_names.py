"""Issue 9 item 5, live: a real git client pushes ``refs/heads/-n`` and ``refs/heads/--help``
(``git push slipway -n`` cannot name them: git itself reads them as options) to a running
Slipway; the push is refused naming the branch and the rule, and no job row and no ledger entry
exist afterwards."""
from __future__ import annotations

import json

import pytest

from tests.support.harness import cleanup, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env)
    try:
        sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "alice", "100.00", "--note", "e2e")
        sw.cli("project", "create", "alice", "demo", "--gpus", "a4000:1", "--image", "busybox")
        sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


@pytest.mark.parametrize("branch", ["-n", "--help"])
def test_branch_beginning_with_dash_is_refused_at_push(sw, tmp_path, branch):
    work = tmp_path / "demo"
    sw.git("clone", "-q", sw.remote("alice", "alice", "demo"), str(work))
    write_project(work)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", "run", cwd=work)
    ledger_before = json.loads(sw.cli("team", "ledger", "alice", "--json").stdout)

    out = sw.git("push", "origin", f"HEAD:refs/heads/{branch}", cwd=work, check=False)
    assert out.returncode != 0, out.stderr
    assert f"slipway: branch '{branch}' is refused" in out.stderr, out.stderr
    assert "cannot begin with '-'" in out.stderr
    assert "push refused; nothing was started" in out.stderr

    ls = sw.git("ls-remote", "origin", cwd=work).stdout
    assert f"refs/heads/{branch}" not in ls  # the ref was not created
    jobs = json.loads(sw.cli("job", "list", "--team", "alice", "--json").stdout)
    assert (jobs["jobs"] if isinstance(jobs, dict) else jobs) == []
    assert json.loads(sw.cli("team", "ledger", "alice", "--json").stdout) == ledger_before
