"""Commit-back: after the entrypoint exits, commit every changed file and push it home.

Runs on the compute node, in the job's checkout (a detached HEAD at exactly the pushed commit).

    1. Files over ``lfs_threshold_bytes`` that are new/changed get a ``.gitattributes`` line for
       their exact path (``/<escaped path> filter=lfs diff=lfs merge=lfs -text``) so git-lfs
       stores them; ``git lfs install --local`` makes the filter and pre-push hook available.
    2. ``git add -A`` (``.gitignore`` is honoured), commit "slipway: results of job 42 (exit 0)"
       with the git trailers of ``trailers`` (job, commit, image and digest, GPUs, node, cost).
    3. Push to ``refs/heads/results/<branch>/<job>`` — always, forced (a requeued attempt
       replaces the previous attempt's results ref; the ref belongs to the job).
    4. Push to ``refs/heads/<branch>`` with ``--force-with-lease=refs/heads/<branch>:<pushed>``:
       if the user pushed meanwhile this is refused and the results ref keeps the work.
       The two pushes are independent: each is tried whatever the other's outcome, and the
       result (and its message) reports both.

Pushes that fail without a definite answer from the server (connection refused, reset, 5xx,
timeout, a hook that could not reach Slipway) are retried with exponential backoff (0.5 s,
1 s, 2 s, ... capped at 15 s) until ``retry_seconds`` (default 150 s) or ``deadline`` has
passed; a definite answer (the lease refused, bad credentials, no such repository) is final.
The normal case pushes at once. If a push still fails, nothing is thrown away: the commit stays
at HEAD of the job's checkout and under ``refs/slipway/results`` there, so a later attempt
(``push_pending``, which the runner calls when a requeued attempt starts) can push it.

Local bookkeeping refs in the checkout (never pushed): ``refs/slipway/results`` -- the last
results commit made here; ``refs/slipway/pushed`` -- the last commit the results ref on the
server is known to hold; ``refs/slipway/branch`` -- the last commit this job put on the branch
(the lease of a later attempt's branch push).

Nothing changed: no commit is made; the results ref is pushed pointing at the pushed commit (a
record that the job ran and produced nothing) and the branch is left alone
(``branch_updated=False``, the message says why).

The token never touches a URL, .git/config, argv or logs: git gets it through the environment
(``GIT_CONFIG_COUNT/KEY/VALUE`` = ``http.<scheme://host/>.extraHeader: Authorization: Basic …``),
which only the job's own user can read (/proc/PID/environ is 0400). git-lfs honours the same
setting, and the LFS actions echo the header back.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from . import trailers
from .basic_auth import basic_header

log = logging.getLogger(__name__)

DEFAULT_LFS_THRESHOLD = 1 << 20
_GLOB_SPECIALS = re.compile(r"([\\*?\[\]])")


class InvalidBranch(ValueError):
    pass


class GitFailed(RuntimeError):
    def __init__(self, args, result: subprocess.CompletedProcess):
        self.argv = list(args)
        self.returncode = result.returncode
        self.stderr = result.stderr.decode("utf-8", "replace") if isinstance(result.stderr, bytes) \
            else (result.stderr or "")
        super().__init__(f"git {' '.join(self.argv[:2])} failed ({self.returncode}): "
                         f"{self.stderr.strip()[-500:]}")


@dataclass(frozen=True)
class PushOutcome:
    ok: bool
    flag: str | None        # porcelain flag: ' ', '+', '*', '=', '!', '-' ; None: no status line
    summary: str            # e.g. "[new branch]", "[rejected] (stale info)"
    returncode: int
    stderr: str

    @property
    def rejected(self) -> bool:
        return self.flag == "!"


@dataclass(frozen=True)
class CommitBackResult:
    results_ref: str
    sha: str                  # what results_ref points at (the pushed commit when nothing changed)
    changed: bool
    results_pushed: bool
    branch_updated: bool
    message: str
    lfs_paths: tuple[str, ...] = field(default=())
    seconds: float = 0.0

    def event(self) -> dict:
        """The ``results`` event of docs/ARCHITECTURE.md."""
        return {"event": "results", "results_ref": self.results_ref, "sha": self.sha,
                "branch_updated": self.branch_updated, "message": self.message}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["lfs_paths"] = list(self.lfs_paths)
        return d


# ------------------------------------------------------------------------ names & environment
def validate_branch(branch: str) -> str:
    """Refuse what git refuses as a branch name (plus a leading '-'); return it unchanged."""
    if not isinstance(branch, str) or not branch or branch.startswith("-") or "\0" in branch:
        raise InvalidBranch(f"invalid branch name {branch!r}")
    r = subprocess.run(["git", "check-ref-format", f"refs/heads/{branch}"],
                       capture_output=True, env=_base_env())
    if r.returncode != 0:
        raise InvalidBranch(f"invalid branch name {branch!r}")
    return branch


def results_ref(branch: str, job_id: int | str) -> str:
    job = str(job_id)
    if not job.isdigit():
        raise ValueError(f"job id must be digits: {job_id!r}")
    return f"refs/heads/results/{branch}/{job}"


def _base_env(extra: dict | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_CONFIG_GLOBAL": "/dev/null",   # the job user's ~/.gitconfig must not change behaviour
        "GIT_LFS_SKIP_SMUDGE": "0",
    }
    for k in ("TMPDIR", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "NO_PROXY", "GIT_SSL_CAINFO", "SSL_CERT_FILE"):
        if k in os.environ:
            env[k] = os.environ[k]
    if extra:
        env.update(extra)
    return env


def git_env(repo_url: str, username: str, token: str) -> dict[str, str]:
    """Environment for git/git-lfs carrying the job's credentials as an extra HTTP header."""
    parts = urlsplit(repo_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"repo_url must be http(s)://host/...: {repo_url!r}")
    if parts.username or parts.password:
        raise ValueError("repo_url must not carry credentials")
    scope = f"{parts.scheme}://{parts.netloc}/"
    return _base_env({
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": f"http.{scope}.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: {basic_header(username, token)}",
        "GIT_CONFIG_KEY_1": "lfs.locksverify",
        "GIT_CONFIG_VALUE_1": "false",
    })


def run_git(args: list[str], cwd: str, env: dict[str, str], *, check: bool = True,
            input: bytes | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(["git", *args], cwd=cwd, env=env, input=input, capture_output=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise GitFailed(args, r)
    return r


def parse_porcelain(stdout: bytes | str) -> list[tuple[str, str, str]]:
    """``git push --porcelain`` -> [(flag, "from:to", summary)]."""
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
    out = []
    for line in text.splitlines():
        if len(line) >= 2 and line[1] == "\t":
            parts = line[2:].split("\t")
            out.append((line[0], parts[0], parts[1] if len(parts) > 1 else ""))
    return out


def push(cwd: str, env: dict[str, str], refspec: str, *, lease: str | None = None,
         remote: str = "origin", timeout: float | None = 120) -> PushOutcome:
    args = ["push", "--porcelain"]
    if lease:
        args.append(f"--force-with-lease={lease}")
    args += [remote, refspec]
    try:
        r = run_git(args, cwd, env, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return PushOutcome(False, None, "timed out", 124, "push timed out")
    status = parse_porcelain(r.stdout)
    stderr = r.stderr.decode("utf-8", "replace")
    if not status:
        return PushOutcome(False, None, "", r.returncode, stderr)
    flag, _ref, summary = status[-1]
    ok = r.returncode == 0 and flag in (" ", "+", "*", "=")
    return PushOutcome(ok, flag, summary, r.returncode, stderr)


# ------------------------------------------------------------------------------- LFS tracking
def _attr_pattern(path: str) -> str:
    """A .gitattributes pattern matching exactly ``path`` (relative to the repository root).

    Glob characters are backslash-escaped and the pattern is anchored with a leading '/'; a
    pattern with whitespace, quotes, control or non-ASCII characters is written C-quoted
    (git >= 2.11 unquotes attribute patterns), non-ASCII bytes as octal escapes.
    """
    pat = "/" + _GLOB_SPECIALS.sub(r"\\\1", path)
    raw = pat.encode("utf-8", "surrogateescape")
    if not any(b <= 32 or b >= 127 or b == 34 for b in raw):
        return pat
    out = ['"']
    for b in raw:
        if b == 92:
            out.append("\\\\")
        elif b == 34:
            out.append('\\"')
        elif b < 32 or b >= 127:
            out.append("\\%03o" % b)
        else:
            out.append(chr(b))
    out.append('"')
    return "".join(out)


def _lfs_available(cwd: str, env: dict[str, str]) -> bool:
    return run_git(["lfs", "version"], cwd, env, check=False).returncode == 0


def _changed_files(cwd: str, env: dict[str, str]) -> list[str]:
    r = run_git(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
                 "--ignore-submodules=all"], cwd, env)
    paths = []
    for rec in r.stdout.split(b"\0"):
        if len(rec) < 4:
            continue
        xy, p = rec[:2].decode(), rec[3:]
        if "D" in xy:
            continue
        paths.append(os.fsdecode(p))
    return paths


def _lfs_candidates(cwd: str, env: dict[str, str], threshold: int) -> list[str]:
    big = []
    for p in _changed_files(cwd, env):
        try:
            st = os.lstat(os.path.join(cwd, p))
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size > threshold:
            big.append(p)
    if not big:
        return []
    tracked = _lfs_tracked(cwd, env, big)
    return [p for p in big if p not in tracked]


def _lfs_tracked(cwd: str, env: dict[str, str], paths: list[str]) -> set[str]:
    data = b"".join(os.fsencode(p) + b"\0" for p in paths)
    r = run_git(["check-attr", "-z", "--stdin", "filter"], cwd, env, input=data)
    fields = r.stdout.split(b"\0")
    out = set()
    for i in range(0, len(fields) - 2, 3):
        if fields[i + 2] == b"lfs":
            out.add(os.fsdecode(fields[i]))
    return out


def track_large_files(cwd: str, env: dict[str, str], threshold: int) -> list[str]:
    """Add exact-path LFS lines to .gitattributes for new/changed files over ``threshold``."""
    big = _lfs_candidates(cwd, env, threshold)
    if not big:
        return []
    attrs = os.path.join(cwd, ".gitattributes")
    existing = b""
    if os.path.lexists(attrs):
        if not os.path.isfile(attrs) or os.path.islink(attrs):
            log.warning(".gitattributes is not a regular file; large files stay in plain git")
            return []
        with open(attrs, "rb") as f:
            existing = f.read()
    lines = [f"{_attr_pattern(p)} filter=lfs diff=lfs merge=lfs -text\n".encode("utf-8",
                                                                             "surrogateescape")
             for p in big]
    with open(attrs, "ab") as f:
        if existing and not existing.endswith(b"\n"):
            f.write(b"\n")
        f.write(b"# slipway: job results over the LFS threshold\n")
        f.writelines(lines)
    tracked = _lfs_tracked(cwd, env, big)
    missed = [p for p in big if p not in tracked]
    if missed:
        log.warning("could not express LFS patterns for %d path(s); they stay in plain git: %r",
                    len(missed), missed[:5])
    return [p for p in big if p in tracked]


# -------------------------------------------------------------------------------- commit-back
DEFAULT_PUSH_RETRY_SECONDS = 150.0
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 15.0
PUSH_TIMEOUT = 120.0        # one push, when no deadline is nearer
MIN_PUSH_TIMEOUT = 5.0      # one push, when the deadline has (almost) passed
LOCAL_RESULTS_REF = "refs/slipway/results"
LOCAL_PUSHED_REF = "refs/slipway/pushed"
LOCAL_BRANCH_REF = "refs/slipway/branch"
# stderr of a push that the server answered for good: retrying cannot help
_DEFINITE_STDERR = re.compile(r"Authentication failed|could not read (?:Username|Password)"
                              r"|repository '.*' not found|The requested URL returned error: 40[34]",
                              re.IGNORECASE)


def commit_message(job_id, exit_code: int | None, signal: str | None = None) -> str:
    status = f"exit {exit_code}" if exit_code is not None else "no exit status"
    if signal:
        status += f", signal {signal}"
    return f"slipway: results of job {job_id} ({status})"


def ensure_remote(cwd: str, env: dict[str, str], repo_url: str, remote: str = "origin") -> None:
    r = run_git(["remote", "get-url", remote], cwd, env, check=False)
    if r.returncode != 0:
        run_git(["remote", "add", remote, repo_url], cwd, env)
    elif r.stdout.decode().strip() != repo_url:
        run_git(["remote", "set-url", remote, repo_url], cwd, env)


def is_transient(out: PushOutcome) -> bool:
    """Whether a failed push may succeed if tried again (the server did not answer for good)."""
    if out.ok:
        return False
    if out.flag is None:            # no status line: connection refused/reset, 5xx, timeout
        return not _DEFINITE_STDERR.search(out.stderr or "")
    # "[remote rejected] (pre-receive hook declined)" when the hook could not reach Slipway,
    # "(failed to update ref)" / "(cannot lock ref ...)" under a concurrent update; but a lease
    # or fast-forward refusal ("[rejected] (stale info)", "(fetch first)") is an answer.
    return out.flag == "!" and out.summary.startswith("[remote rejected]")


def push_timeout(left: float | None) -> float:
    """How long one push may run when ``left`` seconds remain before the retry deadline (None:
    no deadline): PUSH_TIMEOUT at most, never longer than ``left`` (but MIN_PUSH_TIMEOUT at
    least, so a push that is always made gets a chance). After a TERM the deadline sits below the
    portal's hard-cancel grace, so a hung push must end before the job is SIGKILLed."""
    if left is None:
        return PUSH_TIMEOUT
    return max(MIN_PUSH_TIMEOUT, min(PUSH_TIMEOUT, left))


def push_with_retry(cwd: str, env: dict[str, str], refspec: str, *, lease: str | None = None,
                    deadline: float | None = None, max_attempts: int | None = None,
                    sleep=time.sleep, what: str = "push") -> tuple[PushOutcome, int]:
    """``push`` until it succeeds, gets a definite answer, ``max_attempts`` pushes were made or
    the next try would start after ``deadline`` (time.monotonic()). -> (last outcome, pushes).

    Always pushes at least once. Waits 0.5 s, 1 s, 2 s, ... (at most 15 s) between tries. Each
    push is cut off after ``push_timeout`` (the time left before ``deadline``, at most 120 s),
    so with a deadline the whole loop ends by ``deadline + MIN_PUSH_TIMEOUT``.
    """
    delay = RETRY_FIRST_DELAY
    n = 0
    while True:
        n += 1
        left = None if deadline is None else deadline - time.monotonic()
        # a hung push must end before the deadline (after a TERM: before the hard kill)
        out = push(cwd, env, refspec, lease=lease, timeout=push_timeout(left))
        if not is_transient(out):
            return out, n
        if max_attempts is not None and n >= max_attempts:
            return out, n
        if deadline is not None and time.monotonic() + delay > deadline:
            return out, n
        log.warning("%s failed (%s); retrying in %.1f s", what, _reason(out), delay)
        sleep(delay)
        delay = min(delay * 2, RETRY_MAX_DELAY)


def commit_all(cwd: str, env: dict[str, str], *, message: str, trailer: str,
               lfs_threshold_bytes: int | None = DEFAULT_LFS_THRESHOLD,
               author_name: str = "Slipway", author_email: str = "slipway@localhost"
               ) -> tuple[bool, list[str], list[str]]:
    """Commit every changed/new/deleted file of the work tree on top of HEAD (files over the LFS
    threshold through git-lfs). -> (committed, lfs paths, notes). Records the commit under
    ``refs/slipway/results`` so it survives a later checkout of another commit."""
    lfs_paths: list[str] = []
    notes: list[str] = []
    if lfs_threshold_bytes is not None and lfs_threshold_bytes >= 0:
        if _lfs_available(cwd, env):
            run_git(["lfs", "install", "--local"], cwd, env)
            lfs_paths = track_large_files(cwd, env, lfs_threshold_bytes)
        elif _lfs_candidates(cwd, env, lfs_threshold_bytes):
            notes.append("git-lfs is not installed on the node: large files went into plain git")
    run_git(["add", "-A"], cwd, env)
    if run_git(["diff", "--cached", "--quiet"], cwd, env, check=False).returncode == 0:
        return False, lfs_paths, notes
    cenv = dict(env, GIT_AUTHOR_NAME=author_name, GIT_AUTHOR_EMAIL=author_email,
                GIT_COMMITTER_NAME=author_name, GIT_COMMITTER_EMAIL=author_email)
    run_git(["commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message, "-m", trailer],
            cwd, cenv)
    run_git(["update-ref", LOCAL_RESULTS_REF, "HEAD"], cwd, env)
    return True, lfs_paths, notes


def local_ref(cwd: str, env: dict[str, str], name: str) -> str | None:
    r = run_git(["rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], cwd, env, check=False)
    if r.returncode != 0:
        return None
    return r.stdout.decode().strip() or None


def _mark(cwd: str, env: dict[str, str], name: str, sha: str) -> None:
    run_git(["update-ref", name, sha], cwd, env, check=False)


def commit_back(workdir: str, *, repo_url: str, username: str, token: str, branch: str,
                job_id: int | str, pushed_sha: str, exit_code: int | None,
                signal: str | None = None, lfs_threshold_bytes: int = DEFAULT_LFS_THRESHOLD,
                author_name: str = "Slipway", author_email: str = "slipway@localhost",
                push_attempts: int | None = None, deadline: float | None = None,
                retry_seconds: float = DEFAULT_PUSH_RETRY_SECONDS,
                lease_sha: str | None = None, sleep=time.sleep,
                trailer: str | None = None) -> CommitBackResult:
    """Commit the job's files and push them; see the module docstring. Never raises for push
    failures (they are in the result); raises InvalidBranch / GitFailed for local problems.
    ``trailer``: the commit's trailer block (``trailers.format_trailers``; the runner gives the
    job's full facts); default: the job and its exit status only.

    The commit is made on top of HEAD, which is ``pushed_sha`` or (a requeued attempt that
    resumed from an earlier attempt's files) a descendant of it. Retries of each push stop at
    ``deadline`` (a time.monotonic() value; default: ``retry_seconds`` from now) or after
    ``push_attempts`` pushes. ``lease_sha``: where the branch must still be for the branch push
    (default ``pushed_sha``; an earlier attempt that updated the branch moves it).
    """
    t0 = time.monotonic()
    validate_branch(branch)
    for what, value in (("pushed_sha", pushed_sha), ("lease_sha", lease_sha or pushed_sha)):
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", value or ""):
            raise ValueError(f"{what} must be a full commit id: {value!r}")
    if deadline is None:
        deadline = t0 + max(0.0, float(retry_seconds))
    ref = results_ref(branch, job_id)
    cwd = os.fspath(workdir)
    env = git_env(repo_url, username, token)
    ensure_remote(cwd, env, repo_url)

    msg = commit_message(job_id, exit_code, signal)
    if trailer is None:
        trailer = trailers.basic_trailers(job_id, exit_code, signal)
    _committed, lfs_paths, notes = commit_all(
        cwd, env, message=msg, trailer=trailer, lfs_threshold_bytes=lfs_threshold_bytes,
        author_name=author_name, author_email=author_email)
    sha = run_git(["rev-parse", "HEAD"], cwd, env).stdout.decode().strip()
    changed = sha != pushed_sha
    short_branch = ref[len("refs/heads/"):]

    # 1. the results ref (forced: it belongs to the job)
    res, _n = push_with_retry(cwd, env, f"+{sha}:{ref}", deadline=deadline,
                              max_attempts=push_attempts, sleep=sleep,
                              what=f"push of {short_branch}")
    results_ok = res.ok
    if results_ok:
        _mark(cwd, env, LOCAL_PUSHED_REF, sha)
    results_reason = "" if results_ok else _reason(res)
    if results_reason:
        log.error("job %s: could not push %s: %s", job_id, short_branch, results_reason)

    if not changed:
        if results_ok:
            message = (f"slipway: job {job_id} changed no files; {short_branch} points at the "
                       f"pushed commit {pushed_sha[:12]} and {branch} was left as it was")
        else:
            message = (f"slipway: could not push the results of job {job_id}: {results_reason} "
                       f"(the job changed no files; {branch} was left as it was)")
        return CommitBackResult(ref, sha, False, results_ok, False, _join(message, notes),
                                tuple(lfs_paths), time.monotonic() - t0)

    # 2. the branch, with a lease on the commit it had when the job started -- tried whatever
    #    happened to the results ref.
    lease = lease_sha or pushed_sha
    res, _n = push_with_retry(cwd, env, f"{sha}:refs/heads/{branch}",
                              lease=f"refs/heads/{branch}:{lease}", deadline=deadline,
                              max_attempts=push_attempts, sleep=sleep, what=f"push of {branch}")
    updated = res.ok
    if updated:
        _mark(cwd, env, LOCAL_BRANCH_REF, sha)
    moved = (not updated and res.rejected
             and any(w in res.summary for w in ("stale", "fetch first", "non-fast-forward")))

    kept = (f"the commit {sha[:12]} is kept in the job's checkout ({cwd}) and a requeued "
            f"attempt pushes it")
    if results_ok and updated:
        message = (f"slipway: results of job {job_id} pushed to {branch} as {sha[:12]} "
                   f"(also kept at {short_branch})")
    elif results_ok and moved:
        message = (f"slipway: {branch} moved since job {job_id} started (a newer push), so it "
                   f"was not updated; the results are on {short_branch} ({sha[:12]}): "
                   f"{shlex.join(['git', 'fetch', 'slipway', short_branch])} && git merge FETCH_HEAD")
    elif results_ok:
        message = (f"slipway: could not update {branch} ({_reason(res)}); the results of job "
                   f"{job_id} are on {short_branch} ({sha[:12]})")
    elif updated:
        message = (f"slipway: results of job {job_id} pushed to {branch} as {sha[:12]}, but "
                   f"{short_branch} could not be pushed ({results_reason})")
    elif moved:
        message = (f"slipway: could not push the results of job {job_id} to {short_branch} "
                   f"({results_reason}), and {branch} moved since the job started so it was not "
                   f"updated; {kept}")
    else:
        message = (f"slipway: could not push the results of job {job_id} ({short_branch}: "
                   f"{results_reason}; {branch}: {_reason(res)}); {kept}")
    if not updated and not results_ok:
        log.error("%s", message)
    return CommitBackResult(ref, sha, True, results_ok, updated, _join(message, notes),
                            tuple(lfs_paths), time.monotonic() - t0)


def push_pending(workdir: str, *, repo_url: str, username: str, token: str, branch: str,
                 job_id: int | str, pushed_sha: str, deadline: float | None = None,
                 max_attempts: int | None = None, sleep=time.sleep) -> PushOutcome | None:
    """Push HEAD of a job's checkout to its results ref if it holds work the server may not
    have (a commit other than ``pushed_sha`` that is not known to be pushed). None: nothing to
    push. Never raises for push failures; the commit stays where it is either way."""
    cwd = os.fspath(workdir)
    env = git_env(repo_url, username, token)
    head = local_ref(cwd, env, "HEAD")
    if head is None or head == pushed_sha or head == local_ref(cwd, env, LOCAL_PUSHED_REF):
        return None
    ensure_remote(cwd, env, repo_url)
    ref = results_ref(validate_branch(branch), job_id)
    out, _n = push_with_retry(cwd, env, f"+{head}:{ref}", deadline=deadline,
                              max_attempts=max_attempts, sleep=sleep,
                              what=f"push of {ref[len('refs/heads/'):]}")
    if out.ok:
        _mark(cwd, env, LOCAL_PUSHED_REF, head)
    return out


def _reason(out: PushOutcome) -> str:
    return out.summary or _last_line(out.stderr) or f"git exited {out.returncode}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _join(message: str, notes: list[str]) -> str:
    return " ".join([message, *notes]) if notes else message
