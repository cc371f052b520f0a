"""Issue 9 item 9: the cluster's env.sh names the data dir of the Slipway on that cluster, so
`source DIR/env.sh` then `slipway ...` uses the server's database (not /var/lib/slipway, shared
by every checkout); `up --data-dir D` on a running cluster rewrites it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CLUSTER_SCRIPT

pytestmark = pytest.mark.cluster
SLIPWAY = str(Path(sys.executable).parent / "slipway")


def _sourced(cluster, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"source {cluster.dir}/env.sh && {command}"],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "SLIPWAY_DATA_DIR": "/nonexistent/elsewhere"})


def test_env_sh_exports_the_data_dir_beside_the_cluster(slurm_cluster):
    text = (slurm_cluster.dir / "env.sh").read_text()
    assert f"export SLIPWAY_DATA_DIR={slurm_cluster.dir}/data\n" in text, text
    r = _sourced(slurm_cluster, 'echo "$SLIPWAY_DATA_DIR"')
    assert r.stdout.strip() == f"{slurm_cluster.dir}/data"


def test_up_with_a_data_dir_rewrites_env_sh_and_the_cli_uses_it(slurm_cluster, tmp_path):
    data = tmp_path / "my data"  # a space: env.sh quotes it
    try:
        r = subprocess.run([str(CLUSTER_SCRIPT), "up", "--dir", str(slurm_cluster.dir),
                            "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "already up" in r.stderr, r.stderr
        r = _sourced(slurm_cluster, f"{SLIPWAY} user list --json")
        assert r.returncode == 0, r.stderr
        assert (data / "slipway.db").is_file()  # the CLI made its database there
    finally:
        subprocess.run([str(CLUSTER_SCRIPT), "up", "--dir", str(slurm_cluster.dir), "--data-dir",
                        str(slurm_cluster.dir / "data")], capture_output=True, timeout=120)
    assert f"SLIPWAY_DATA_DIR={slurm_cluster.dir}/data\n" in (slurm_cluster.dir / "env.sh").read_text()
