"""git_gateway.sweep_merge: one octopus commit with every sweep task's results, on real bare
repositories (commits are made with git plumbing straight into the bare repository)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from git_gateway import sweep_merge
from git_gateway.sweep_merge import MergeError, MergeRaceLost, MergeResult, merge_tasks
from portal.adapters.git import GitRepos
from tests.support.fakes import InMemoryGit, make_config

LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:" + b"ab" * 32 + b"\nsize 12345\n")
LFS_LINE = b" filter=lfs diff=lfs merge=lfs -text\n"


def git(repo: Path, *args, input: bytes | None = None, env: dict | None = None) -> bytes:
    full = {**os.environ, "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@x",
            "GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@x", "LC_ALL": "C", **(env or {})}
    return subprocess.run(["git", "--git-dir", str(repo), *args], input=input, env=full,
                          capture_output=True, check=True).stdout.strip()


def commit(repo: Path, parent: str | None, files: dict, *, drop=(), message="c") -> str:
    """A commit on ``parent`` with ``files`` ({path: bytes | (mode, bytes)}) set and ``drop``
    removed, made in a temporary index: no work tree involved."""
    env = {"GIT_INDEX_FILE": str(repo / "test-index")}
    if parent:
        git(repo, "read-tree", parent, env=env)
    else:
        git(repo, "read-tree", "--empty", env=env)
    lines = []
    for path, value in files.items():
        mode, data = value if isinstance(value, tuple) else ("100644", value)
        path = path if isinstance(path, bytes) else path.encode()
        oid = git(repo, "hash-object", "-w", "--stdin", input=data)
        lines.append(mode.encode() + b" " + oid + b"\t" + path + b"\0")
    for path in drop:
        path = path if isinstance(path, bytes) else path.encode()
        lines.append(b"0 " + b"0" * 40 + b"\t" + path + b"\0")
    git(repo, "update-index", "-z", "--add", "--index-info", input=b"".join(lines), env=env)
    tree = git(repo, "write-tree", env=env).decode()
    args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
    return git(repo, *args).decode()


def tip(repo: Path, branch="exp") -> str | None:
    r = subprocess.run(["git", "--git-dir", str(repo), "rev-parse", "--verify", "--quiet",
                        f"refs/heads/{branch}"], capture_output=True)
    return r.stdout.decode().strip() or None


def tree_of(repo: Path, rev: str) -> dict[bytes, tuple[str, str]]:
    """path -> (mode, blob) of every file at ``rev``."""
    out = {}
    for rec in git(repo, "ls-tree", "-r", "-z", "--full-tree", rev).split(b"\0"):
        if rec:
            meta, _, path = rec.partition(b"\t")
            mode, _typ, oid = meta.decode().split()
            out[path] = (mode, oid)
    return out


def blob(repo: Path, rev: str, path: str | bytes) -> bytes:
    path = path if isinstance(path, bytes) else path.encode()
    return subprocess.run(["git", "--git-dir", str(repo), "cat-file", "blob",
                           f"{rev}:".encode() + path], capture_output=True, check=True).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    bare = tmp_path / "proj.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=exp", str(bare)], check=True)
    return bare


@pytest.fixture
def pushed(repo) -> str:
    """The commit the sweep was pushed at, on refs/heads/exp."""
    base = commit(repo, None, {"slipway-entrypoint.sh": b"python train.py\n", "train.py": b"print()\n",
                               "shared.txt": b"base\n", "old.txt": b"old\n", "gone.txt": b"x\n"})
    git(repo, "update-ref", "refs/heads/exp", base)
    return base


def merge(repo, base, tasks, job_id=12, **kw) -> MergeResult:
    return merge_tasks(repo, branch=kw.pop("branch", "exp"), base=base, tasks=tasks,
                       folder=f"sweep-{job_id}", message=f"slipway: results of sweep job {job_id}",
                       job_id=job_id, **kw)


# ---------------------------------------------------------------------------------- merging

def test_three_tasks_land_under_their_own_folders(repo, pushed):
    tasks = {i: commit(repo, pushed, {"out.txt": f"task {i}\n".encode(),
                                      "shared.txt": f"changed by {i}\n".encode()})
             for i in range(3)}
    user = commit(repo, pushed, {"notes.md": b"the user's work meanwhile\n"})
    git(repo, "update-ref", "refs/heads/exp", user, pushed)

    result = merge(repo, pushed, tasks)

    assert result.sha == tip(repo) and not result.already and not result.created
    assert result.files == {0: 2, 1: 2, 2: 2} and result.deletions == {} and result.skipped == []
    files = tree_of(repo, result.sha)
    for i in range(3):
        assert blob(repo, result.sha, f"sweep-12/task-{i}/out.txt") == f"task {i}\n".encode()
        assert blob(repo, result.sha, f"sweep-12/task-{i}/shared.txt") == f"changed by {i}\n".encode()
        assert f"sweep-12/task-{i}/train.py".encode() not in files          # unchanged: not copied
    assert blob(repo, result.sha, "shared.txt") == b"base\n"                 # nothing overwritten
    assert blob(repo, result.sha, "notes.md") == b"the user's work meanwhile\n"
    parents = git(repo, "rev-list", "--parents", "-n1", result.sha).decode().split()[1:]
    assert parents == [user, tasks[0], tasks[1], tasks[2]]                  # an octopus
    msg = git(repo, "log", "-1", "--format=%B", result.sha).decode()
    assert msg.startswith("slipway: results of sweep job 12\n")
    assert "task 1: 2 files" in msg
    trailers = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", result.sha).decode()
    assert trailers.splitlines() == ["Slipway-Job: 12", "Slipway-Sweep-Tasks: 3"]
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn", result.sha).decode() == \
        "Slipway <slipway@localhost>|Slipway"
    assert "merged the results of 3 tasks of sweep job 12 (6 files) into exp" in result.message


def test_modes_are_kept_deletions_listed_not_applied_and_gitlinks_skipped(repo, pushed):
    base = commit(repo, pushed, {f"d{n:02}.txt": b"." for n in range(15)})
    git(repo, "update-ref", "refs/heads/exp", base, pushed)
    t0 = commit(repo, base, {"run.sh": ("100755", b"#!/bin/sh\necho hi\n"),
                             "latest": ("120000", b"out/model.bin"),
                             "vendor/lib": ("160000", b"1" * 40)},
                drop=["old.txt", "gone.txt"])
    t1 = commit(repo, base, {"old.txt": b"rewritten\n"})
    t2 = commit(repo, base, {}, drop=[f"d{n:02}.txt" for n in range(15)])

    result = merge(repo, base, {0: t0, 1: t1, 2: t2})

    files = tree_of(repo, result.sha)
    assert files[b"sweep-12/task-0/run.sh"][0] == "100755"
    assert files[b"sweep-12/task-0/latest"][0] == "120000"
    assert blob(repo, result.sha, "sweep-12/task-0/latest") == b"out/model.bin"
    assert b"sweep-12/task-0/vendor/lib" not in files
    assert result.skipped == ["task 0: vendor/lib (a submodule)"]
    assert result.deletions[0] == ["gone.txt", "old.txt"] and len(result.deletions[2]) == 15
    assert blob(repo, result.sha, "gone.txt") == b"x\n" and blob(repo, result.sha, "old.txt") == b"old\n"
    assert blob(repo, result.sha, "sweep-12/task-1/old.txt") == b"rewritten\n"
    assert result.files == {0: 2, 1: 1, 2: 0}
    msg = git(repo, "log", "-1", "--format=%B", result.sha).decode()
    assert "task 0 deleted: gone.txt, old.txt\n" in msg
    assert "task 2 deleted: d00.txt, d01.txt," in msg and "d09.txt and 5 more" in msg
    assert "d10.txt" not in msg
    assert "task 0: vendor/lib (submodules are not merged)" in msg
    assert "17 deletions listed, not applied" in result.message


def test_non_utf8_path_bytes_survive(repo, pushed):
    name = b"caf\xe9 \"r\xe9sultat\"\n.txt"
    base = commit(repo, pushed, {b"d\xe9l.txt": b"-"})
    git(repo, "update-ref", "refs/heads/exp", base, pushed)
    t0 = commit(repo, base, {name: b"bytes\n", b"ok/\xff": b"ff\n"})
    t1 = commit(repo, base, {b"\xe9t\xe9/r\xe9sultat.bin": ("100755", b"\x00\xff")})
    t2 = commit(repo, base, {}, drop=[b"d\xe9l.txt"])

    result = merge(repo, base, {0: t0, 1: t1, 2: t2})

    assert blob(repo, result.sha, b"sweep-12/task-0/" + name) == b"bytes\n"
    assert blob(repo, result.sha, b"sweep-12/task-0/ok/\xff") == b"ff\n"
    assert result.deletions[2] == [b"d\xe9l.txt".decode("utf-8", "surrogateescape")]
    assert result.deletions[2][0].encode("utf-8", "surrogateescape") == b"d\xe9l.txt"  # lossless
    msg = git(repo, "log", "-1", "--format=%B", result.sha)
    msg.decode("utf-8")                                                # the message stays UTF-8
    assert b'task 2 deleted: "d\\351l.txt"' in msg
    assert tree_of(repo, result.sha)[b"sweep-12/task-1/\xe9t\xe9/r\xe9sultat.bin"][0] == "100755"
    assert result.files == {0: 2, 1: 1, 2: 0}


def test_lfs_files_keep_their_filter_under_the_task_folder(repo, tmp_path):
    base = commit(repo, None, {".gitattributes": b"/data/old.bin" + LFS_LINE,
                               "data/old.bin": LFS_POINTER, "slipway-entrypoint.sh": b"true\n"})
    git(repo, "update-ref", "refs/heads/exp", base)
    # task 0 adds a large file: the runner added its line to .gitattributes (anchored)
    t0 = commit(repo, base, {".gitattributes": b"/data/old.bin" + LFS_LINE + b"/new.bin" + LFS_LINE,
                             "new.bin": LFS_POINTER})
    # task 1 rewrites an LFS file that was tracked already: .gitattributes unchanged
    t1 = commit(repo, base, {"data/old.bin": LFS_POINTER.replace(b"12345", b"999")})

    result = merge(repo, base, {0: t0, 1: t1})

    def attr(path: str) -> str:
        env = {"GIT_INDEX_FILE": str(tmp_path / "attr-index")}
        git(repo, "read-tree", result.sha, env=env)
        return git(repo, "check-attr", "--cached", "filter", "--", path, env=env).decode()

    assert attr("sweep-12/task-0/new.bin").endswith(": filter: lfs")
    assert attr("sweep-12/task-1/data/old.bin").endswith(": filter: lfs")
    assert attr("sweep-12/task-0/other.txt").endswith(": filter: unspecified")
    assert blob(repo, result.sha, "sweep-12/task-1/.gitattributes") == b"/data/old.bin" + LFS_LINE
    assert result.files == {0: 2, 1: 1}                  # the copied .gitattributes not counted
    if subprocess.run(["git", "lfs", "version"], capture_output=True).returncode == 0:
        # git-lfs agrees: a clean checkout of the merge would smudge these paths
        work = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(work)], check=True,
                       env={**os.environ, "GIT_LFS_SKIP_SMUDGE": "1"})
        listed = subprocess.run(["git", "lfs", "ls-files", "-n", result.sha], cwd=work,
                                capture_output=True).stdout.decode().split()
        assert "sweep-12/task-0/new.bin" in listed and "sweep-12/task-1/data/old.bin" in listed


# ------------------------------------------------------------------------ races and re-runs

def test_a_lost_race_is_rebuilt_on_the_new_tip_and_keeps_the_users_commit(repo, pushed, monkeypatch):
    tasks = {0: commit(repo, pushed, {"out.txt": b"0\n"}), 1: commit(repo, pushed, {"out.txt": b"1\n"})}
    real, calls, users = sweep_merge._move_branch, [], []

    def racing(repo_, ref, new, old, reason, ident):
        calls.append(old)
        if len(calls) == 1:            # the user pushes between our build and our update
            users.append(commit(repo, old, {"user.txt": b"pushed meanwhile\n"}))
            git(repo, "update-ref", ref, users[0], old)
        return real(repo_, ref, new, old, reason, ident)

    monkeypatch.setattr(sweep_merge, "_move_branch", racing)
    result = merge(repo, pushed, tasks)

    assert calls == [pushed, users[0]]
    assert tip(repo) == result.sha
    parents = git(repo, "rev-list", "--parents", "-n1", result.sha).decode().split()[1:]
    assert parents == [users[0], tasks[0], tasks[1]]
    assert blob(repo, result.sha, "user.txt") == b"pushed meanwhile\n"
    assert blob(repo, result.sha, "sweep-12/task-1/out.txt") == b"1\n"


def test_losing_every_race_says_so_and_moves_nothing(repo, pushed, monkeypatch):
    tasks = {0: commit(repo, pushed, {"out.txt": b"0\n"})}
    real = sweep_merge._move_branch

    def always_moved(repo_, ref, new, old, reason, ident):
        git(repo, "update-ref", ref, commit(repo, old, {"x": os.urandom(8)}), old)
        return real(repo_, ref, new, old, reason, ident)

    monkeypatch.setattr(sweep_merge, "_move_branch", always_moved)
    with pytest.raises(MergeRaceLost, match="moved during each of 3 attempts"):
        merge(repo, pushed, tasks, attempts=3)
    assert git(repo, "rev-list", "--count", "refs/heads/exp").decode() == "4"   # base + 3 users'


def test_a_branch_locked_by_another_writer_is_retried_then_refused(repo, pushed):
    tasks = {0: commit(repo, pushed, {"out.txt": b"0\n"})}
    lock = repo / "refs" / "heads" / "exp.lock"
    lock.write_text("")                                      # a push is updating the branch
    with pytest.raises(MergeRaceLost):
        merge(repo, pushed, tasks, attempts=2)
    lock.unlink()
    assert merge(repo, pushed, tasks).sha == tip(repo)


def test_a_second_call_finds_the_merge_and_makes_no_other(repo, pushed):
    tasks = {0: commit(repo, pushed, {"out.txt": b"0\n"}), 2: commit(repo, pushed, {"o": b"2"})}
    first = merge(repo, pushed, tasks)
    again = merge(repo, pushed, tasks)
    assert again.already and again.sha == first.sha and tip(repo) == first.sha
    assert "already" in again.message and again.files == first.files
    # the user built on it since: still found in the branch's recent history
    later = commit(repo, first.sha, {"more.txt": b"m\n"})
    git(repo, "update-ref", "refs/heads/exp", later, first.sha)
    third = merge(repo, pushed, tasks)
    assert third.already and third.sha == first.sha and tip(repo) == later
    # another job's merge is a different job; a task's own results commit is not a merge
    other = merge(repo, pushed, tasks, job_id=13)
    assert not other.already and other.sha == tip(repo)


def test_a_tasks_results_commit_with_the_job_trailer_is_not_taken_for_the_merge(repo, pushed):
    t0 = commit(repo, pushed, {"out.txt": b"0\n"}, message="results\n\nSlipway-Job: 12\n")
    git(repo, "update-ref", "refs/heads/exp", t0, pushed)     # the user merged it by hand
    result = merge(repo, pushed, {0: t0})
    assert not result.already and result.sha == tip(repo)
    parents = git(repo, "rev-list", "--parents", "-n1", result.sha).decode().split()[1:]
    assert parents == [t0]                                   # t0 is history already: no octopus


def test_a_deleted_branch_is_created_at_the_merge(repo, pushed):
    tasks = {0: commit(repo, pushed, {"out.txt": b"0\n"})}
    git(repo, "update-ref", "-d", "refs/heads/exp")
    result = merge(repo, pushed, tasks)
    assert result.created and tip(repo) == result.sha
    assert "did not exist any more and was created" in result.message
    parents = git(repo, "rev-list", "--parents", "-n1", result.sha).decode().split()[1:]
    assert parents == [pushed, tasks[0]]
    assert blob(repo, result.sha, "train.py") == b"print()\n"       # built on the pushed commit
    assert "did not exist any more" in git(repo, "log", "-1", "--format=%B", result.sha).decode()


def test_no_results_no_commit(repo, pushed):
    result = merge(repo, pushed, {})
    assert result.sha is None and tip(repo) == pushed and "nothing was merged" in result.message


def test_a_file_where_the_folder_goes_is_not_replaced(repo, pushed):
    user = commit(repo, pushed, {"sweep-12": b"my notes\n"})
    git(repo, "update-ref", "refs/heads/exp", user, pushed)
    result = merge(repo, pushed, {0: commit(repo, pushed, {"out.txt": b"0\n"})})
    assert blob(repo, result.sha, "sweep-12") == b"my notes\n"
    assert blob(repo, result.sha, "sweep-12-results/task-0/out.txt") == b"0\n"
    assert "under sweep-12-results/" in result.message


def test_bad_input_is_refused_clearly(repo, pushed):
    t0 = commit(repo, pushed, {"out.txt": b"0\n"})
    with pytest.raises(ValueError, match="invalid branch"):
        merge(repo, pushed, {0: t0}, branch="-x")
    with pytest.raises(ValueError, match="invalid branch"):
        merge(repo, pushed, {0: t0}, branch="a..b")
    with pytest.raises(ValueError, match="full commit id"):
        merge(repo, "HEAD", {0: t0})
    with pytest.raises(ValueError, match="task 0: results must be a full commit id"):
        merge(repo, pushed, {0: "main"})
    with pytest.raises(ValueError, match="task index"):
        merge(repo, pushed, {-1: t0})
    with pytest.raises(ValueError, match="invalid folder"):
        merge_tasks(repo, branch="exp", base=pushed, tasks={0: t0}, folder="../x", message="m",
                    job_id=1)
    with pytest.raises(MergeError, match="not in"):
        merge(repo, pushed, {0: "f" * 40})
    with pytest.raises(MergeError, match="no git repository"):
        merge(repo.parent / "nope.git", pushed, {0: t0})
    assert tip(repo) == pushed


# ------------------------------------------------------------------------------ the port

def test_the_git_adapter_merges_into_the_projects_repository(tmp_path):
    git_port = GitRepos(make_config(tmp_path))
    bare = git_port.create_repo("nlp", "proj")
    base = commit(bare, None, {"slipway-entrypoint.sh": b"true\n"})
    git(bare, "update-ref", "refs/heads/exp-1", base)
    t0 = commit(bare, base, {"out.txt": b"0\n"})
    result = git_port.merge_sweep("nlp", "proj", branch="exp-1", base=base, tasks={0: t0}, job_id=7)
    assert result.sha == git_port.resolve_ref("nlp", "proj", "refs/heads/exp-1")
    assert blob(bare, result.sha, "sweep-7/task-0/out.txt") == b"0\n"
    assert git(bare, "log", "-1", "--format=%s", result.sha).decode() == "slipway: results of sweep job 7"


def test_the_in_memory_git_merges_a_sweep():
    mem = InMemoryGit()
    base = mem.commit("nlp", "proj", "refs/heads/exp", {"a.txt": "a", "gone.txt": "g"})
    t0 = mem.commit("nlp", "proj", "refs/heads/results/exp/5/0", {"a.txt": "a", "out.txt": "0"})
    t1 = mem.commit("nlp", "proj", "refs/heads/results/exp/5/1", {"a.txt": "A", "gone.txt": "g"})
    r = mem.merge_sweep("nlp", "proj", branch="exp", base=base, tasks={0: t0, 1: t1}, job_id=5)
    assert len(r.sha) == 40 and mem.resolve_ref("nlp", "proj", "refs/heads/exp") == r.sha
    assert mem.files[r.sha] == {"a.txt": "a", "gone.txt": "g", "sweep-5/task-0/out.txt": "0",
                                "sweep-5/task-1/a.txt": "A"}
    assert r.files == {0: 1, 1: 1} and r.deletions == {0: ["gone.txt"]}
    assert mem.merge_sweep("nlp", "proj", branch="exp", base=base, tasks={0: t0, 1: t1},
                           job_id=5).already
    assert mem.merge_sweep("nlp", "proj", branch="exp", base=base, tasks={}, job_id=6).sha is None
    assert [m["job_id"] for m in mem.merges] == [5, 5, 6]
