"""git for the node program: running it, its environment (the job's credentials), branch names,
the remote and local refs (standard library only).

The token never touches a URL, .git/config, argv or logs: git gets it through the environment
(``GIT_CONFIG_COUNT/KEY/VALUE`` = ``http.<scheme://host/>.extraHeader: Authorization: Basic …``),
which only the job's own user can read (/proc/PID/environ is 0400). git-lfs honours the same
setting, and the LFS actions echo the header back.
"""
from __future__ import annotations

import os
import subprocess
from urllib.parse import urlsplit

from .basic_auth import basic_header


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


def hooks_dir_for(workdir: str) -> str:
    """Where the runner's git keeps its hooks (git-lfs's): beside the checkout, in the job's own
    directory, never inside it (the container sees only the checkout)."""
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(workdir))), "git-hooks")


def git_env(repo_url: str, username: str, token: str, *, workdir: str | None = None) -> dict[str, str]:
    """Environment for git/git-lfs carrying the job's credentials as an extra HTTP header.

    With ``workdir`` (the job's checkout) git's hooks come from ``hooks_dir_for(workdir)``,
    not from the checkout's ``.git/hooks``, and no fsmonitor command runs: the job's code can
    write its checkout's ``.git``, and the runner's git runs on the host after the container."""
    parts = urlsplit(repo_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"repo_url must be http(s)://host/...: {repo_url!r}")
    if parts.username or parts.password:
        raise ValueError("repo_url must not carry credentials")
    scope = f"{parts.scheme}://{parts.netloc}/"
    config = [(f"http.{scope}.extraHeader", f"Authorization: {basic_header(username, token)}"),
              ("lfs.locksverify", "false")]
    if workdir is not None:  # these variables win over the checkout's .git/config
        hooks = hooks_dir_for(workdir)
        os.makedirs(hooks, mode=0o700, exist_ok=True)
        config += [("core.hooksPath", hooks), ("core.fsmonitor", "false")]
    env = {"GIT_CONFIG_COUNT": str(len(config))}
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return _base_env(env)


def run_git(args: list[str], cwd: str, env: dict[str, str], *, check: bool = True,
            input: bytes | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(["git", *args], cwd=cwd, env=env, input=input, capture_output=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise GitFailed(args, r)
    return r


def ensure_remote(cwd: str, env: dict[str, str], repo_url: str, remote: str = "origin") -> None:
    r = run_git(["remote", "get-url", remote], cwd, env, check=False)
    if r.returncode != 0:
        run_git(["remote", "add", remote, repo_url], cwd, env)
    elif r.stdout.decode().strip() != repo_url:
        run_git(["remote", "set-url", remote, repo_url], cwd, env)


def local_ref(cwd: str, env: dict[str, str], name: str) -> str | None:
    r = run_git(["rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], cwd, env, check=False)
    if r.returncode != 0:
        return None
    return r.stdout.decode().strip() or None
