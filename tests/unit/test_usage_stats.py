"""Usage statistics (portal/monitoring/usage*.py): the reconciler, driven with FakeBackend records,
bills jobs that cross midnight; the team's GPU-hours per day equal sacct's sums over the same
window (minute k of an attempt counted on the day it begins, as billing counts minutes); jobs by
final state, queue wait median/p95, spend, top projects; who may see which scope; the page,
the API and the CSV say the same."""
from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

import portal.api.monitoring  # noqa: F401  (its routes join the API blueprint)
from portal.cli import Ctx
from portal.cli.monitoring import monitoring_group
from portal.db import Job, LedgerEntry, Team, from_micros
from portal.jobs import service
from portal.jobs.reconciler import Reconciler
from portal.monitoring import sample_retention, usage
from portal.monitoring.usage_rollup import split_gpu_charge, split_minutes
from portal.teams.access import Actor, Forbidden, NotFound, OpError
from tests.support.fakes import Clock, FakeBackend, make_services
from tests.support.web import add_job, add_project, add_team, login, make_world
from tests.unit.test_monitoring_samples import web_app

D0 = datetime(2026, 3, 9, 22, 0, tzinfo=timezone.utc)      # day D, 22:00 UTC (a Monday)
DAY_D, DAY_E = "2026-03-09", "2026-03-10"


def at(h: int, m: int, s: int = 0, day: int = 0) -> datetime:
    return datetime(2026, 3, 9 + day, h, m, s, tzinfo=timezone.utc)


def sacct_minutes(records, account: str, first: datetime, end: datetime) -> dict[str, int]:
    """GPU-minutes per type of ``account``'s sacct records within [first, end): an attempt of
    ElapsedRaw s holds ceil(s / 60) started minutes, minute k beginning at start + 60 k."""
    out: dict[str, int] = {}
    for r in records:
        if r.account != account or r.start is None:
            continue
        minutes = math.ceil((r.elapsed_s or 0) / 60)
        inside = sum(1 for k in range(minutes)
                     if first <= r.start + timedelta(minutes=k) < end)
        for gpu_type, count in r.gpus.items():
            if inside:
                out[gpu_type] = out.get(gpu_type, 0) + inside * count
    return out


def new_job(svc, project_id: int, *, gpu_type: str = "a4000", gpu_count: int = 1, **kw) -> int:
    job_id = add_job(svc, project_id, **kw)
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        job.gpu_type, job.gpu_count = gpu_type, gpu_count
    return job_id


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One world for the tests that only read it (building it is ~3.5 s of ticks)."""
    built = usage_world(tmp_path_factory.mktemp("usage"))
    yield built
    built[0].db.dispose()


@pytest.fixture
def fresh_world(tmp_path):
    """A world of its own, for a test that adds jobs and charges."""
    built = usage_world(tmp_path)
    yield built
    built[0].db.dispose()


def usage_world(tmp_path, **over):
    """Teams ml (alice owner, carol) and make_world's; four jobs billed by real ticks over a
    FakeBackend from 22:00 on day D to 03:00 on day E, and one cancelled outside a tick.
    ``over``: settings (``database_url`` for PostgreSQL)."""
    backend, clock = FakeBackend(), Clock(D0)
    svc = make_services(tmp_path, backend=backend, clock=clock, storage_interval=10**9, **over)
    ids = make_world(svc)
    add_team(svc, "ml", {"alice": "owner", "carol": "user"}, funds="500.00")
    ids["train"] = add_project(svc, "ml", "train")
    ids["eval"] = add_project(svc, "ml", "eval", gpu_type="a6000")
    jobs = {
        "a": new_job(svc, ids["train"], branch="a", state="pending", pusher="alice",
                     slurm_job_id=501, gpu_count=2),
        "b": new_job(svc, ids["eval"], branch="b", state="pending", pusher="alice",
                     slurm_job_id=502, gpu_type="a6000"),
        "c": add_job(svc, ids["train"], branch="c", state="pending", pusher="carol",
                     slurm_job_id=503),
        "v": new_job(svc, ids["secret"], branch="v", state="pending", pusher="mallory",
                     slurm_job_id=504, gpu_type="a6000"),
    }
    ids["jobs"] = jobs
    plan = {   # slurm id: (start, end, gpus, account, final state)
        501: (at(23, 10, 40), at(1, 21, 10, day=1), {"a4000": 2}, "ml", "COMPLETED"),
        502: (at(23, 50, 20), at(0, 5, 0, day=1), {"a6000": 1}, "ml", "COMPLETED"),
        503: (at(2, 0, 0, day=1), at(2, 3, 1, day=1), {"a4000": 1}, "ml", "FAILED"),
        504: (at(23, 0, 0), at(23, 40, 0), {"a6000": 1}, "vision", "COMPLETED"),
    }
    for slurm_id in plan:
        backend.set_queue(slurm_id, "PENDING", reason="Resources")
    rec = Reconciler(svc)
    while clock() < at(3, 0, day=1):
        for slurm_id, (start, end, gpus, account, state) in plan.items():
            if start <= clock() < end and backend.queue[slurm_id].state == "PENDING":
                backend.set_queue(slurm_id, "RUNNING", start=start, gpus=gpus, account=account)
            elif clock() >= end and slurm_id in backend.queue:
                backend.finish(slurm_id, state, start=start, end=end, gpus=gpus, account=account,
                               exit_code=0 if state == "COMPLETED" else 1)
        rec.tick()
        if clock() == at(0, 30, day=1):
            # a job cancelled before it reached Slurm ends outside a tick
            jobs["d"] = add_job(svc, ids["train"], branch="d", state="queued", pusher="carol")
            service.request_cancel(svc, jobs["d"], by="carol")
        clock.advance(minutes=5)
    sample_retention.maybe_run(svc, clock(), force=True)        # the hourly catch-up
    return svc, backend, clock, ids


def admin() -> Actor:
    return Actor(id=0, name="root", is_cluster_admin=True)


def test_team_gpu_hours_per_day_equal_saccts_sums_over_the_same_window(world):
    svc, backend, clock, ids = world
    stats = usage.statistics(svc, admin(), "team:ml", "day", DAY_D, DAY_E)
    assert stats["buckets"] == [DAY_D, DAY_E]
    for i, (first, end) in enumerate(((at(0, 0), at(0, 0, day=1)),
                                      (at(0, 0, day=1), at(0, 0, day=2)))):
        want = sacct_minutes(backend.acct, "ml", first, end)
        got = {t: v[i] for t, v in stats["gpu_minutes"].items() if v[i]}
        assert got == want, (i, got, want)
    # the hand count: job a's 2 GPUs for 50 minutes on day D (23:10:40 + k min < midnight)
    assert stats["gpu_minutes"]["a4000"] == [2 * 50, 2 * (131 - 50) + 4]
    assert stats["gpu_minutes"]["a6000"] == [10, 5]
    # the whole window: the ledger, sacct and the statistics agree
    with svc.db.session() as s:
        ml = s.scalar(select(Team.id).where(Team.name == "ml"))
        ledger = s.execute(select(LedgerEntry.gpu_type, func.sum(
            (LedgerEntry.to_minute - LedgerEntry.from_minute) * LedgerEntry.gpu_count))
            .where(LedgerEntry.team_id == ml, LedgerEntry.kind == "gpu")
            .group_by(LedgerEntry.gpu_type)).all()
        spent = -s.scalar(select(func.sum(LedgerEntry.amount_micros)).where(
            LedgerEntry.team_id == ml, LedgerEntry.kind == "gpu"))
    whole = sacct_minutes(backend.acct, "ml", at(0, 0), at(0, 0, day=2))
    assert dict(ledger) == whole == {t: sum(v) for t, v in stats["gpu_minutes"].items()}
    assert stats["totals"]["gpu_hours"] == {t: round(m / 60, 4) for t, m in whole.items()}
    assert stats["totals"]["spend_usd"] == str(from_micros(spent))
    week = usage.statistics(svc, admin(), "team:ml", "week", DAY_D, DAY_E)
    assert week["gpu_minutes"] == {t: [sum(v)] for t, v in stats["gpu_minutes"].items()}
    assert week["buckets"] == [DAY_D]        # weeks start on Monday


def test_jobs_by_final_state_waits_and_top_projects(world):
    svc, backend, clock, ids = world
    stats = usage.statistics(svc, admin(), "team:ml", "day", DAY_D, DAY_E)
    assert stats["jobs"] == {"cancelled": [0, 1], "failed": [0, 1], "succeeded": [0, 2]}
    with svc.db.session() as s:
        waits = sorted(int((j.started_at - j.submitted_at).total_seconds()) for j in s.scalars(
            select(Job).where(Job.id.in_([ids["jobs"][k] for k in "abc"]))))
    assert len(waits) == 3
    assert stats["totals"]["wait_median_s"] == waits[1]                 # ceil(0.5 * 3) = 2nd
    assert stats["totals"]["wait_p95_s"] == waits[2]                    # ceil(0.95 * 3) = 3rd
    assert stats["wait_started"] == [2, 1]
    assert [p["project"] for p in stats["top_projects"]] == ["train", "eval"]
    carol = usage.statistics(svc, Actor(ids["carol"], "carol"), "user:carol", "day", DAY_D, DAY_E)
    assert carol["gpu_minutes"] == {"a4000": [0, 4]}
    # a user's usage spans their teams: make_world's job of carol in nlp (never in Slurm's
    # answers) was failed as lost on day D
    assert carol["jobs"]["failed"] == [1, 1] and carol["jobs"]["cancelled"] == [0, 1]
    cluster = usage.statistics(svc, admin(), "cluster", "day", DAY_D, DAY_E)
    assert cluster["gpu_minutes"]["a6000"] == [10 + 40, 5]              # vision's job too


def test_who_may_see_which_scope(world):
    svc, _backend, _clock, ids = world
    alice, carol, mallory = (Actor(ids[n], n) for n in ("alice", "carol", "mallory"))
    assert usage.statistics(svc, carol, "team:ml")["scope"] == "team:ml"
    assert usage.statistics(svc, carol)["scope"] == "user:carol"
    with pytest.raises(NotFound):
        usage.statistics(svc, mallory, "team:ml")
    with pytest.raises(Forbidden):
        usage.statistics(svc, carol, "user:alice")
    with pytest.raises(Forbidden):
        usage.statistics(svc, alice, "cluster")
    for bad in ({"scope": "galaxy"}, {"period": "year"}, {"start": "2026-13-01"},
                {"start": "2026-03-10", "end": "2026-03-01"}, {"start": "yesterday"}):
        with pytest.raises(OpError):
            usage.statistics(svc, admin(), **{"scope": "cluster", **bad})


def test_page_api_and_csv_agree(world):
    svc, _backend, _clock, ids = world
    app = web_app(svc)
    c = app.test_client()
    login(c, "carol")
    q = f"scope=team:ml&period=day&start={DAY_D}&end={DAY_E}"
    api = c.get(f"/api/usage?{q}").get_json()["usage"]
    assert api["gpu_minutes"] == {"a4000": [100, 166], "a6000": [10, 5]}
    page = c.get(f"/usage?{q}")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="usage-charts"' in body and "ml/train" in body
    r = c.get(f"/usage?{q}&format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert "usage-team-ml-day-2026-03-09-2026-03-10.csv" in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert [row["period_start"] for row in rows] == [DAY_D, DAY_E]
    assert [float(row["gpu_hours_a4000"]) for row in rows] == [round(100 / 60, 4), round(166 / 60, 4)]
    assert [row["jobs_succeeded"] for row in rows] == ["0", "2"]
    assert c.get(f"/api/usage?{q}&format=csv").get_data(as_text=True) == r.get_data(as_text=True)
    login(outsider := app.test_client(), "mallory")
    assert outsider.get(f"/usage?{q}").status_code == 404
    assert outsider.get(f"/api/usage?{q}").status_code == 404
    assert c.get("/api/usage?scope=user:alice").status_code == 403
    assert c.get("/usage?scope=cluster").status_code == 403
    assert c.get("/api/usage?period=fortnight").status_code == 400
    out = CliRunner().invoke(monitoring_group, ["usage", "--scope", "team:ml", "--start", DAY_D,
                                                "--end", DAY_E, "--csv"],
                             obj=Ctx("carol", services=svc))
    assert out.exit_code == 0 and out.output == r.get_data(as_text=True)


def test_cached_answers_follow_new_charges(fresh_world):
    svc, backend, clock, ids = fresh_world
    before = usage.statistics(svc, admin(), "team:ml", "day", DAY_D, DAY_E)
    assert usage.statistics(svc, admin(), "team:ml", "day", DAY_D, DAY_E) is before   # cached
    job = add_job(svc, ids["train"], branch="late", state="pending", pusher="alice",
                  slurm_job_id=601)
    start = at(2, 40, day=1)
    backend.set_queue(601, "RUNNING", start=start, gpus={"a4000": 1}, account="ml")
    Reconciler(svc).tick()
    clock.advance(minutes=10)
    backend.finish(601, "COMPLETED", start=start, end=clock(), gpus={"a4000": 1}, account="ml")
    Reconciler(svc).tick()
    after = usage.statistics(svc, admin(), "team:ml", "day", DAY_D, DAY_E)
    assert after["gpu_minutes"]["a4000"][1] == before["gpu_minutes"]["a4000"][1] + 30
    assert after["jobs"]["succeeded"] == [0, 3]
    with svc.db.session() as s:
        assert s.get(Job, job).state == "succeeded"


def test_splitting_minutes_over_days_is_exact():
    start = datetime(2026, 3, 9, 23, 59, 30, tzinfo=timezone.utc)
    pieces = split_gpu_charge(start, 0, 3, 300)   # minutes begin 23:59:30, 00:00:30, 00:01:30
    day = (start.date() - datetime(1970, 1, 1).date()).days
    assert pieces == [(day, 1, 100), (day + 1, 2, 200)]
    assert split_gpu_charge(start, 5, 6, 7) == [(day + 1, 1, 7)]
    assert sum(p[2] for p in split_minutes(1439, 1441 + 1440, 1001)) == 1001
    assert [p[:2] for p in split_minutes(1439, 1441 + 1440, 1001)] == [(0, 1), (1, 1440), (2, 1)]


def test_months_and_weeks_are_buckets_of_the_same_numbers(world):
    svc, _backend, _clock, ids = world
    days = usage.statistics(svc, admin(), "team:ml", "day", DAY_D, DAY_E)
    months = usage.statistics(svc, admin(), "team:ml", "month", "2026-02-01", "2026-04-30")
    assert months["buckets"] == ["2026-02", "2026-03", "2026-04"]
    assert months["gpu_minutes"] == {t: [0, sum(v), 0] for t, v in days["gpu_minutes"].items()}
    assert months["jobs"]["succeeded"] == [0, 2, 0] and months["wait_started"] == [0, 3, 0]
    assert months["wait_median_s"][1] == days["totals"]["wait_median_s"]
    assert months["wait_median_s"][0] is None
    weeks = usage.statistics(svc, admin(), "team:ml", "week", "2026-03-01", "2026-03-16")
    assert weeks["buckets"] == ["2026-02-23", "2026-03-02", "2026-03-09", "2026-03-16"]
    assert weeks["gpu_minutes"]["a4000"] == [0, 0, sum(days["gpu_minutes"]["a4000"]), 0]
