"""The chaos run (issue 16 item 7, docs/FAULTS.md §7): a real Slipway on two servers (PostgreSQL,
one data directory, tests/support/failover_proxy.py as the site's one address) on a local Slurm
cluster with a backup controller, jobs pushed by several teams while the faults of
tests/support/chaos_faults.py come one after another at the plan's random moments; then every
job is waited for and tests/support/chaos_checks.py checks what the issue lists.

``World`` is built by ``open_world`` and torn down by ``close_world`` (every daemon and server
it started stopped by its own handle); ``run(world, plan)`` returns a ``RunResult``."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from tests.support import chaos_faults as faults
from tests.support.chaos_plan import Plan, PlannedJob
from tests.support.failover_proxy import FailoverProxy
from tests.support.ha_cluster import ha_destroy, ha_up, wait_for
from tests.support.harness import Slipway, another_server, cleanup, start_slipway, \
    write_project

RATES = "a4000:0.50,a6000:1.00"
INTERVAL = "1"       # the servers' reconcile interval (s)
RESULTS_GRACE_S = 30  # after every job ended: how long their results refs may still take


@dataclass
class World:
    cluster: object
    servers: list[Slipway]
    engine: object
    proxy: FailoverProxy
    pg: object | None = None          # a PostgreSQL started for this run (script), else None
    homes: Path | None = None

    @property
    def sw(self) -> Slipway:
        """Any server's handle: the CLI and git run locally, whichever server is alive."""
        return self.servers[0]

    def remote(self, user: str, team: str) -> str:
        return f"http://{user}:{self.sw.tokens[user]}@127.0.0.1:{self.proxy.port}/git/{team}/chaos.git"


def open_world(plan: Plan, db_url: str | None = None) -> World:
    """HA cluster, PostgreSQL (``db_url``, or a server of its own), two servers behind the proxy,
    and the plan's teams (a user, funds, an a4000:1 project and a token each)."""
    world = None
    pg = None
    cluster = ha_up()
    try:
        if db_url is None:
            from tests.pg_server import start_postgres
            pg = start_postgres()
            db_url = pg.url
        else:
            from tests.pg_server import create_database
            db_url = create_database(db_url, "chaos_" + secrets.token_hex(3))
        proxy = FailoverProxy()
        a = start_slipway(cluster.env, SLIPWAY_DATABASE_URL=db_url, SLIPWAY_BASE_URL=proxy.url,
                          SLIPWAY_GPU_RATES=RATES, SLIPWAY_RECONCILE_INTERVAL=INTERVAL)
        engine = create_engine(db_url, poolclass=NullPool)
        world = World(cluster=cluster, servers=[a], engine=engine, proxy=proxy, pg=pg)
        proxy.backends.append(int(a.url.rsplit(":", 1)[1]))
        wait_for("server A leading", lambda: faults.leader_pid(engine) == a.proc.pid, timeout=30)
        b = another_server(a)
        world.servers.append(b)
        proxy.backends.append(int(b.url.rsplit(":", 1)[1]))
        for team, unix in plan.teams:
            a.cli("user", "add", team, "--unix-user", unix)
            a.cli("team", "add-funds", team, "50.00", "--note", "chaos run")
            a.cli("project", "create", team, "chaos", "--gpus", "a4000:1", "--image", "python")
            a.tokens[team] = a.cli("token", "create", team).stdout.strip()
        return world
    except BaseException:
        if world is not None:
            close_world(world)
        else:
            if pg is not None:
                pg.stop()
            ha_destroy()
        raise


def keep_logs(world: World, dest: Path) -> None:
    """Copy the servers' logs, the jobs' logs and the cluster's daemon logs to ``dest`` (the
    world is removed afterwards): ``SLIPWAY_CHAOS_KEEP=DIR`` keeps them for a post-mortem."""
    dest.mkdir(parents=True, exist_ok=True)
    for log in world.sw.data_dir.glob("*.log"):
        shutil.copy2(log, dest / log.name)
    for log in world.sw.data_dir.glob("jobs/*/*.log"):
        shutil.copy2(log, dest / f"job-{log.parent.name}-{log.name}")
    shutil.copytree(Path(world.cluster.dir) / "log", dest / "cluster-log", dirs_exist_ok=True)


def close_world(world: World) -> None:
    if os.environ.get("SLIPWAY_CHAOS_KEEP"):
        keep_logs(world, Path(os.environ["SLIPWAY_CHAOS_KEEP"]))
    for s in world.servers[1:]:
        s.stop()
    try:
        cleanup(world.servers[0], world.cluster.env)
    finally:
        world.proxy.close()
        world.engine.dispose()
        if world.pg is not None:
            world.pg.stop()
        ha_destroy()


@dataclass
class RunResult:
    faults: list[faults.Fault] = field(default_factory=list)
    wall_s: float = 0.0
    jobs_final_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def _busy_nodes(world: World, plan: Plan):
    """a4000 nodes running this run's jobs, the one running a checkpointing job first, then by
    how many jobs they run."""
    kind = {f"slipway-{j.job_id}": j.kind for j in plan.jobs if j.job_id}

    def nodes() -> list[str]:
        out = world.cluster.run("squeue", "-h", "-t", "R", "-o", "%j %N", check=False).stdout
        score: dict[str, list[int]] = {}
        for line in out.splitlines():
            name, _, node = line.partition(" ")
            if name in kind and node:
                s = score.setdefault(node.strip(), [0, 0])
                s[0] += kind[name] == "ckpt"
                s[1] += 1
        return sorted(score, key=lambda n: score[n], reverse=True)
    return nodes


def _chaos(world: World, plan: Plan, t0: float, result: RunResult, last_submit: list[float]) -> None:
    for pf in plan.faults:
        time.sleep(max(0.0, pf.at - (time.monotonic() - t0)))
        fault = faults.Fault(kind=pf.kind, at_s=round(time.monotonic() - t0, 1))
        result.faults.append(fault)
        if pf.kind == "node":
            busy = _busy_nodes(world, plan)
            # a node loss only tests something when a job runs there: wait (≤ 30 s) for one
            deadline = time.monotonic() + 30
            while not busy() and time.monotonic() < deadline:
                time.sleep(0.5)
            faults.kill_a_node(world, fault, busy)
        elif pf.kind == "slurmctld":
            faults.kill_primary_controller(world, fault, last_submit[0], pf.hold_s)
        elif pf.kind == "slipway":
            faults.kill_leading_server(world, fault, pf.hold_s)
        else:
            faults.stop_accounting(world, fault, pf.outage_s)


def _clone(world: World, team: str) -> Path:
    work = world.sw.homes / f"work-{team}"
    if not work.exists():
        world.sw.git("clone", "-q", world.remote(team, team), str(work))
    return work


def _push(world: World, job: PlannedJob) -> None:
    """Commit the job's entrypoint on its branch and push it through the one address; a push cut by
    a fault is pushed again (as a user would) until the branch is there."""
    work = _clone(world, job.team)
    world.sw.git("checkout", "-q", "-B", job.branch, cwd=work)
    write_project(work, job.entrypoint())
    world.sw.git("add", "-A", cwd=work)
    world.sw.git("commit", "-qm", job.branch, cwd=work)
    for _ in range(6):
        res = world.sw.git("push", "origin", job.branch, cwd=work, check=False, timeout=90)
        text = res.stderr
        if res.returncode == 0 and " queued (" in text:
            job.push_answers.append("queued")
        elif res.returncode == 0 and "not known yet" in text:
            job.push_answers.append("unknown")
        elif res.returncode == 0:
            job.push_answers.append("accepted")
        else:
            job.push_answers.append("refused: " + text.strip().splitlines()[-1][:160] if text.strip()
                                    else "refused")
        if res.returncode == 0:
            break
        time.sleep(2)
    job.job_id = _job_of_branch(world, job)


def team_jobs(world: World, team: str) -> list[dict]:
    return json.loads(world.sw.cli("job", "list", "--team", team, "--limit", "500", "--json").stdout)


def jobs_of_branch(world: World, team: str, branch: str) -> list[dict]:
    return [r for r in team_jobs(world, team) if r["project"] == f"{team}/chaos" and r["branch"] == branch]


def _job_of_branch(world: World, job: PlannedJob) -> int | None:
    rows = jobs_of_branch(world, job.team, job.branch)
    return max((r["id"] for r in rows), default=None)


def _cancel(world: World, job: PlannedJob, t_run: float) -> None:
    """The user cancels the job once it has run ``cancel_at`` seconds (from the page or the CLI;
    here the CLI, as its user)."""
    world.sw.wait_job(job.job_id, {"running"}, timeout=t_run)
    time.sleep(job.cancel_at or 0)
    world.sw.cli("job", "cancel", str(job.job_id), as_user=job.team, timeout=60)


def run(world: World, plan: Plan, final_timeout: float = 600) -> RunResult:
    result = RunResult()
    t0 = time.monotonic()
    last_submit = [time.time()]
    failure: list[BaseException] = []

    def chaos():
        try:
            _chaos(world, plan, t0, result, last_submit)
        except BaseException as exc:  # noqa: BLE001 — re-raised in the main thread
            failure.append(exc)

    thread = threading.Thread(target=chaos, name="chaos", daemon=True)
    thread.start()
    cancels = []
    for job in sorted(plan.jobs, key=lambda j: j.push_at):
        time.sleep(max(0.0, job.push_at - (time.monotonic() - t0)))
        _push(world, job)
        last_submit[0] = time.time()
        if job.kind == "cancel" and job.job_id:
            c = threading.Thread(target=_run_cancel, args=(world, job, failure), daemon=True)
            c.start()
            cancels.append(c)
    for c in cancels:
        c.join(300)
    thread.join(final_timeout)
    if thread.is_alive():
        failure.append(AssertionError(f"the faults did not end within {final_timeout} s"))
    if failure:
        raise failure[0]
    deadline = time.monotonic() + final_timeout
    for job in plan.jobs:
        if job.job_id is None:
            continue
        try:
            world.sw.wait_job(job.job_id, timeout=max(1.0, deadline - time.monotonic()))
        except AssertionError as exc:
            result.errors.append(f"job {job.job_id} ({job.branch}) never ended: {str(exc)[:400]}")
    result.jobs_final_s = round(time.monotonic() - t0, 1)
    # the runner reports its results push right after the job's end; a job whose ref never comes
    # is reported by the results check, not waited for forever
    waiting = [j.job_id for j in plan.jobs if j.job_id]
    ref_deadline = time.monotonic() + RESULTS_GRACE_S
    while waiting and time.monotonic() < ref_deadline:
        waiting = [i for i in waiting if not world.sw.job(i)["results_ref"]]
        time.sleep(0.5 if waiting else 0)
    result.wall_s = result.jobs_final_s
    return result


def _run_cancel(world: World, job: PlannedJob, failure: list) -> None:
    try:
        _cancel(world, job, 240)
    except BaseException as exc:  # noqa: BLE001
        failure.append(exc)


def settle(world: World, check, timeout: float = 90) -> list[str]:
    """Re-run ``check`` (a list of problems) until it finds none or ``timeout`` passes: billing
    catches up at the reconciler's ticks. Returns the last problems (empty: all hold); then
    checks again after three more ticks, so a bill still moving is caught."""
    deadline = time.monotonic() + timeout
    problems = check()
    while problems and time.monotonic() < deadline:
        time.sleep(1)
        problems = check()
    if not problems:
        time.sleep(3 * float(INTERVAL) + 1)
        problems = check()
    return problems
