"""Issue 9 item 5: branch names beginning with '-' (``--help``, ``-n``) or breaking git's ref-name
rules are refused at push (pre-receive), naming the branch and the rule, before a job is
reserved. ``git_gateway.refname.branch_problem`` agrees with ``git check-ref-format --branch``."""
from __future__ import annotations

import os
import subprocess

import pytest
from sqlalchemy import func, select

from git_gateway.refname import branch_problem
from portal.db import Job, LedgerEntry
from portal.jobs import push
from tests.support.fakes import FakeBackend, commit_to_bare, hook_payload, make_services, seed

TRICKY = ["-n", "--help", "-", "a", "exp-1", "feat/x", "feat/-n", "HEAD", "head", "@", "@a", "a@b",
          "a@{", "@{-1}", "x@{1}", "a.lock", "a.lock/b", "a/b.lock", "a.lockx", ".a", "a/.b", "a/b.",
          "a.", "a..b", "...", "a.b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a]", "a\\b",
          "a/", "/a", "a//b", "a\x01", "a\x7f", "a\tb", "é", "日本", "a{b}", "a!b", "a#b", "a$(id)",
          "a;id", "a'b", 'a"b', "a|b", "a&b", "a>b", "results", "x" * 300, "a/-b", "-a/b",
          "a-", "a_b", "a+b", "a=b", "a,b", "(a)", "a%20"]


def git_accepts(name: str, cwd) -> bool:
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(cwd))
    r = subprocess.run(["git", "check-ref-format", "--branch", name], cwd=cwd, env=env,
                       capture_output=True)
    return r.returncode == 0


@pytest.mark.parametrize("name", TRICKY)
def test_rules_agree_with_git_check_ref_format_branch(name, tmp_path):
    ours = branch_problem(name)
    assert (ours is None) == git_accepts(name, tmp_path), (name, ours)


def test_leading_dash_is_refused_even_where_git_allows_it_in_a_ref():
    # refs/heads/-n is a valid *ref* (git push refs/heads/-n works); as a branch it is refused
    assert subprocess.run(["git", "check-ref-format", "refs/heads/-n"]).returncode == 0
    assert "cannot begin with '-'" in branch_problem("-n")
    assert "cannot begin with '-'" in branch_problem("--help")


@pytest.fixture
def env(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    seed(svc)
    bare = svc.config.repos_root / "nlp" / "proj.git"
    yield svc, bare, tmp_path / "work"
    svc.db.dispose()


def counts(svc):
    with svc.db.session() as s:
        return (s.scalar(select(func.count()).select_from(Job)),
                s.scalar(select(func.count()).select_from(LedgerEntry)))


@pytest.mark.parametrize("branch,rule", [("-n", "cannot begin with '-'"),
                                         ("--help", "cannot begin with '-'"),
                                         ("HEAD", "'HEAD' is not a branch name"),
                                         ("a.lock", "'.lock'")])
def test_pre_receive_refuses_bad_branch_names(env, branch, rule):
    svc, bare, work = env
    sha = commit_to_bare(bare, work, {"slipway-entrypoint.sh": "echo hi\n"})
    before = counts(svc)
    r = push.handle_pre_receive(svc, hook_payload(
        "pre-receive", "nlp/proj", "alice", [(f"refs/heads/{branch}", "0" * 40, sha)]))
    assert not r.ok
    text = "\n".join(r.messages)
    assert f"branch {branch!r} is refused" in text and rule in text, text
    assert counts(svc) == before  # no job row, no ledger entry


def test_a_good_branch_in_the_same_push_does_not_slip_through(env):
    svc, bare, work = env
    sha = commit_to_bare(bare, work, {"slipway-entrypoint.sh": "echo hi\n"})
    r = push.handle_pre_receive(svc, hook_payload(
        "pre-receive", "nlp/proj", "alice",
        [("refs/heads/exp-1", "0" * 40, sha), ("refs/heads/-n", "0" * 40, sha)]))
    assert not r.ok and counts(svc)[0] == 0


def test_deleting_a_badly_named_branch_is_allowed(env):
    svc, _bare, _work = env
    r = push.handle_pre_receive(svc, hook_payload(
        "pre-receive", "nlp/proj", "alice", [("refs/heads/-n", "ab" * 20, "0" * 40)]))
    assert r.ok, r.messages
