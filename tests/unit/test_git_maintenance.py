"""git_gateway.maintenance: after pushes, `git gc --auto` runs in the background, once per
repository per interval, never in the push's time; failures are logged, not raised."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from git_gateway.maintenance import GC_ARGS, Maintenance


def _fake_git(tmp_path: Path, code: int = 0) -> tuple[Path, Path]:
    log = tmp_path / "calls.log"
    git = tmp_path / "git"
    git.write_text(f'#!/bin/sh\necho "$@" >> {log}\nsleep 0.05\nexit {code}\n')
    git.chmod(0o755)
    return git, log


def _repo(tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    p.mkdir()
    (p / "HEAD").write_text("ref: refs/heads/main\n")
    return p


def _until(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_each_repository_is_kept_once_per_interval_in_the_background(tmp_path):
    git, log = _fake_git(tmp_path)
    a, b = _repo(tmp_path, "a.git"), _repo(tmp_path, "b.git")
    m = Maintenance(str(git), interval_s=0.5)
    try:
        t0 = time.monotonic()
        for _ in range(5):                # a burst of pushes to one repository
            m.after_push(a)
        m.after_push(b)
        assert time.monotonic() - t0 < 0.05   # queuing never waits for git
        _until(lambda: m.runs == 2)
        calls = log.read_text().splitlines()
        assert sorted(calls) == sorted(f"--git-dir {p} {' '.join(GC_ARGS)}" for p in (a, b))
        m.after_push(a)                   # again within the interval: waits for it
        time.sleep(0.2)
        assert m.runs == 2
        _until(lambda: m.runs == 3)
        assert log.read_text().splitlines()[-1].startswith(f"--git-dir {a} ")
    finally:
        m.close()


def test_a_failing_gc_or_a_deleted_repository_is_not_an_error(tmp_path, caplog):
    git, log = _fake_git(tmp_path, code=1)
    a = _repo(tmp_path, "a.git")
    gone = tmp_path / "gone.git"
    m = Maintenance(str(git), interval_s=0)
    try:
        m.after_push(gone)
        m.after_push(a)
        _until(lambda: m.runs == 1)
        assert "git gc --auto" in caplog.text and "failed" in caplog.text
        assert str(gone) not in log.read_text()
    finally:
        m.close()
    m.after_push(a)                        # closed: ignored
    assert m.runs == 1


def test_the_gc_call_consolidates_packs_past_gits_limit(tmp_path):
    """The real call (GC_ARGS, with the pack limit lowered to 2) repacks the 3 packs of 3 pushes
    into one; nothing pushed is lost."""
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    bare, work = tmp_path / "r.git", tmp_path / "w"
    for d in (bare, work):
        subprocess.run(["git", "init", "-q", *(["--bare"] if d == bare else []), str(d)],
                       check=True)
    for i in range(3):   # each push a pack of its own (unpackLimit=1)
        subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", str(i)], cwd=work,
                       env=env, check=True)
        subprocess.run(["git", "-c", "receive.unpackLimit=1", "push", "-q",
                        "--receive-pack=git -c receive.unpackLimit=1 receive-pack", str(bare),
                        f"HEAD:refs/heads/b{i}"], cwd=work, env=env, check=True)
    assert len(list((bare / "objects" / "pack").glob("*.pack"))) == 3
    args = [a.replace("gc.autoPackLimit=50", "gc.autoPackLimit=2") for a in GC_ARGS]
    r = subprocess.run(["git", "--git-dir", str(bare), *args], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert len(list((bare / "objects" / "pack").glob("*.pack"))) == 1
    assert subprocess.run(["git", "--git-dir", str(bare), "fsck", "--no-progress"],
                          capture_output=True).returncode == 0
