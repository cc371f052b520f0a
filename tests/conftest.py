"""Session-wide fixtures: the live local Slurm cluster the integration tests run against.

The test cluster lives in its own state directory with its own ports, so it never disturbs a
cluster started by `make run`. It is created fresh for each session and stopped at the end.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from tests.ldap_server import ldap_server  # noqa: F401  (a real slapd per test)
from tests.pg_server import postgres_url  # noqa: F401  (a throwaway PostgreSQL per session)

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO / "slurm_conf" / "cluster"
# ``make test`` runs the suite on several pytest-xdist workers (gw0, gw1, ...): each worker
# starts its own cluster, in its own state dir, on its own ports (PORTS_PER_WORKER apart).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(WORKER[2:]) if WORKER.startswith("gw") and WORKER[2:].isdigit() else 0
PORTS_PER_WORKER = 200
_BASE_DIR = Path(os.environ.get("SLIPWAY_TEST_CLUSTER_DIR", REPO / "var" / "test-cluster")).absolute()
TEST_CLUSTER_DIR = _BASE_DIR.with_name(f"{_BASE_DIR.name}-{WORKER}") if WORKER else _BASE_DIR
TEST_PORT_BASE = (int(os.environ.get("SLIPWAY_TEST_PORT_BASE", "16900"))
                  + PORTS_PER_WORKER * WORKER_INDEX)
STARTUP_LOCK = REPO / "var" / "test-cluster-startup.lock"


@dataclasses.dataclass(frozen=True)
class LiveCluster:
    dir: Path
    env: dict[str, str]

    @property
    def slurm_conf(self) -> str:
        return self.env["SLURM_CONF"]

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        return subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True, text=True,
                              check=check, timeout=timeout)


def _cluster(*args: str) -> None:
    subprocess.run([str(CLUSTER_SCRIPT), *args, "--dir", str(TEST_CLUSTER_DIR)], check=True,
                   timeout=240)


@pytest.fixture(autouse=True)
def _keep_umask():
    """``slipway``'s main sets a private process umask (077); a test that runs it in-process
    must not change what later tests (and the cluster they start) create."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield
    os.umask(saved)


@pytest.fixture(scope="session")
def slurm_cluster() -> LiveCluster:
    """Start a fresh cluster for this test session (about 12 s) and stop it afterwards."""
    # one worker's cluster starts at a time: `up` creates the job users and MariaDB's files,
    # which two starts at once would race on
    STARTUP_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(STARTUP_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _cluster("destroy")
        subprocess.run([str(CLUSTER_SCRIPT), "up", "--dir", str(TEST_CLUSTER_DIR), "--port-base",
                        str(TEST_PORT_BASE)], check=True, timeout=240)
    env = {"SLURM_CONF": str(TEST_CLUSTER_DIR / "etc" / "slurm.conf"),
           "SLIPWAY_CLUSTER_DIR": str(TEST_CLUSTER_DIR)}
    # Slurm clients in code under test read SLURM_CONF from the environment.
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield LiveCluster(dir=TEST_CLUSTER_DIR, env=env)
        dead = _dead_daemons()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _cluster("down")
    # A daemon that died during the session (slurmdbd crashing under concurrent sacctmgr edits
    # did, once) fails the run loudly instead of as a string of unrelated-looking timeouts.
    assert not dead, f"Slurm daemons died during the test session: {dead}"


def _dead_daemons() -> dict[str, str]:
    out = subprocess.run([str(CLUSTER_SCRIPT), "status", "--dir", str(TEST_CLUSTER_DIR)],
                         capture_output=True, text=True, timeout=60).stdout
    dead = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] == "down":
            log = TEST_CLUSTER_DIR / "log" / f"{parts[0]}.log"
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            dead[parts[0]] = " | ".join(tail)
    return dead
