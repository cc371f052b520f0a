"""A CPU-only job on the live local cluster: no GPU, the cores and memory asked for, AllocTRES
``cpu=N`` in sacct, billed per core-hour (issue 12). Skipped without a cluster (see
test_bridge_cluster.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from accounting.biller import Biller
from accounting.ledger import InMemoryLedgerStore
from accounting.rates import Rates
from slurm_bridge.script import sbatch_options
from tests.integration.test_bridge_cluster import (bridge, job, jobdir, settled_record,  # noqa: F401
                                                   slurm_env, submitted)

pytestmark = pytest.mark.cluster


def test_cpu_only_job_gets_its_cores_no_gpu_and_is_billed_per_core(bridge, jobdir, submitted):  # noqa: F811
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    req = job(jobdir, "cpu-only", ["bash", "-c", 'echo "N=$(nproc) CVD=${CUDA_VISIBLE_DEVICES-unset}"; sleep 1'],
              gpus=None, cpus=2, mem_mb=256)
    assert not any(o.startswith("--gres") for o in sbatch_options(req))
    job_id = bridge.submit(req)
    submitted.append(job_id)
    rec = settled_record(bridge, job_id, since)[-1]
    out = (jobdir / f"{job_id}.out").read_text()
    assert out.startswith("N=2 "), out
    assert "CVD=unset" in out or "CVD= " in out or out.rstrip().endswith("CVD="), out
    assert rec.state == "COMPLETED" and dict(rec.gpus) == {} and rec.shards == 0
    assert rec.cpus == 2

    store = InMemoryLedgerStore()
    Biller(store, Rates({"a4000": "0.50"}, cpu_hourly="0.02")).tick(  # type: ignore[arg-type]
        [rec], datetime.now(timezone.utc))
    [charge] = store.all_entries()
    assert (charge.gpu_type, charge.gpu_count, charge.cpu_only) == ("cpu", 2, True)
    assert charge.to_minute == -(-rec.elapsed_s // 60)
