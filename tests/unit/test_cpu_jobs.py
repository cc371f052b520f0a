"""CPU-only jobs end to end: gpus=none / cpus=N / mem=, the Slurm request, AllocTRES cpu=, and
billing per core-hour at ``cpu_rate`` (issue 12, docs/WORKSPACES.md "Compute")."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import select

from accounting.biller import Biller
from accounting.billing import AttemptRecord, allocation, plan_gpu_charges
from accounting.ledger import InMemoryLedgerStore
from accounting.rates import Rates, RatesError
from portal import integrations as ig
from portal.billing import ledger as billing
from portal.config import Config, ConfigError, load_config, served_base_url  # noqa: F401 (the split keeps these)
from portal.db import Job, LedgerEntry
from portal.jobs import push, push_options
from portal.jobs.reconciler import Reconciler
from portal.projects import settings as project_settings
from slurm_bridge.errors import InvalidRequest
from slurm_bridge.records import SacctRecord, parse_sacct, parse_squeue, tres_cpus
from slurm_bridge.request import GpuRequest, JobRequest, parse_mem, validate
from slurm_bridge.script import sbatch_options
from tests.support.fakes import (Clock, FakeBackend, commit_to_bare, hook_payload, make_services,
                                 seed)

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=timezone.utc)
RATES = Rates({"a4000": "0.50"}, cpu_hourly="0.02")  # type: ignore[arg-type]
Z = "0" * 40


# ------------------------------------------------------------------------------ slurm_bridge
@pytest.mark.parametrize("text,mb", [("16G", 16384), ("512M", 512), ("512", 512), ("1T", 1048576),
                                     ("2g", 2048), ("16GB", 16384)])
def test_parse_mem(text, mb):
    assert parse_mem(text) == mb


@pytest.mark.parametrize("text", ["", "0", "1.5G", "-1G", "16X", "12B", "lots"])
def test_parse_mem_refuses_what_it_cannot_read(text):
    with pytest.raises(InvalidRequest, match="memory"):
        parse_mem(text)


def _req(**kw) -> JobRequest:
    base = dict(name="slipway-7", user="sw-alice", account="team-nlp", command=["/bin/true"],
                workdir="/tmp/j", output="/tmp/j/out.log")
    return JobRequest(**{**base, **kw})


def test_cpu_only_request_has_no_gres_and_asks_for_cores_and_memory():
    req = validate(_req(gpus=None, cpus=4, mem_mb=16384), {"a4000": 4})
    opts = sbatch_options(req)
    assert "--cpus-per-task=4" in opts and "--mem=16384M" in opts
    assert not any(o.startswith("--gres") for o in opts)
    gpu = sbatch_options(validate(_req(gpus=GpuRequest("a4000", 2)), {"a4000": 4}))
    assert "--gres=gpu:a4000:2" in gpu and "--cpus-per-task=1" in gpu
    assert not any(o.startswith("--mem") for o in gpu)


def test_alloc_tres_cpus_are_parsed():
    assert tres_cpus("billing=4,cpu=4,mem=16G,node=1") == 4
    assert tres_cpus("cpu=12") == 12 and tres_cpus("") == 0 and tres_cpus(None) == 0
    text = ("31|COMPLETED|0:0|1795452581|1795452581|1795452671|90|a4k-1|billing=2,cpu=2,mem=1G,node=1"
            "|team-nlp|normal|sw-alice|slipway-7\n"
            "32|COMPLETED|0:0|1795452581|1795452581|1795452671|90|a4k-1|billing=9,cpu=8,"
            "gres/gpu:a4000=1,gres/gpu=1,mem=1G,node=1|team-nlp|normal|sw-alice|slipway-8\n")
    cpu, gpu = parse_sacct(text)
    assert (cpu.cpus, dict(cpu.gpus), cpu.shards) == (2, {}, 0)
    assert (gpu.cpus, dict(gpu.gpus)) == (8, {"a4000": 1})
    [q] = parse_squeue({"jobs": [{"job_id": 5, "job_state": "PENDING",
                                  "tres_req_str": "cpu=4,mem=16G,node=1,billing=4"}]})
    assert q.cpus == 4 and dict(q.gpus) == {}


# -------------------------------------------------------------------------------- accounting
def test_rates_price_cores_and_refuse_cpu_as_a_gpu_type():
    assert Rates({"a4000": "0.50"}).cpu_hourly == Decimal("0.02")  # type: ignore[arg-type]
    assert RATES.gpu_rate("cpu") == Decimal("0.02") and RATES.gpu_rate("a4000") == Decimal("0.50")
    assert Rates.from_config({"gpu_hourly": {"a4000": "1"}, "cpu_hourly": "0.05"}).cpu_hourly \
        == Decimal("0.05")
    for bad in ("cpu", "none"):
        with pytest.raises(RatesError, match="cannot be a GPU type"):
            Rates({bad: "1.00"})  # type: ignore[dict-item]
    with pytest.raises(RatesError, match="cpu_hourly"):
        Rates({}, cpu_hourly="-1")  # type: ignore[arg-type]


def _rec(**kw) -> AttemptRecord:
    base = dict(job_id=31, attempt=0, state="COMPLETED", start=T0, end=T0 + timedelta(seconds=90),
                elapsed_s=90, account="nlp")
    return AttemptRecord(**{**base, **kw})


def test_cpu_only_attempts_are_billed_per_core_hour_gpu_attempts_only_for_gpus():
    assert allocation(_rec(cpus=4)) == {"cpu": 4}
    assert allocation(_rec(gpus={"a4000": 1}, cpus=8)) == {"a4000": 1}   # cores are in the GPU price
    assert allocation(_rec(shards=2, cpus=1)) == {"shard": 2}
    assert allocation(_rec()) == {}                                      # nothing allocated
    [charge] = plan_gpu_charges([_rec(cpus=4)], lambda j, a: 0, RATES, T0 + timedelta(hours=1))
    # 90 s -> 2 started minutes x 4 cores x $0.02/h = $0.002667
    assert (charge.gpu_type, charge.gpu_count, charge.minutes) == ("cpu", 4, 2)
    assert charge.amount == Decimal("0.002667") and charge.cpu_only
    assert "CPU only, 4 cores @ $0.02/core-hour" in charge.describe()
    [g] = plan_gpu_charges([_rec(job_id=32, gpus={"a4000": 1}, cpus=8)], lambda j, a: 0, RATES,
                           T0 + timedelta(hours=1))
    assert (g.gpu_type, g.gpu_count, g.amount) == ("a4000", 1, Decimal("0.016667"))
    assert "1x a4000 @ $0.50/h" in g.describe() and not g.cpu_only


def test_biller_bills_sacct_cpu_records_by_the_minute_and_once():
    text = ("31|RUNNING|0:0|1795452581|1795452581|Unknown||a4k-1|billing=2,cpu=2,mem=1G,node=1"
            "|nlp|normal|sw-alice|slipway-7\n")
    [running] = parse_sacct(text)
    store = InMemoryLedgerStore()
    biller = Biller(store, RATES)
    start = running.start
    biller.tick([running], start + timedelta(minutes=30, seconds=59))
    biller.tick([running], start + timedelta(minutes=30, seconds=59))  # again: nothing new
    [c] = store.all_entries()
    assert (c.gpu_type, c.gpu_count, c.from_minute, c.to_minute) == ("cpu", 2, 0, 30)
    assert c.amount == Decimal("0.02")              # 30 min x 2 cores x $0.02/h
    assert store.balance("nlp") == Decimal("-0.02")


# ------------------------------------------------------------------------------ integrations
def test_parse_and_check_cpu_only_compute():
    assert ig.parse_gpus("none") == ("cpu", 1) and ig.parse_gpus("NONE") == ("cpu", 1)
    assert ig.parse_gpus("cpu:4") == ("cpu", 4)
    assert ig.check_gpus("cpu", 4, {"a4000": 4}, cpu_limit=16) is None
    assert "1 to 16 cores" in ig.check_gpus("cpu", 17, {"a4000": 4}, cpu_limit=16)
    assert "1 to 16 cores" in ig.check_gpus("cpu", 0, {"a4000": 4}, cpu_limit=16)
    assert "at most 4" in ig.check_gpus("a4000", 5, {"a4000": 4})
    req = ig.job_request(job_id=7, user="sw-alice", account="team-nlp", gpu_type="cpu", gpu_count=4,
                         time_limit_min=60, workdir="/tmp/j", output="/tmp/j/o", command=["x"],
                         env={}, partition=None, mem_mb=2048)
    assert (req.gpus, req.cpus, req.mem_mb) == (None, 4, 2048)
    gpu = ig.job_request(job_id=8, user="sw-alice", account="team-nlp", gpu_type="a4000",
                         gpu_count=2, time_limit_min=60, workdir="/tmp/j", output="/tmp/j/o",
                         command=["x"], env={}, partition=None)
    assert (gpu.gpus, gpu.cpus, gpu.mem_mb) == (GpuRequest("a4000", 2), 1, None)


def test_attempt_record_uses_the_allocated_cores_of_a_cpu_only_job():
    rec = ig.attempt_record(job_id=7, attempt=0, state="RUNNING", start=T0, end=None,
                            elapsed_s=None, gpus={"cpu": 4}, team="nlp")
    assert allocation(rec) == {"cpu": 4}
    rec = ig.attempt_record(job_id=7, attempt=0, state="COMPLETED", start=T0, end=T0,
                            elapsed_s=0, gpus={"cpu": 1}, team="nlp", cpus=2)
    assert allocation(rec) == {"cpu": 2}          # Slurm gave 2 (whole cores)
    rec = ig.attempt_record(job_id=8, attempt=0, state="COMPLETED", start=T0, end=T0,
                            elapsed_s=0, gpus={"a4000": 1}, team="nlp", cpus=8)
    assert allocation(rec) == {"a4000": 1}


def test_config_cpu_keys(tmp_path):
    cfg = load_config({"SLIPWAY_CPU_RATE": "0.05", "SLIPWAY_CPU_LIMIT": "8",
                       "SLIPWAY_MEM_LIMIT_MB": "4096"}, data_dir=tmp_path)
    assert (cfg.cpu_rate, cfg.cpu_limit, cfg.mem_limit_mb) == (Decimal("0.05"), 8, 4096)
    default = Config(data_dir=tmp_path)
    assert (default.cpu_rate, default.cpu_limit, default.mem_limit_mb) == (Decimal("0.02"), 16, 65536)
    assert ig.rates(cfg).gpu_rate("cpu") == Decimal("0.05")
    with pytest.raises(ConfigError, match="cpu_rate"):
        load_config({"SLIPWAY_CPU_RATE": "cheap"}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="cpu_limit"):
        Config(data_dir=tmp_path, cpu_limit=0)
    with pytest.raises(ConfigError, match="cannot be a GPU type"):
        Config(data_dir=tmp_path, gpu_limits={"cpu": 4}, gpu_rates={"cpu": Decimal("1")})


# ---------------------------------------------------------------------------- push options
def test_push_options_for_cpu_only_jobs():
    o, p = push_options.parse_push_options(["gpus=none", "cpus=4", "mem=16G"], {"a4000": 4})
    assert p == [] and o["gpus"] == GpuRequest("cpu", 1) and o["cpus"] == 4 and o["mem_mb"] == 16384
    for bad, needle in (("cpus=0", "cpus=N"), ("cpus=two", "cpus=N"), ("mem=lots", "memory"),
                        ("gpus=nothing", "unknown GPU type")):
        _, p = push_options.parse_push_options([bad], {"a4000": 4})
        assert len(p) == 1 and needle in p[0], (bad, p)
    assert "gpus=none" in push_options.PUSH_OPTIONS_HELP


@pytest.fixture
def env(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    seed(svc)
    yield svc, backend, svc.config.repos_root / "nlp" / "proj.git", tmp_path / "work"
    svc.db.dispose()


def _pre(svc, sha, options, branch="cpu-1"):
    return push.handle_pre_receive(svc, hook_payload(
        "pre-receive", "nlp/proj", "alice", [(f"refs/heads/{branch}", Z, sha)], options))


def _post(svc, sha, branch="cpu-1"):
    return push.handle_post_receive(svc, hook_payload(
        "post-receive", "nlp/proj", "alice", [(f"refs/heads/{branch}", Z, sha)]))


def _jobs(svc):
    with svc.db.session() as s:
        return list(s.scalars(select(Job).order_by(Job.id)))


def test_push_gpus_none_cpus_4_queues_a_cpu_only_job(env):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, {"slipway-entrypoint.sh": "echo hi\n"})
    r = _pre(svc, sha, ["gpus=none", "cpus=4"])
    assert r.ok, r.messages
    [job] = _jobs(svc)
    assert (job.gpu_type, job.gpu_count) == ("cpu", 4)
    r = _post(svc, sha)
    assert r.messages == [f"slipway: job {job.id} queued (cpu x4)"], r.messages
    _, req = backend.submits[0]
    assert req.gpus is None and req.cpus == 4
    opts = sbatch_options(req)
    assert "--cpus-per-task=4" in opts and not any(o.startswith("--gres") for o in opts)


@pytest.mark.parametrize("options,note,got", [
    (["gpus=none", "cpus=17"], "asked 17 cores; a job may have at most 16 cores — running with 16 cores",
     ("cpu", 16, 16, None)),
    (["gpus=a4000:1", "cpus=99"], "asked 99 cores; a job may have at most 16 cores — running with 16 cores",
     ("a4000", 1, 16, None)),
    (["gpus=none", "mem=128G"], "asked 131072M of memory; a job may have at most 65536M — running with 65536M",
     ("cpu", 1, 1, 65536)),
])
def test_cpu_requests_over_the_limits_are_adjusted_down_and_the_push_says_so(env, options, note, got):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, {"slipway-entrypoint.sh": "echo hi\n"})
    r = _pre(svc, sha, options)
    assert r.ok and r.messages == [f"slipway: {note}"], r.messages
    [job] = _jobs(svc)
    assert (job.gpu_type, job.gpu_count, job.cpus, job.mem_mb) == got
    assert job.asked     # what was asked is kept beside what it got


@pytest.mark.parametrize("options,needle", [
    (["gpus=none", "cpus=17", "strict=yes"], "asked 17 cores; a job may have at most 16 cores (strict=yes: refused)"),
    (["gpus=a4000:1", "cpus=99", "strict=yes"], "a job may have at most 16 cores (strict=yes"),
    (["gpus=none", "mem=128G", "strict=yes"], "a job may have at most 65536M (strict=yes"),
    (["gpus=none", "cpus=0"], "at least 1"),
])
def test_strict_over_requests_are_refused_and_nothing_is_reserved(env, options, needle):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, {"slipway-entrypoint.sh": "echo hi\n"})
    r = _pre(svc, sha, options)
    assert not r.ok and any(needle in m for m in r.messages), r.messages
    assert _jobs(svc) == [] and backend.submits == []


def test_cores_and_memory_beside_gpus_are_kept_and_asked_of_slurm(env):
    svc, backend, bare, work = env
    sha = commit_to_bare(bare, work, {"slipway-entrypoint.sh": "echo hi\n"})
    r = _pre(svc, sha, ["gpus=a4000:1", "cpus=2", "mem=16G"])
    assert r.ok, r.messages
    [job] = _jobs(svc)
    assert (job.gpu_type, job.gpu_count, job.cpus, job.mem_mb) == ("a4000", 1, 2, 16384)
    assert _post(svc, sha).ok
    _, req = backend.submits[0]
    opts = sbatch_options(req)
    assert "--cpus-per-task=2" in opts and "--mem=16384M" in opts, opts
    assert any(o.startswith("--gres=gpu:a4000:1") for o in opts)


def test_project_settings_gpus_none(env):
    svc, *_ = env
    st, problems = project_settings.parse_settings(svc, gpus="none")
    assert problems == [] and (st.gpu_type, st.gpu_count, st.cpu_only, st.gpu_units) == ("cpu", 1, True, 0)
    st, problems = project_settings.parse_settings(svc, gpus="none", cpus="8")
    assert problems == [] and (st.gpu_type, st.gpu_count, st.cpus) == ("cpu", 8, 8)
    _, problems = project_settings.parse_settings(svc, gpus="none", cpus="99")
    assert any("1 to 16 cores" in p for p in problems)
    _, problems = project_settings.parse_settings(svc, gpus="a4000:1", cpus="2")
    assert any("give --gpus none" in p for p in problems)


# ------------------------------------------------------------------------ reconciler billing
def test_reconciler_bills_a_cpu_only_job_per_core_hour(tmp_path):
    backend, clock = FakeBackend(), Clock()
    svc = make_services(tmp_path, backend=backend, clock=clock, storage_interval=10**9)
    seed(svc)
    t0 = clock()
    with svc.db.transaction() as s:
        job = Job(project_id=1, branch="cpu-1", commit_sha="a" * 40, pusher_id=1, state="running",
                  slurm_job_id=11, gpu_type="cpu", gpu_count=4, image="python", time_limit_min=60,
                  created_at=t0, submitted_at=t0)
        s.add(job)
        s.flush()
        jid = job.id
    backend.set_queue(11, "RUNNING", start=t0, gpus={})
    clock.advance(minutes=30, seconds=5)
    Reconciler(svc).tick()                      # live: 30 whole minutes x 4 cores
    with svc.db.session() as s:
        assert billing.balance(s, 1) == Decimal("25.00") - Decimal("0.04")
    end = clock.advance(minutes=29)             # 59m05s -> 60 started minutes
    backend.queue.pop(11)
    backend.acct.append(SacctRecord(
        job_id=11, attempt=0, name="slipway-1", user="u", account="team-nlp", qos="normal",
        state="COMPLETED", exit_code=0, signal=None, submit=t0, start=t0, end=end,
        elapsed_s=int((end - t0).total_seconds()), node="a4k-1", gpus={}, cpus=4))
    Reconciler(svc).tick()
    Reconciler(svc).tick()
    with svc.db.session() as s:
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.job_id == jid)))
        assert {(r.gpu_type, r.gpu_count, r.rate_micros) for r in rows} == {("cpu", 4, 20_000)}
        assert rows[-1].to_minute == 60 and "CPU only, 4 cores" in rows[-1].note
        assert billing.job_cost_micros(s, jid) == 80_000          # 1 h x 4 cores x $0.02
        assert billing.balance(s, 1) == Decimal("25.00") - Decimal("0.08")
        assert s.get(Job, jid).state == "succeeded"
    svc.db.dispose()


def test_project_form_gpu_type_none_is_cpu_only(env):
    svc, *_ = env
    st, problems = project_settings.parse_settings(svc, gpu_type="none", gpu_count="2")
    assert problems == [] and (st.gpu_type, st.gpu_count) == ("cpu", 2)
