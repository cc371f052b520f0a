"""One commit on the branch with the results of every task of a sweep (docs/SHARING.md, "Sweeps").

``merge_tasks`` builds, in a temporary index (a bare repository has no work tree), the tree of the
branch tip plus, for each task i, the files the task added or modified relative to the pushed
commit, placed at ``<folder>/task-<i>/<path>`` (same blob, same mode: executables and symlinks
stay what they are). The ``.gitattributes`` files of the task's commit that govern those paths
move with them (so its git-lfs files stay LFS files, whether or not the task changed them).
Deletions are listed in the commit message, never applied; submodules (gitlinks) are skipped and
listed. The commit's parents are the tip and every task commit not already in the tip's history
(an octopus); the branch moves by compare-and-swap (``git update-ref NEW OLD``), rebuilt on the
new tip when it lost a race. A second call for the same job finds its commit (the trailer
``Slipway-Job``) and makes no other.

Paths are bytes from ``-z`` output end to end; they are decoded (surrogateescape) only for the
result's lists and quoted only for the commit message.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .node.trailers import format_trailers
from .refname import branch_problem
from .repos import PRIVATE_UMASK, SHA_RE

#: How far back (commits) a branch is searched for this job's merge commit.
ALREADY_DEPTH = 50
#: Deleted paths named per task in the commit message before "and N more".
MAX_LISTED_DELETIONS = 10
FOLDER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
GITLINK = b"160000"
_REGULAR = (b"100644", b"100755")
#: Inherited variables that would point git somewhere else than ``repo`` (a hook's quarantine,
#: a caller's index or work tree).
_UNSET = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
          "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_QUARANTINE_PATH", "GIT_NAMESPACE")


class MergeError(RuntimeError):
    """The sweep's results could not be merged; the message says why."""


class MergeRaceLost(MergeError):
    """The branch moved under every attempt to merge."""


@dataclass(frozen=True)
class MergeResult:
    sha: str | None                 # the merge commit (None when no task had results)
    branch: str
    files: dict[int, int] = field(default_factory=dict)          # task -> files placed
    deletions: dict[int, list[str]] = field(default_factory=dict)  # task -> paths it deleted
    skipped: list[str] = field(default_factory=list)             # "task 1: lib (a submodule)"
    already: bool = False           # this job's merge commit was on the branch already
    message: str = ""               # one sentence for the user
    created: bool = False           # the branch did not exist any more and was created


@dataclass(frozen=True)
class _Entry:
    mode: bytes
    oid: bytes
    path: bytes                     # relative to the task's root


@dataclass
class _Task:
    index: int
    commit: str
    entries: list[_Entry] = field(default_factory=list)     # added or modified
    attributes: list[_Entry] = field(default_factory=list)  # governing .gitattributes copied along
    deletions: list[bytes] = field(default_factory=list)
    skipped: list[bytes] = field(default_factory=list)      # gitlinks


# --------------------------------------------------------------------------------- git

def _git(repo: Path, args: list, *, env: dict | None = None, input: bytes | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    full_env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_LITERAL_PATHSPECS": "1"})
    full_env.update(env or {})
    r = subprocess.run(["git", "--git-dir", str(repo), *args], env=full_env, input=input,
                       capture_output=True, umask=PRIVATE_UMASK)
    if check and r.returncode != 0:
        what = " ".join(a if isinstance(a, str) else os.fsdecode(a) for a in args[:2])
        raise MergeError(f"git {what} failed in {repo}: "
                         f"{r.stderr.decode('utf-8', 'replace').strip()}")
    return r


def _tip(repo: Path, ref: str) -> str | None:
    r = _git(repo, ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
             check=False)
    return r.stdout.decode().strip() if r.returncode == 0 else None


def _is_ancestor(repo: Path, commit: str, of: str) -> bool:
    r = _git(repo, ["merge-base", "--is-ancestor", commit, of], check=False)
    if r.returncode not in (0, 1):
        raise MergeError(f"git merge-base failed in {repo}: {r.stderr.decode('utf-8', 'replace').strip()}")
    return r.returncode == 0


def _missing_commits(repo: Path, shas: list[str]) -> list[str]:
    lines = "".join(f"{s}^{{commit}}\n" for s in shas).encode()
    out = _git(repo, ["cat-file", "--batch-check"], input=lines).stdout.decode().splitlines()
    return [s for s, line in zip(shas, out) if line.endswith(" missing")]


def _move_branch(repo: Path, ref: str, new: str, old: str | None, reason: str,
                 ident: dict[str, str]) -> bool:
    """Compare-and-swap ``ref`` from ``old`` (None: must not exist) to ``new``. False when the
    ref was not at ``old`` any more (a race lost); MergeError on any other failure."""
    expected = old or "0" * len(new)
    r = _git(repo, ["update-ref", "-m", reason, ref, new, expected], env=ident, check=False)
    if r.returncode == 0:
        return True
    if _tip(repo, ref) != old or b"cannot lock ref" in r.stderr:   # moved, or moving right now
        return False
    raise MergeError(f"git update-ref {ref} failed in {repo}: "
                     f"{r.stderr.decode('utf-8', 'replace').strip()}")


def _ident_env(name: str, email: str) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


# ------------------------------------------------------------------------ what a task did

def _task_changes(repo: Path, base: str, index: int, commit: str) -> _Task:
    task = _Task(index, commit)
    out = _git(repo, ["diff-tree", "-r", "--no-renames", "--no-commit-id", "-z", base, commit]).stdout
    fields = out.split(b"\0")
    for meta, path in zip(fields[0::2], fields[1::2]):
        if not meta.startswith(b":"):
            raise MergeError(f"unexpected git diff-tree output for task {index}: {meta[:80]!r}")
        _src_mode, dst_mode, _src, dst, status = meta[1:].split(b" ")
        if status.startswith(b"D"):
            task.deletions.append(path)
        elif dst_mode == GITLINK:
            task.skipped.append(path)
        else:
            task.entries.append(_Entry(dst_mode, dst, path))
    task.attributes = _governing_attributes(repo, commit, task.entries)
    return task


def _governing_attributes(repo: Path, commit: str, entries: list[_Entry]) -> list[_Entry]:
    """The task commit's ``.gitattributes`` files in the directories above ``entries`` that the
    task did not change itself (those move as entries): they say which files are LFS files."""
    placed = {e.path for e in entries}
    wanted: set[bytes] = set()
    for e in entries:
        parts = e.path.split(b"/")[:-1]
        for depth in range(len(parts) + 1):
            attr = b"/".join(parts[:depth] + [b".gitattributes"])
            if attr not in placed:
                wanted.add(attr)
    found: list[_Entry] = []
    names = sorted(wanted)
    for start in range(0, len(names), 500):
        out = _git(repo, ["ls-tree", "-r", "-z", "--full-tree", commit, "--",
                          *names[start:start + 500]]).stdout
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, _, path = rec.partition(b"\t")
            mode, typ, oid = meta.split(b" ")
            if typ == b"blob" and mode in _REGULAR and path in wanted:
                found.append(_Entry(mode, oid, path))
    return found


# ----------------------------------------------------------------------------- the tree

def _free_folder(repo: Path, commit: str, folder: str) -> str:
    """``folder``, unless ``commit`` has a file (not a directory) there: then the first free
    ``<folder>-results[-n]``."""
    for n in range(0, 100):
        name = folder if n == 0 else f"{folder}-results" if n == 1 else f"{folder}-results-{n}"
        out = _git(repo, ["ls-tree", "-z", "--full-tree", commit, "--", name]).stdout
        if not out or out.split(b" ", 2)[1] == b"tree":
            return name
    raise MergeError(f"no free folder for the results: {folder} and its alternatives are files")


def _build_tree(repo: Path, old: str, folder: str, tasks: list[_Task]) -> str:
    lines = []
    for task in tasks:
        prefix = f"{folder}/task-{task.index}/".encode()
        for e in task.attributes + task.entries:
            lines.append(b"%s %s\t%s%s\0" % (e.mode, e.oid, prefix, e.path))
    with tempfile.TemporaryDirectory(prefix="slipway-sweep-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        _git(repo, ["read-tree", f"{old}^{{tree}}"], env=env)
        if lines:
            _git(repo, ["update-index", "-z", "--add", "--replace", "--index-info"], env=env,
                 input=b"".join(lines))
        return _git(repo, ["write-tree"], env=env).stdout.decode().strip()


# ------------------------------------------------------------------------------ message

def show_path(path: bytes) -> str:
    """A path for a human: as is when it is printable UTF-8, else C-quoted with octal bytes."""
    try:
        text = path.decode("utf-8")
        if text.isprintable() and '"' not in text and "\\" not in text:
            return text
    except UnicodeDecodeError:
        pass
    out = []
    for b in path:
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append("\\%03o" % b)
    return '"' + "".join(out) + '"'


def _listed(paths: list[bytes]) -> str:
    shown = ", ".join(show_path(p) for p in paths[:MAX_LISTED_DELETIONS])
    more = len(paths) - MAX_LISTED_DELETIONS
    return shown + (f" and {more} more" if more > 0 else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _commit_message(subject: str, folder: str, tasks: list[_Task], *, job_id: int, branch: str,
                    created_on: str | None, moved_from: str | None) -> bytes:
    body = [f"Results of {_plural(len(tasks), 'task')} of the sweep, each under {folder}/task-<i>/:"]
    for t in tasks:
        extra = f" (+ {_plural(len(t.attributes), '.gitattributes file')} that apply to them)" \
            if t.attributes else ""
        body.append(f"  task {t.index}: {_plural(len(t.entries), 'file')}{extra}")
    notes = [f"task {t.index} deleted: {_listed(t.deletions)}" for t in tasks if t.deletions]
    if notes:
        body += ["", "Deletions are listed, not applied:"] + [f"  {n}" for n in notes]
    skipped = [f"task {t.index}: {_listed(t.skipped)} (submodules are not merged)"
               for t in tasks if t.skipped]
    if skipped:
        body += ["", "Skipped:"] + [f"  {s}" for s in skipped]
    if moved_from:
        body += ["", f"{moved_from} is a file on {branch}, so the results are under {folder}/."]
    if created_on:
        body += ["", f"The branch {branch} did not exist any more: this commit creates it again "
                     f"(on the pushed commit {created_on[:12]})."]
    trailers = format_trailers([("Slipway-Job", job_id), ("Slipway-Sweep-Tasks", len(tasks))])
    text = "\n".join([subject.strip() or f"slipway: results of sweep job {job_id}", "", *body,
                      "", trailers]) + "\n"
    return text.encode("utf-8")


def _already_merged(repo: Path, tip: str, job_id: int) -> str | None:
    """This job's merge commit among the last ALREADY_DEPTH commits of ``tip``, or None. A task's
    own results commit carries ``Slipway-Job`` too, so the sweep trailer must be there as well."""
    fmt = ("--format=%H%x01%(trailers:key=Slipway-Job,valueonly,separator=%x2C)"
           "%x01%(trailers:key=Slipway-Sweep-Tasks,valueonly,separator=%x2C)")
    out = _git(repo, ["log", "-z", "--no-show-signature", f"--max-count={ALREADY_DEPTH}", fmt,
                      tip, "--"]).stdout.decode("utf-8", "replace")
    for rec in out.split("\0"):
        parts = rec.strip().split("\x01")
        if len(parts) == 3 and parts[2].strip() and \
                str(job_id) in [v.strip() for v in parts[1].split(",")]:
            return parts[0]
    return None


# ------------------------------------------------------------------------------- merge

def _check_inputs(repo: Path, branch: str, base: str, tasks: Mapping[int, str], folder: str,
                  job_id: int, attempts: int) -> None:
    problem = branch_problem(branch)
    if problem:
        raise ValueError(f"invalid branch {branch!r}: {problem}")
    if not SHA_RE.fullmatch(base or ""):
        raise ValueError(f"base must be a full commit id, not {base!r}")
    for i, sha in tasks.items():
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise ValueError(f"task index must be a whole number >= 0, not {i!r}")
        if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
            raise ValueError(f"task {i}: results must be a full commit id, not {sha!r}")
    if not FOLDER_RE.fullmatch(folder or "") or folder.endswith((".lock", ".git")) or ".." in folder:
        raise ValueError(f"invalid folder {folder!r}: one name of letters, digits, '.', '_', '-'")
    if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 1:
        raise ValueError(f"job_id must be a whole number >= 1, not {job_id!r}")
    if not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be >= 1, not {attempts!r}")
    if not (Path(repo) / "HEAD").is_file() or not (Path(repo) / "objects").is_dir():
        raise MergeError(f"no git repository at {repo}")


def merge_tasks(repo: Path, *, branch: str, base: str, tasks: Mapping[int, str], folder: str,
                message: str, job_id: int, author_name: str = "Slipway",
                author_email: str = "slipway@localhost", attempts: int = 5) -> MergeResult:
    """Merge every task's results into ``refs/heads/<branch>`` of the bare ``repo`` as one commit
    (see the module doc). ValueError for bad input; MergeError when git fails, a commit is
    missing, or (MergeRaceLost) the branch moved under every one of ``attempts`` tries."""
    repo = Path(repo)
    _check_inputs(repo, branch, base, tasks, folder, job_id, attempts)
    if not tasks:
        return MergeResult(None, branch, message=f"no task of sweep job {job_id} has results: "
                                                 f"nothing was merged into {branch}")
    order = sorted(tasks)
    missing = _missing_commits(repo, [base] + [tasks[i] for i in order])
    if missing:
        raise MergeError(f"sweep job {job_id}: commit(s) not in {repo}: {', '.join(missing)}")
    changes = [_task_changes(repo, base, i, tasks[i]) for i in order]
    files = {t.index: len(t.entries) for t in changes}
    deletions = {t.index: [p.decode("utf-8", "surrogateescape") for p in t.deletions]
                 for t in changes if t.deletions}
    skipped = [f"task {t.index}: {show_path(p)} (a submodule)" for t in changes for p in t.skipped]
    ref = f"refs/heads/{branch}"
    ident = _ident_env(author_name, author_email)
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(0.05 * attempt, 0.5))   # let the other writer finish
        tip = _tip(repo, ref)
        if tip:
            done = _already_merged(repo, tip, job_id)
            if done:
                return MergeResult(done, branch, files, deletions, skipped, already=True,
                                   message=f"the results of sweep job {job_id} are on {branch} "
                                           f"already ({done[:12]})")
        old = tip or base
        where = _free_folder(repo, old, folder)
        parents = [old]
        for i in order:
            c = tasks[i]
            if c not in parents and not _is_ancestor(repo, c, old):
                parents.append(c)
        tree = _build_tree(repo, old, where, changes)
        text = _commit_message(message, where, changes, job_id=job_id, branch=branch,
                               created_on=None if tip else base,
                               moved_from=folder if where != folder else None)
        args = ["commit-tree", "--no-gpg-sign", tree]
        for p in parents:
            args += ["-p", p]
        sha = _git(repo, args, env=ident, input=text).stdout.decode().strip()
        if _move_branch(repo, ref, sha, tip, f"slipway: merge sweep job {job_id}", ident):
            return MergeResult(sha, branch, files, deletions, skipped, created=tip is None,
                               message=_user_message(job_id, branch, sha, where, files, deletions,
                                                     skipped, created=tip is None))
    raise MergeRaceLost(f"sweep job {job_id}: the branch {branch} moved during each of "
                        f"{attempts} attempts to merge the results; nothing was merged, try again")


def _user_message(job_id: int, branch: str, sha: str, folder: str, files: dict[int, int],
                  deletions: dict[int, list[str]], skipped: list[str], *, created: bool) -> str:
    text = (f"merged the results of {_plural(len(files), 'task')} of sweep job {job_id} "
            f"({_plural(sum(files.values()), 'file')}) into {branch} at {sha[:12]}, under {folder}/")
    if deletions:
        text += f"; {_plural(sum(len(d) for d in deletions.values()), 'deletion')} listed, not applied"
    if skipped:
        text += f"; {_plural(len(skipped), 'submodule')} skipped"
    if created:
        text += f"; the branch {branch} did not exist any more and was created"
    return text
