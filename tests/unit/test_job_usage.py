"""Per-job usage (issue 15 part 3, docs/MONITORING.md): sstat's answer parsed (text recorded from
the live cluster), ONE sstat per sampling tick for every running job, points and peaks in the
database, thinning, sweeps and requeues, GPU "not reported", and the job page's plot."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from portal.app import create_app
from portal.db import Job
from portal.db.usage_models import JobUsagePoint, JobUsageSummary
from portal.jobs.reconciler import Reconciler
from portal.jobs.reconciler.report import TickReport
from portal.monitoring import job_usage, prom_ticks
from slurm_bridge.cli import CliBackend
from slurm_bridge.errors import ControllerUnavailable, SlurmRejected
from slurm_bridge.records import QueueRecord
from slurm_bridge.runner import FakeRunner, result
from slurm_bridge.step_usage import (JobUsage, StepUsage, parse_cpu_time, parse_size,
                                     parse_sstat)
from tests.support.fakes import Clock, FakeBackend, make_services
from tests.support.web import add_job, add_project, add_team, add_user, login

MB = 1 << 20

# `sstat --allsteps --parsable2 --noheader --noconvert --format=JobID,TRESUsageInTot,
# TRESUsageInMax -j 8,5,6,7,1` on the local cluster (Slurm 22.05): job 8 on two nodes with an
# srun step (2 tasks), job 5 after freeing 300 MB, array 6 (tasks 7 and 6; 7 asked for twice),
# job 1 no longer running (only on stderr: "sstat: error: No steps running for job 1").
RECORDED = """\
8.batch|cpu=00:00:00,energy=0,fs/disk=39013,mem=12972032,pages=0,vmem=294563840|cpu=00:00:00,energy=0,fs/disk=39013,mem=12972032,pages=0,vmem=294563840
8.0|cpu=00:00:04,energy=0,fs/disk=88236,mem=16527360,pages=0,vmem=28377088|cpu=00:00:02,energy=0,fs/disk=44118,mem=8273920,pages=0,vmem=14188544
5.batch|cpu=00:00:09,energy=0,fs/disk=52352,mem=11575296,pages=0,vmem=18755584|cpu=00:00:09,energy=0,fs/disk=52352,mem=326057984,pages=0,vmem=333332480
7.batch|cpu=00:00:18,energy=0,fs/disk=52232,mem=221179904,pages=0,vmem=228470784|cpu=00:00:18,energy=0,fs/disk=52232,mem=221179904,pages=0,vmem=228470784
6.batch|cpu=00:00:18,energy=0,fs/disk=52232,mem=221220864,pages=0,vmem=228470784|cpu=00:00:18,energy=0,fs/disk=52232,mem=221220864,pages=0,vmem=228470784
7.batch|cpu=00:00:18,energy=0,fs/disk=52232,mem=221179904,pages=0,vmem=228470784|cpu=00:00:18,energy=0,fs/disk=52232,mem=221179904,pages=0,vmem=228470784
"""


# ------------------------------------------------------------------------------ the bridge

def test_parse_sstat_reads_the_recorded_answer():
    got = parse_sstat(RECORDED)
    assert sorted(got) == [5, 6, 7, 8]
    eight = got[8]
    assert [s.step for s in eight.steps] == ["batch", "0"]
    assert eight.cpu_seconds == 4.0
    assert eight.rss_bytes == 12972032 + 16527360           # every running step's memory now
    # the step's peak: the most one task held (8273920 each), or its tasks together now
    assert eight.steps[1].max_rss_bytes == 16527360 and eight.max_rss_bytes == 16527360
    five = got[5]
    assert five.rss_bytes == 11575296 and five.max_rss_bytes == 326057984   # freed since
    assert len(got[7].steps) == 1                           # asked twice: one step
    assert all(u.gpu_util_percent is None for u in got.values())   # fake GPUs report nothing


def test_parse_sstat_reads_gpu_utilisation_where_nodes_report_it_and_skips_junk():
    text = ("sstat: warning: something\n"
            "12.batch|cpu=1-02:03:04,mem=1.5G,gres/gpumem=100M,gres/gpuutil=87|cpu=1-02:03:04,mem=2G\n"
            "12.0|cpu=02:03.500,mem=512K,gres/gpuutil=13|cpu=02:03.500,mem=1M\n"
            "13_2.batch|cpu=00:00:01,mem=1K|cpu=00:00:01,mem=1K\n"
            "x.batch|cpu=00:00:01|cpu=00:00:01\n"
            "14|cpu=00:00:01|cpu=00:00:01\n")
    got = parse_sstat(text)
    assert list(got) == [12]
    u = got[12]
    assert u.cpu_seconds == pytest.approx(93784 + 123.5)
    assert u.rss_bytes == int(1.5 * (1 << 30)) + 512 * 1024
    assert u.max_rss_bytes == 2 << 30
    assert u.gpu_util_percent == 100.0


@pytest.mark.parametrize("text,seconds", [("00:00:07", 7), ("1-00:00:01", 86401),
                                          ("12:34", 754), ("00:01.250", 1.25), ("", None),
                                          ("soon", None)])
def test_cpu_times(text, seconds):
    assert parse_cpu_time(text) == seconds


def test_sizes():
    assert parse_size("318304K") == 318304 * 1024
    assert parse_size("12972032") == 12972032
    assert parse_size("2G") == 2 << 30
    assert parse_size("lots") is None


def test_cli_step_usage_is_one_sstat_for_every_job():
    runner = FakeRunner({"sstat": result(stdout=RECORDED,
                                         stderr="sstat: error: No steps running for job 1")})
    backend = CliBackend(runner, env={})
    got = backend.step_usage([8, 5, 6, 1])
    assert len(runner.calls) == 1
    argv = list(runner.calls[0]["argv"])
    assert argv[:5] == ["sstat", "--allsteps", "--parsable2", "--noheader", "--noconvert"]
    assert argv[-2:] == ["-j", "1,5,6,8"]
    assert got[5].cpu_seconds == 9.0 and 1 not in got
    assert backend.step_usage([]) == {} and len(runner.calls) == 1   # nothing asked: no call


def test_cli_step_usage_errors():
    runner = FakeRunner({"sstat": result(rc=1, stderr="sstat: error: Unable to contact slurm "
                                                      "controller (connect failure)")})
    with pytest.raises(ControllerUnavailable):
        CliBackend(runner, env={}).step_usage([5])
    runner = FakeRunner({"sstat": result(rc=1, stderr="sstat: error: Invalid field requested")})
    with pytest.raises(SlurmRejected, match="sstat failed: .*Invalid field"):
        CliBackend(runner, env={}).step_usage([5])


# ------------------------------------------------------------------------- the sampler

@dataclass
class CountingBackend(FakeBackend):
    usage_calls: list = field(default_factory=list)

    def step_usage(self, job_ids):
        self.usage_calls.append(tuple(job_ids))
        return super().step_usage(job_ids)


def steps(cpu: float, rss_mb: float, peak_mb: float | None = None, step="batch",
          gpu=None) -> StepUsage:
    return StepUsage(step, cpu, int(rss_mb * MB), int((peak_mb or rss_mb) * MB), gpu)


def running(slurm_id: int, *, array_job_id: int = 0, task: int | None = None,
            restart: int = 0, state: str = "RUNNING") -> QueueRecord:
    return QueueRecord(job_id=slurm_id, state=state, reason="None", node="a4k-1", start_time=None,
                       submit_time=None, account="team-nlp", user="u", qos="normal",
                       name=f"job{slurm_id}", comment="slipway", restart_count=restart,
                       array_job_id=array_job_id, array_task_id=task)


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    backend = CountingBackend()
    svc = make_services(tmp_path, backend=backend, clock=clock)
    add_user(svc, "alice")
    add_user(svc, "mallory")
    add_team(svc, "nlp", {"alice": "owner"}, funds="25.00")
    add_team(svc, "vision", {"mallory": "owner"})
    project = add_project(svc, "nlp", "proj")
    yield svc, clock, backend, project
    svc.db.dispose()


def points(svc, job_id):
    with svc.db.session() as s:
        return s.execute(select(JobUsagePoint).where(JobUsagePoint.job_id == job_id)
                         .order_by(JobUsagePoint.at)).scalars().all()


def summary(svc, job_id):
    with svc.db.session() as s:
        return s.get(JobUsageSummary, job_id)


def tick(svc, queue):
    report = TickReport()
    job_usage.sample(svc, svc.now(), queue, report)
    return report


def test_one_sstat_for_all_running_jobs_every_30_s_and_points_stored(world):
    svc, clock, backend, project = world
    started = clock()
    a = add_job(svc, project, branch="a", state="running", slurm_job_id=501)
    b = add_job(svc, project, branch="b", state="running", slurm_job_id=502)
    add_job(svc, project, branch="c", state="pending", slurm_job_id=503)
    queue = {501: running(501), 502: running(502), 503: running(503, state="PENDING"),
             999: running(999)}   # 999: not Slipway's
    backend.usage_records = {501: JobUsage(501, (steps(0, 100),)), 502: JobUsage(502, (steps(5, 50),))}
    clock.advance(seconds=10)
    report = tick(svc, queue)
    assert backend.usage_calls == [(501, 502)] and report.errors == []
    first = points(svc, a)
    assert len(first) == 1 and first[0].rss_mb == 100 and first[0].cpu_seconds == 0
    assert first[0].cpu_percent == 0.0
    assert points(svc, b)[0].cpu_percent == 50.0     # 5 s of CPU in the 10 s since it started

    clock.advance(seconds=20)
    tick(svc, queue)                                  # 20 s later: not due
    assert len(backend.usage_calls) == 1
    clock.advance(seconds=10)
    backend.usage_records[501] = JobUsage(501, (steps(45, 300, 420),))
    tick(svc, queue)
    assert len(backend.usage_calls) == 2
    second = points(svc, a)
    assert [p.cpu_seconds for p in second] == [0, 45]
    assert second[1].cpu_percent == 150.0             # 45 CPU seconds in 30 s: 1.5 cores
    s = summary(svc, a)
    assert s.points == 2 and s.cpu_seconds == 45 and s.max_rss_mb == 420
    assert s.max_cpu_percent == 150.0 and s.ended_at is None
    assert s.first_at == started + timedelta(seconds=10)


def test_nothing_running_or_a_failed_poll_asks_nothing(world):
    svc, clock, backend, project = world
    add_job(svc, project, branch="a", state="pending", slurm_job_id=501)
    tick(svc, {501: running(501, state="PENDING")})
    tick(svc, None)
    tick(svc, {})
    assert backend.usage_calls == []
    with svc.db.session() as s:
        assert s.scalar(select(func.count()).select_from(JobUsagePoint)) == 0


def test_a_job_without_a_step_yet_gets_no_point_and_the_next_tick_is_not_delayed(world):
    svc, clock, backend, project = world
    a = add_job(svc, project, branch="a", state="running", slurm_job_id=501)
    tick(svc, {501: running(501)})
    assert len(backend.usage_calls) == 1 and points(svc, a) == []   # never a made-up zero
    assert summary(svc, a) is None


def test_end_keeps_peaks_and_the_page_says_so(world):
    svc, clock, backend, project = world
    a = add_job(svc, project, branch="a", state="running", slurm_job_id=501)
    backend.usage_records = {501: JobUsage(501, (steps(10, 200, 600),))}
    clock.advance(seconds=30)
    tick(svc, {501: running(501)})
    clock.advance(seconds=30)
    backend.usage_records = {501: JobUsage(501, (steps(40, 100, 600),))}
    tick(svc, {501: running(501)})
    ended_at = clock.advance(seconds=5)
    with svc.db.transaction() as s:
        job = s.get(Job, a)
        job.state, job.ended_at = "succeeded", ended_at
    clock.advance(seconds=1)
    tick(svc, {})                                     # it left the queue: the summary closes
    s = summary(svc, a)
    assert s.ended_at == ended_at and s.cpu_seconds == 40 and s.max_rss_mb == 600
    assert len(backend.usage_calls) == 2


def test_sweep_tasks_count_for_their_job_and_ended_tasks_keep_counting(world):
    svc, clock, backend, project = world
    sweep = add_job(svc, project, branch="s", state="running", slurm_job_id=700, task_count=3)
    queue = {701: running(701, array_job_id=700, task=0), 700: running(700, array_job_id=700, task=1)}
    backend.usage_records = {701: JobUsage(701, (steps(30, 100),)),
                             700: JobUsage(700, (steps(20, 50), steps(10, 25, step="0")))}
    clock.advance(seconds=30)
    tick(svc, queue)
    assert backend.usage_calls == [(700, 701)]
    p = points(svc, sweep)
    assert p[0].cpu_seconds == 60 and p[0].rss_mb == 175
    clock.advance(seconds=30)
    del queue[701]                                    # task 0 ended: its CPU time stays counted
    backend.usage_records = {700: JobUsage(700, (steps(50, 60), steps(10, 25, step="0")))}
    tick(svc, queue)
    p = points(svc, sweep)
    assert p[1].cpu_seconds == 90 and p[1].rss_mb == 85
    assert p[1].cpu_percent == 100.0                  # 30 more CPU seconds in 30 s


def test_a_requeued_attempt_counts_on_top_of_the_first(world):
    svc, clock, backend, project = world
    a = add_job(svc, project, branch="a", state="running", slurm_job_id=501)
    backend.usage_records = {501: JobUsage(501, (steps(100, 10),))}
    clock.advance(seconds=30)
    tick(svc, {501: running(501)})
    clock.advance(seconds=30)
    backend.usage_records = {501: JobUsage(501, (steps(5, 10),))}   # starts again from 0
    tick(svc, {501: running(501, restart=1)})
    assert [p.cpu_seconds for p in points(svc, a)] == [100, 105]


def test_points_are_thinned_to_the_cap(world, monkeypatch):
    svc, clock, backend, project = world
    monkeypatch.setattr(job_usage, "MAX_POINTS", 20)
    a = add_job(svc, project, branch="a", state="running", slurm_job_id=501)
    for i in range(45):
        clock.advance(seconds=30)
        backend.usage_records = {501: JobUsage(501, (steps(i * 10, 100 + i),))}
        tick(svc, {501: running(501)})
    kept = points(svc, a)
    assert len(kept) <= 20 and summary(svc, a).points == len(kept)
    assert kept[0].rss_mb == 100                      # the first point stays
    assert [p.rss_mb for p in kept[-5:]] == [140, 141, 142, 143, 144]   # the newest all stay
    assert summary(svc, a).max_rss_mb == 144


def test_sstat_failure_is_reported_counted_and_not_retried_every_tick(world):
    svc, clock, backend, project = world
    add_job(svc, project, branch="a", state="running", slurm_job_id=501)
    backend.down = True
    report = tick(svc, {501: running(501)})
    assert report.errors == ["job usage: sstat failed: slurmctld is down (fake)"]
    clock.advance(seconds=5)
    tick(svc, {501: running(501)})
    assert len(backend.usage_calls) == 1              # within 30 s: no second try
    with svc.db.session() as s:
        stats = prom_ticks.read(s)
    assert stats.count == 2 and stats.slurm_errors == {"sstat": 1} and stats.errors == 1


def test_the_tick_feeds_it_once_per_tick_through_the_reconciler(world):
    svc, clock, backend, project = world
    a = add_job(svc, project, branch="a", state="running", slurm_job_id=501, node="a4k-1")
    b = add_job(svc, project, branch="b", state="running", slurm_job_id=502, node="a4k-1")
    backend.set_queue(501, "RUNNING", start=clock())
    backend.set_queue(502, "RUNNING", start=clock())
    backend.usage_records = {501: JobUsage(501, (steps(3, 30),)), 502: JobUsage(502, (steps(1, 10),))}
    report = Reconciler(svc).tick()
    assert backend.usage_calls == [(501, 502)], report.errors
    assert len(points(svc, a)) == 1 and len(points(svc, b)) == 1
    with svc.db.session() as s:
        assert prom_ticks.read(s).count == 1


def test_tick_stats_classify_slurm_errors():
    assert prom_ticks.slurm_command_of("poll failed: Slurm is not answering") == "squeue"
    assert prom_ticks.slurm_command_of("accounting failed: slurmdbd down") == "sacct"
    assert prom_ticks.slurm_command_of("nodes: sinfo timed out") == "sinfo"
    assert prom_ticks.slurm_command_of("storage nlp/proj: disk") is None


def test_tick_durations_make_a_histogram(world):
    svc, clock, backend, project = world
    for duration in (0.01, 0.3, 0.3, 7.0, 120.0):
        report = TickReport(duration_s=duration, errors=["poll failed: x", "data gates: y"])
        prom_ticks.observe_tick(svc, clock.advance(seconds=1), report)
    with svc.db.session() as s:
        stats = prom_ticks.read(s)
    cumulative = dict(stats.cumulative())
    assert cumulative["0.05"] == 1 and cumulative["0.5"] == 3 and cumulative["10.0"] == 4
    assert cumulative["+Inf"] == 5 and stats.total_s == pytest.approx(127.61)
    assert stats.slurm_errors == {"squeue": 5} and stats.errors == 10
    assert stats.last_at == clock().timestamp()


# ------------------------------------------------------------------------- the job page

@pytest.fixture
def app(world):
    svc = world[0]
    return create_app(svc)


def page(app, job_id, user="alice"):
    c = app.test_client()
    assert login(c, user).status_code == 302
    r = c.get(f"/jobs/{job_id}")
    assert r.status_code == 200
    return r.get_data(as_text=True)


def test_the_job_page_plots_cpu_and_memory_and_says_gpu_not_reported(world, app):
    svc, clock, backend, project = world
    a = add_job(svc, project, branch="a", state="running", slurm_job_id=501)
    for cpu, rss in ((10, 200), (40, 250)):
        clock.advance(seconds=30)
        backend.usage_records = {501: JobUsage(501, (steps(cpu, rss, 300),))}
        tick(svc, {501: running(501)})
    body = page(app, a)
    data = re.search(r'<script type="application/json" id="job-usage-data">(.*?)</script>', body, re.S)
    series = json.loads(data.group(1))
    assert series["rss"] == [200.0, 250.0] and series["cpu"][1] == 100.0 and series["gpu"] is None
    assert len(series["t"]) == 2 and series["t"][1] - series["t"][0] == 30
    assert "vendor/uplot/uPlot.iife.min.js" in body and "job_usage.js" in body
    assert re.search(r'id="usage-gpu">not reported<', body)
    assert re.search(r'id="usage-peak-memory">300.0 MB<', body)
    assert re.search(r'id="usage-memory-now">250.0 MB<', body)
    assert "usage-final" not in body


def test_the_job_page_shows_gpu_utilisation_only_when_reported(world, app):
    svc, clock, backend, project = world
    a = add_job(svc, project, branch="a", state="running", slurm_job_id=501)
    clock.advance(seconds=30)
    backend.usage_records = {501: JobUsage(501, (steps(10, 200, gpu=87.0),))}
    tick(svc, {501: running(501)})
    body = page(app, a)
    assert re.search(r'id="usage-gpu">peak 87 %<', body)


def test_the_job_page_after_the_end_and_before_the_start(world, app):
    svc, clock, backend, project = world
    pending = add_job(svc, project, branch="p", state="pending", slurm_job_id=502)
    assert 'id="job-usage"' not in page(app, pending)
    a = add_job(svc, project, branch="a", state="running", slurm_job_id=501)
    clock.advance(seconds=30)
    backend.usage_records = {501: JobUsage(501, (steps(90, 200, 512),))}
    tick(svc, {501: running(501)})
    with svc.db.transaction() as s:
        job = s.get(Job, a)
        job.state, job.ended_at = "failed", clock()
    tick(svc, {})
    body = page(app, a)
    assert 'id="usage-final"' in body and "usage-memory-now" not in body
    assert re.search(r'id="usage-cpu-time">1 min 30 s<', body)
    assert re.search(r'id="usage-peak-memory">512.0 MB<', body)
