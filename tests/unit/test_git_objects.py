"""git_gateway.objects: the pre-receive entrypoint check read from loose objects agrees with
``git ls-tree`` on every kind of entry, and answers UNKNOWN (git decides) whenever it cannot be
sure: packed objects, a tag, a corrupt or substituted object file."""
from __future__ import annotations

import os
import subprocess
import zlib
from pathlib import Path

import pytest

from git_gateway import objects, repos

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@x", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def _git(*args, cwd=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


def _repo(tmp_path: Path, fmt: str = "sha1") -> tuple[Path, Path]:
    root = tmp_path / "repos"
    bare = root / "t" / "p.git"
    bare.parent.mkdir(parents=True)
    _git("init", "-q", "--bare", f"--object-format={fmt}", str(bare))
    work = tmp_path / "work"
    _git("init", "-q", f"--object-format={fmt}", str(work))
    return root, work


def _commit(work: Path, bare: Path, branch: str) -> str:
    _git("add", "-A", cwd=work)
    _git("commit", "-qm", branch, "--allow-empty", cwd=work)
    _git("push", "-q", str(bare), f"HEAD:refs/heads/{branch}", cwd=work)
    return _git("rev-parse", "HEAD", cwd=work)


def _ls(bare: Path, sha: str, name: str):
    out = _git("--git-dir", str(bare), "ls-tree", sha, "--", name)
    if not out:
        return None
    meta, _, _ = out.partition("\t")
    mode, kind, oid = meta.split()
    return mode, kind, oid


@pytest.mark.parametrize("fmt", ["sha1", "sha256"])
def test_every_kind_of_entry_reads_as_git_ls_tree_says(tmp_path, fmt):
    root, work = _repo(tmp_path, fmt)
    bare = root / "t" / "p.git"
    cases = {}
    ep = work / repos.ENTRYPOINT
    ep.write_text("echo hi\n")
    cases["regular"] = _commit(work, bare, "regular")
    ep.chmod(0o755)
    cases["executable"] = _commit(work, bare, "executable")
    ep.unlink()
    ep.symlink_to("/etc/passwd")
    cases["symlink"] = _commit(work, bare, "symlink")
    ep.unlink()
    (work / repos.ENTRYPOINT).mkdir()
    (work / repos.ENTRYPOINT / "x").write_text("x")
    cases["directory"] = _commit(work, bare, "directory")
    _git("rm", "-rq", repos.ENTRYPOINT, cwd=work)
    (work / "other.sh").write_text("x")
    cases["missing"] = _commit(work, bare, "missing")
    for what, sha in cases.items():
        got = objects.root_entry([bare / "objects"], sha, repos.ENTRYPOINT)
        assert got is not objects.UNKNOWN, what       # all loose: read here
        assert got == _ls(bare, sha, repos.ENTRYPOINT), what
        # and the check's message is the one git's answer gives
        assert repos.check_entrypoint(root, "t", "p", sha) == \
            _via_git(root, sha), what
    assert repos.check_entrypoint(root, "t", "p", cases["regular"]) is None
    assert "a symlink" in repos.check_entrypoint(root, "t", "p", cases["symlink"])
    assert "a directory" in repos.check_entrypoint(root, "t", "p", cases["directory"])
    assert "missing" in repos.check_entrypoint(root, "t", "p", cases["missing"])


def _via_git(root: Path, sha: str) -> str | None:
    """check_entrypoint's message when git answers (the objects packed away)."""
    saved = objects.root_entry
    try:
        objects.root_entry = lambda *a, **k: objects.UNKNOWN
        return repos.check_entrypoint(root, "t", "p", sha)
    finally:
        objects.root_entry = saved


def test_a_submodule_entry(tmp_path):
    root, work = _repo(tmp_path)
    bare = root / "t" / "p.git"
    (work / "f").write_text("x")
    inner = _commit(work, bare, "base")
    _git("update-index", "--add", "--cacheinfo", f"160000,{inner},{repos.ENTRYPOINT}", cwd=work)
    _git("commit", "-qm", "sub", cwd=work)
    _git("push", "-q", str(bare), "HEAD:refs/heads/sub", cwd=work)
    sha = _git("rev-parse", "HEAD", cwd=work)
    assert objects.root_entry([bare / "objects"], sha, repos.ENTRYPOINT) == \
        ("160000", "commit", inner) == _ls(bare, sha, repos.ENTRYPOINT)
    assert "a submodule" in repos.check_entrypoint(root, "t", "p", sha)


def test_packed_objects_a_tag_and_unknown_ids_are_left_to_git(tmp_path):
    root, work = _repo(tmp_path)
    bare = root / "t" / "p.git"
    (work / repos.ENTRYPOINT).write_text("echo hi\n")
    sha = _commit(work, bare, "main")
    _git("--git-dir", str(bare), "tag", "-a", "-m", "t", "v1", sha)
    tag = _git("--git-dir", str(bare), "rev-parse", "v1")
    assert objects.root_entry([bare / "objects"], tag, repos.ENTRYPOINT) is objects.UNKNOWN
    assert objects.root_entry([bare / "objects"], "f" * 40, repos.ENTRYPOINT) is objects.UNKNOWN
    _git("--git-dir", str(bare), "gc", "-q", "--prune=now")
    assert objects.root_entry([bare / "objects"], sha, repos.ENTRYPOINT) is objects.UNKNOWN
    assert repos.check_entrypoint(root, "t", "p", sha) is None        # git answered


def test_a_substituted_or_corrupt_object_file_is_not_believed(tmp_path):
    """An object file whose content does not hash to its name (a file put in the store by
    hand, a disk error) is never read as that object: git decides."""
    root, work = _repo(tmp_path)
    bare = root / "t" / "p.git"
    (work / repos.ENTRYPOINT).write_text("echo hi\n")
    good = _commit(work, bare, "good")
    _git("rm", "-q", repos.ENTRYPOINT, cwd=work)
    (work / "x").write_text("x")
    bad = _commit(work, bare, "bad")          # no entrypoint
    good_file = bare / "objects" / good[:2] / good[2:]
    bad_file = bare / "objects" / bad[:2] / bad[2:]
    os.chmod(bad_file, 0o644)
    bad_file.write_bytes(good_file.read_bytes())   # "bad" now holds good's bytes
    assert objects.root_entry([bare / "objects"], bad, repos.ENTRYPOINT) is objects.UNKNOWN
    bad_file.write_bytes(zlib.compress(b"garbage"))
    assert objects.root_entry([bare / "objects"], bad, repos.ENTRYPOINT) is objects.UNKNOWN
    bad_file.write_bytes(b"not zlib at all")
    assert objects.root_entry([bare / "objects"], bad, repos.ENTRYPOINT) is objects.UNKNOWN


def test_the_quarantine_is_read_first_and_must_be_this_repositorys(tmp_path):
    root, work = _repo(tmp_path)
    bare = root / "t" / "p.git"
    (work / repos.ENTRYPOINT).write_text("echo hi\n")
    sha = _commit(work, bare, "main")
    q = bare / "objects" / "tmp_objdir-incoming-abc"
    src = bare / "objects" / sha[:2] / sha[2:]
    (q / sha[:2]).mkdir(parents=True)
    os.rename(src, q / sha[:2] / sha[2:])     # the commit only in the quarantine
    assert repos.check_entrypoint(root, "t", "p", sha, quarantine=str(q)) is None
    with pytest.raises(ValueError):
        repos.check_entrypoint(root, "t", "p", sha, quarantine=str(tmp_path))
