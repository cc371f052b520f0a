"""git_gateway.scripted: a script as slipway-entrypoint.sh in a parentless commit on a new
numbered branch, with git plumbing only, against a real bare repository."""
from __future__ import annotations

import subprocess
import threading
from datetime import datetime, timezone

import pytest

from git_gateway import scripted
from git_gateway.repos import create_repo

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
ALICE = scripted.Person("alice", "alice@example.org")
DAVE = scripted.Person("dave <admin>\n", "dave@example.org")


def git(bare, *args) -> str:
    return subprocess.run(["git", "--git-dir", str(bare), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def bare(tmp_path):
    return create_repo(tmp_path / "repos", "nlp", "submit")


def test_the_commit_holds_the_script_executable_no_parent_and_who(bare):
    sha = scripted.write_commit(bare, b"#!/bin/bash\necho hi\n", author=ALICE, committer=DAVE,
                                message="slipway submit: train", when=WHEN)
    assert git(bare, "ls-tree", sha).split("\t") == [
        f"100755 blob {git(bare, 'rev-parse', sha + ':slipway-entrypoint.sh')}",
        "slipway-entrypoint.sh"]
    assert git(bare, "show", f"{sha}:slipway-entrypoint.sh") == "#!/bin/bash\necho hi"
    assert git(bare, "rev-list", "--parents", "-n1", sha) == sha  # no parent
    assert git(bare, "log", "-1", "--format=%an <%ae> %at|%cn <%ce>|%s", sha) == \
        f"alice <alice@example.org> {int(WHEN.timestamp())}|dave admin <dave@example.org>|" \
        "slipway submit: train"
    # written, but on no branch yet
    assert git(bare, "for-each-ref", "refs/heads/") == ""


def test_numbered_branches_count_up_past_existing_ones_and_the_floor(bare):
    sha = scripted.write_commit(bare, b"x\n", author=ALICE, committer=ALICE, message="m", when=WHEN)
    assert scripted.create_numbered_branch(bare, "submit/", sha) == ("submit/1", 1)
    assert scripted.create_numbered_branch(bare, "submit/", sha) == ("submit/2", 2)
    assert scripted.create_numbered_branch(bare, "submit/", sha, floor=9) == ("submit/10", 10)
    git(bare, "update-ref", "refs/heads/submit/not-a-number", sha)
    git(bare, "update-ref", "refs/heads/other/40", sha)
    assert scripted.branch_numbers(bare, "submit/") == [1, 2, 10]
    assert scripted.create_numbered_branch(bare, "submit/", sha) == ("submit/11", 11)
    assert git(bare, "rev-parse", "refs/heads/submit/11") == sha


def test_an_existing_branch_is_never_moved(bare):
    a = scripted.write_commit(bare, b"a\n", author=ALICE, committer=ALICE, message="a", when=WHEN)
    b = scripted.write_commit(bare, b"b\n", author=ALICE, committer=ALICE, message="b", when=WHEN)
    assert scripted.create_branch(bare, "submit/1", a) is True
    assert scripted.create_branch(bare, "submit/1", b) is False
    assert git(bare, "rev-parse", "refs/heads/submit/1") == a
    with pytest.raises(ValueError):
        scripted.create_branch(bare, "bad..name", a)


def test_concurrent_creators_get_different_numbers(bare):
    shas = [scripted.write_commit(bare, f"{i}\n".encode(), author=ALICE, committer=ALICE,
                                  message=str(i), when=WHEN) for i in range(6)]
    got: list[tuple[str, int]] = []
    lock = threading.Lock()

    def make(sha):
        r = scripted.create_numbered_branch(bare, "submit/", sha)
        with lock:
            got.append(r)

    threads = [threading.Thread(target=make, args=(s,)) for s in shas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(n for _b, n in got) == [1, 2, 3, 4, 5, 6]
    assert sorted(git(bare, "rev-parse", f"refs/heads/{b}") for b, _n in got) == sorted(shas)


def test_delete_branch_only_while_it_points_at_the_commit(bare):
    a = scripted.write_commit(bare, b"a\n", author=ALICE, committer=ALICE, message="a", when=WHEN)
    b = scripted.write_commit(bare, b"b\n", author=ALICE, committer=ALICE, message="b", when=WHEN)
    scripted.create_branch(bare, "submit/1", a)
    assert scripted.delete_branch(bare, "submit/1", b) is False
    assert scripted.delete_branch(bare, "submit/1", a) is True
    assert git(bare, "for-each-ref", "refs/heads/") == ""


def test_no_repository_is_a_clear_error(tmp_path):
    with pytest.raises(scripted.ScriptedCommitError, match="there is no repository"):
        scripted.write_commit(tmp_path / "none.git", b"x", author=ALICE, committer=ALICE,
                              message="m", when=WHEN)
