"""A running Slipway for end-to-end tests: the real `slipway` CLI, `slipway serve` in its own
process on a free port, real git over HTTP, and the live test cluster.

Everything a user would do goes through the same front doors a user has: the CLI for
administration, `git push`/`git pull` for work, `slipway job ...` to watch and cancel.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SLIPWAY = str(Path(sys.executable).parent / "slipway")
IMAGE_CACHE = Path(os.environ.get("SLIPWAY_TEST_IMAGE_CACHE", "/var/tmp/slipway-images"))
TERMINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_pair() -> int:
    """A free port whose next one is free too: the server's, and its workspace gateway's.

    Drawn BELOW the kernel's ephemeral range (20000 up to it; the test clusters use 16900+): a
    port the kernel hands out for port 0 can be given again, between this check and the
    server's bind, to any process's outgoing connection (a full run once lost a server to
    "Address already in use" on its workspace port that way); ports below the range never are."""
    rng, low = random.SystemRandom(), _ephemeral_low()
    for _ in range(200):
        port = rng.randrange(20000, low - 1) if low > 21000 else free_port()
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free ports in a row")


def ensure_images(*names: str) -> None:
    """Local container images (instant when already built; the python one takes about a minute)."""
    subprocess.run([str(REPO / "container_images" / "build"), "--dest", str(IMAGE_CACHE), *names],
                   check=True, timeout=900, capture_output=True)


@dataclass
class Slipway:
    url: str
    env: dict[str, str]
    data_dir: Path
    log_file: Path
    tokens: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    homes: Path | None = None
    # job id -> the token that may see it (the API's answer for ``job``), found on first use
    _job_token: dict[int, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ server lifecycle
    def start(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        log = open(self.log_file, "ab")
        # --workspace-port given: a taken port is an error, never a server without its gateway
        self.proc = subprocess.Popen([SLIPWAY, "serve", "--host", "127.0.0.1", "--port", port,
                                      "--workspace-port", str(int(port) + 1)],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"slipway serve exited: {self.log_file.read_text()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError("slipway serve did not answer /healthz in 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    # ----------------------------------------------------------------------------- CLI
    def cli(self, *args: str, check: bool = True, as_user: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        argv = [SLIPWAY, *(["--as", as_user] if as_user else []), *args]
        res = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def job(self, job_id: int) -> dict:
        """``slipway job show ID --json``'s dict. Read from the API (``GET /api/jobs/ID``, the
        shape the CLI prints in remote mode) with a token of the test's users that may see the
        job: a CLI run costs ~2 s of CPU (a Python start and its imports), and the tests poll
        jobs several times a second, which kept both cores of a CI machine busy. When no token
        may see the job, or the server is down, the CLI answers (it reads the database)."""
        from portal.cli.jobs import _cli_job_json

        cached = self._job_token.get(job_id)
        for token in ([cached] if cached else []) + [t for t in self.tokens.values() if t != cached]:
            req = urllib.request.Request(f"{self.url}/api/jobs/{int(job_id)}",
                                         headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    body = json.loads(r.read())
            except urllib.error.HTTPError:
                continue          # not this user's job (404), a revoked token (401)
            except OSError:
                break             # the server is down (a test stopped it): ask the CLI
            self._job_token[job_id] = token
            return _cli_job_json(body["job"])
        return json.loads(self.cli("job", "show", str(job_id), "--json").stdout)

    def wait_job(self, job_id: int, states=TERMINAL, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            if time.monotonic() > deadline or (job["state"] in TERMINAL and not set(states) & TERMINAL):
                log = Path(job["log"])
                raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s: {job}\n"
                                     f"log: {log.read_text() if log.exists() else '(none)'}")
            time.sleep(0.3)

    def wait_results(self, job_id: int, timeout: float = 120) -> dict:
        """Wait until the job ended and its runner reported the results push."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.wait_job(job_id, timeout=max(1.0, deadline - time.monotonic()))
            if job["results_ref"] or time.monotonic() > deadline:
                return job
            time.sleep(0.3)

    # ----------------------------------------------------------------------------- git
    def remote(self, user: str, team: str, project: str) -> str:
        host = self.url.split("://", 1)[1]
        return f"http://{user}:{self.tokens[user]}@{host}/git/{team}/{project}.git"

    def git(self, *args: str, cwd: Path | str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ["PATH"], "HOME": str(self.homes), "GIT_TERMINAL_PROMPT": "0",
               "GIT_AUTHOR_NAME": "Test User", "GIT_AUTHOR_EMAIL": "test@example.org",
               "GIT_COMMITTER_NAME": "Test User", "GIT_COMMITTER_EMAIL": "test@example.org",
               "LANG": "C.UTF-8"}
        res = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res


def start_slipway(cluster_env: dict[str, str], **settings: str) -> Slipway:
    """A fresh Slipway (data dir under /tmp, readable by the job users) with its server running."""
    ensure_images("busybox", "python")
    data = Path(tempfile.mkdtemp(prefix="slipway-e2e-", dir="/tmp"))
    data.chmod(0o755)
    homes = data / "client-home"
    homes.mkdir()
    port = free_port_pair()
    # Several Slipways share the test cluster's Slurm database (a module's server and a test's
    # own): each owns its own account namespace, as two production Slipways on one slurmdbd would.
    prefix = "e" + secrets.token_hex(3) + "-"
    env = {
        **os.environ, **cluster_env,
        "SLIPWAY_DATA_DIR": str(data),
        "SLIPWAY_BASE_URL": f"http://127.0.0.1:{port}",
        "SLIPWAY_IMAGES_ROOT": str(IMAGE_CACHE),
        "SLIPWAY_RECONCILE_INTERVAL": "1",
        "SLIPWAY_CANCEL_GRACE": "30",
        "SLIPWAY_SLURM_ACCOUNT_PREFIX": prefix,
        **settings,
    }
    env.pop("SLIPWAY_USER", None)
    sw = Slipway(url=f"http://127.0.0.1:{port}", env=env, data_dir=data,
                 log_file=data / "server.log", homes=homes)
    subprocess.run(["git", "config", "--global", "init.defaultBranch", "main"],
                   env={"HOME": str(homes), "PATH": os.environ["PATH"]}, check=True)
    sw.start()
    return sw


def cleanup(sw: Slipway, cluster_env: dict[str, str]) -> None:
    sw.stop()
    # Slipway's jobs still in Slurm (a failed test) are cancelled so they cannot leak.
    out = subprocess.run(["squeue", "-h", "-o", "%i %k"], env={**os.environ, **cluster_env},
                         capture_output=True, text=True)
    ids = [line.split()[0] for line in out.stdout.splitlines() if "slipway" in line]
    if ids:
        subprocess.run(["scancel", *ids], env={**os.environ, **cluster_env}, capture_output=True)
    _drop_accounts(sw.env["SLIPWAY_SLURM_ACCOUNT_PREFIX"], {**os.environ, **cluster_env})
    shutil.rmtree(sw.data_dir, ignore_errors=True)


def _drop_accounts(prefix: str, env: dict[str, str]) -> None:
    """Remove this Slipway's Slurm accounts (and their associations) once its jobs are gone."""
    out = subprocess.run(["sacctmgr", "-nP", "show", "account", "format=account"], env=env,
                         capture_output=True, text=True)
    names = [a for a in out.stdout.split() if a.startswith(prefix)]
    for _ in range(10):
        if not names:
            return
        res = subprocess.run(["sacctmgr", "-i", "delete", "account", "where", "name=" + ",".join(names)],
                             env=env, capture_output=True, text=True)
        if res.returncode == 0 or "Nothing deleted" in res.stdout + res.stderr:
            return
        time.sleep(1)  # a cancelled job still ending: sacctmgr refuses until it has


ENTRYPOINT = """#!/bin/bash
set -e
echo "job says hello"
echo "gpus=$CUDA_VISIBLE_DEVICES port=$PORT uid=$(id -u)" > result.txt
cat /etc/slipway-image >> result.txt
python3 -c "open('big.bin', 'wb').write(bytes(range(256)) * 8192)"
"""


def write_project(path: Path, entrypoint: str = ENTRYPOINT, extra: dict[str, str] | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "slipway-entrypoint.sh").write_text(entrypoint)
    (path / "slipway-entrypoint.sh").chmod(0o755)
    (path / "README").write_text("an experiment\n")
    for name, text in (extra or {}).items():
        (path / name).write_text(text)


def job_id_from_push(output: str) -> int:
    """`remote: slipway: job 42 queued (a4000 x2)` -> 42."""
    for line in output.splitlines():
        if "slipway: job " in line and " queued (" in line:
            return int(line.split("slipway: job ", 1)[1].split()[0])
    raise AssertionError(f"no job number in the push output:\n{output}")


def another_server(sw: Slipway) -> Slipway:
    """A second ``slipway serve`` of the same Slipway: ``sw``'s data dir, database and settings
    (two servers of one Slipway, docs/FAULTS.md §4), on a port of its own with its own log.
    Stop it before ``cleanup(sw, ...)``, which removes the data dir they share."""
    port = free_port_pair()
    other = Slipway(url=f"http://127.0.0.1:{port}", env=dict(sw.env), data_dir=sw.data_dir,
                    log_file=sw.data_dir / f"server-{port}.log", tokens=sw.tokens, homes=sw.homes)
    other.start()
    return other
