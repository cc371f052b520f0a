"""The local cluster script: every daemon up, nodes with their GPUs, re-running `up` is harmless."""
from __future__ import annotations

import subprocess

import pytest

from tests.conftest import CLUSTER_SCRIPT

pytestmark = pytest.mark.cluster

DAEMONS = ["munged", "mariadb", "slurmdbd", "slurmctld", "slurmd-a4k-1", "slurmd-a4k-2", "slurmd-a6k-1"]


def _status(cluster) -> str:
    out = subprocess.run([str(CLUSTER_SCRIPT), "status", "--dir", str(cluster.dir)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_status_reports_every_daemon_up(slurm_cluster):
    text = _status(slurm_cluster)
    for daemon in DAEMONS:
        line = next(l for l in text.splitlines() if l.startswith(daemon + " "))
        assert " up " in line, line


def test_nodes_have_their_gpus_and_are_usable(slurm_cluster):
    out = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %T %G").stdout
    nodes = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert set(nodes) == {"a4k-1", "a4k-2", "a6k-1"}
    assert "gpu:a4000:4" in nodes["a4k-1"][1]
    assert "gpu:a4000:4" in nodes["a4k-2"][1]
    assert "gpu:a6000:2" in nodes["a6k-1"][1] and "shard" in nodes["a6k-1"][1]
    assert all(state[0] in {"idle", "mixed", "allocated"} for state in nodes.values()), nodes


def test_accounting_has_qos_and_test_users(slurm_cluster):
    qos = slurm_cluster.run("sacctmgr", "-n", "-P", "show", "qos", "format=name,preempt").stdout
    rows = dict(line.split("|") for line in qos.splitlines())
    assert rows["emergency"] == "normal"  # emergency preempts normal
    assoc = slurm_cluster.run("sacctmgr", "-n", "-P", "show", "assoc", "where", "account=slipway-test",
                              "format=user").stdout.split()
    assert {"sw-alice", "sw-bob", "sw-carol"} <= set(assoc)


def test_up_again_is_quick_and_harmless(slurm_cluster):
    before = _status(slurm_cluster)
    out = subprocess.run([str(CLUSTER_SCRIPT), "up", "--dir", str(slurm_cluster.dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "already up" in out.stderr
    assert _status(slurm_cluster) == before  # same PIDs: nothing was restarted
