"""Benchmark: the reconciler's tick with 100, 1,000 and 10,000 jobs in Slurm's queue (issue 17
item 2), the old queue query (``squeue --json``) and the new one (slurm_bridge.queue_text) side
by side, in the same run, at each size.

    slurm_conf/cluster up --dir var/test-cluster-scale --port-base 7400
    .venv/bin/python bench/bench_reconcile_scale.py --cluster-dir var/test-cluster-scale \
        [--sizes 100,1000,10000] [--ticks 5] [--slipway-jobs 4] [--out FILE.json]
    slurm_conf/cluster down --dir var/test-cluster-scale

1. 20 teams that are not Slipway's: Slurm accounts ``scale-t01..20``, each with its own unix user
   ``scale-u01..20`` (created with useradd/sacctmgr when missing; root only);
2. a real Slipway (tests/support/harness.start_slipway) with ``--slipway-jobs`` running GPU jobs
   pushed through git; then its server stops (it hands over the leader lease) and the ticks run
   in this process, with the same configuration, through ``Reconciler.tick``;
3. for each size, HELD jobs (``sbatch --hold --uid``) are added until the queue holds that many
   jobs of the 20 teams (round robin: most of the queue is not Slipway's), then for each query
   one warm-up tick and ``--ticks`` measured ticks:
   * wall: ``tick()`` end to end (monitoring included), and ``report.duration_s`` (without it);
   * CPU: this process's user+system time plus its children's (the Slurm commands it ran),
     ``resource.getrusage`` deltas;
   * bytes read from Slurm: the stdout of every Slurm command the tick ran (a counting runner
     under the real CliBackend), and the seconds spent in each command;
   * parse: the queue query's time minus its squeue's;
   * Slurm RPCs: slurmctld's own counters (``sdiag``, by message type) before and after the
     measured ticks, less sdiag's own; per tick and per minute at the configured interval.
4. prints a JSON document (and writes it to ``--out``); the jobs it queued are cancelled at the
   end, its Slipway is cleaned up (tests/support/harness.cleanup).
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import resource
import subprocess
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

TEAMS = 20
JOB_PREFIX = "scalebench"
SLEEPER = "#!/bin/bash\nsleep 900\n"


# ------------------------------------------------------------------------------ the cluster
def cluster_env(cluster_dir: Path) -> dict[str, str]:
    text = (cluster_dir / "env.sh").read_text()
    env = dict(re.findall(r"export (\w+)='?([^'\n]*)'?", text))
    return {"SLURM_CONF": env["SLURM_CONF"], "SLIPWAY_CLUSTER_DIR": str(cluster_dir)}


def slurm(env, *argv, check=True) -> str:
    res = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")
    return res.stdout


def ensure_teams(env) -> list[tuple[str, str]]:
    """(unix user, Slurm account) of the 20 teams that are not Slipway's."""
    teams = [(f"scale-u{i:02d}", f"scale-t{i:02d}") for i in range(1, TEAMS + 1)]
    for user, _ in teams:
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", user], check=True)
    have = set(slurm(env, "sacctmgr", "-nP", "show", "assoc", "format=account,user").split())
    for user, account in teams:
        if f"{account}|" not in have:
            slurm(env, "sacctmgr", "-i", "add", "account", account, check=False)
        if f"{account}|{user}" not in have:
            slurm(env, "sacctmgr", "-i", "add", "user", user, f"account={account}", check=False)
    return teams


def wait_purged(env, most: int, timeout: float = 600) -> None:
    """Wait until the controller holds at most ``most`` job records in any state: the jobs an
    earlier run cancelled stay in squeue's answer for MinJobAge and would be counted as queue."""
    deadline = time.monotonic() + timeout
    while True:
        n = len(slurm(env, "squeue", "-h", "-t", "all", "-o", "%i").split())
        if n <= most:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} job records still in the queue after {timeout:g} s")
        print(f"waiting for {n} ended job records to leave the queue (MinJobAge)", file=sys.stderr)
        time.sleep(10)


def queued_others(env) -> int:
    return sum(1 for n in slurm(env, "squeue", "-h", "-o", "%j").split() if n.startswith(JOB_PREFIX))


def add_held(env, teams, count: int, start: int) -> None:
    """``count`` more held jobs, round robin over the teams (4 sbatch at a time)."""
    def one(k: int) -> None:
        user, account = teams[k % len(teams)]
        ids = pwd.getpwnam(user)
        slurm(env, "sbatch", "--hold", "--parsable", f"--uid={ids.pw_uid}", f"--gid={ids.pw_gid}",
              f"--account={account}", f"--job-name={JOB_PREFIX}-{k}", "--output=/dev/null",
              "--chdir=/tmp", "--wrap", "sleep 60")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(start, start + count)))


_RPC = re.compile(r"^\s+(\S+)\s+\(\s*\d+\)\s+count:(\d+)\s+ave_time:\d+\s+total_time:(\d+)", re.M)


def rpc_counts(env) -> dict[str, tuple[int, int]]:
    """slurmctld's RPC counters by message type (sdiag): (count, total microseconds)."""
    text = slurm(env, "sdiag").split("Remote Procedure Call statistics by user")[0]
    return {name: (int(n), int(us)) for name, n, us in _RPC.findall(text)}


# ------------------------------------------------------------------------------ Slipway
def start_slipway_with_jobs(env, n: int):
    from tests.support.harness import job_id_from_push, start_slipway, write_project

    sw = start_slipway(env, SLIPWAY_RECONCILE_INTERVAL="2")
    team = "alice"
    sw.cli("user", "add", team, "--unix-user", "sw-alice")
    sw.cli("team", "add-funds", team, "1000", "--note", "bench funds")
    sw.cli("project", "create", team, "p", "--gpus", "a4000:1", "--image", "python")
    sw.tokens[team] = sw.cli("token", "create", team).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="scale-push-"))
    sw.git("clone", "-q", sw.remote(team, team, "p"), str(work / "p"))
    ids = []
    for k in range(n):
        sw.git("checkout", "-qB", f"b{k}", cwd=work / "p")
        write_project(work / "p", SLEEPER + f"# {k}\n")
        sw.git("add", "-A", cwd=work / "p")
        sw.git("commit", "-qm", f"b{k}", cwd=work / "p")
        ids.append(job_id_from_push(sw.git("push", "origin", f"b{k}", cwd=work / "p").stderr))
    for job_id in ids:
        sw.wait_job(job_id, states={"running"}, timeout=180)
    return sw, ids


class CountingRunner:
    """The real runner, counting each Slurm command's stdout bytes and seconds."""

    def __init__(self, inner):
        self.inner = inner
        self.reset()

    def reset(self):
        self.calls: dict[str, list[float]] = {}

    def __call__(self, argv, **kw):
        t0 = time.monotonic()
        res = self.inner(argv, **kw)
        key = argv[0] + (" --json" if "--json" in argv else "")
        c = self.calls.setdefault(key, [0, 0, 0.0])
        c[0] += 1
        c[1] += len(res.stdout.encode())
        c[2] += time.monotonic() - t0
        return res


def json_jobs(self, comment="slipway"):
    """The query before issue 17: ONE ``squeue --json``, parsed by records.parse_squeue."""
    from slurm_bridge import records
    out = {}
    for rec in records.parse_squeue(self._json(["squeue", "--json"])):
        if comment is None or rec.comment == comment or rec.comment.startswith(comment + ":"):
            out[rec.job_id] = rec
    return out


def measure(r, runner, env, ticks: int, query: str, interval: float) -> dict:
    from slurm_bridge.cli import CliBackend

    backend = r.svc.backend
    if query == "json":
        backend.jobs = types.MethodType(json_jobs, backend)
    else:
        backend.jobs = types.MethodType(CliBackend.jobs, backend)
    r.tick(wait=30)     # warm-up: caches, the first sample of the minute
    runner.reset()
    before = rpc_counts(env)
    walls, durations, cpus, parse, squeue_s = [], [], [], [], []
    queue_bytes = 0
    for _ in range(ticks):
        runner.reset()
        s0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        jobs_t0 = [0.0]
        orig = backend.jobs

        def timed(comment="slipway", _orig=orig):
            start = time.monotonic()
            try:
                return _orig(comment)
            finally:
                jobs_t0[0] += time.monotonic() - start
        backend.jobs = timed
        rep = r.tick(wait=30)
        backend.jobs = orig
        wall = time.monotonic() - t0
        s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        if not rep.polled:
            raise RuntimeError(f"tick did not poll: {rep.errors}")
        walls.append(wall)
        durations.append(rep.duration_s)
        cpus.append((s1.ru_utime + s1.ru_stime - s0.ru_utime - s0.ru_stime)
                    + (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime))
        sq = runner.calls.get("squeue --json" if query == "json" else "squeue", [0, 0, 0.0])
        parse.append(jobs_t0[0] - sq[2])
        squeue_s.append(sq[2])
        queue_bytes = sq[1]
        per_tick = {k: {"calls": v[0], "bytes": v[1], "s": round(v[2], 3)}
                    for k, v in runner.calls.items()}
    after = rpc_counts(env)
    zero = (0, 0)
    # the tick's own: REQUEST_* (MESSAGE_* are the slurmds' registrations and pings), less
    # sdiag's own REQUEST_STATS_INFO
    rpcs = {k: after[k][0] - before.get(k, zero)[0] for k in after
            if k.startswith("REQUEST_") and k != "REQUEST_STATS_INFO"
            and after[k][0] > before.get(k, zero)[0]}
    ctld_us = {k: after[k][1] - before.get(k, zero)[1] for k in rpcs}
    # sdiag's own calls are REQUEST_STATS_INFO (left out above)
    per_tick_rpcs = sum(rpcs.values()) / ticks
    return {
        "query": query, "ticks": ticks,
        "wall_s_median": round(sorted(walls)[len(walls) // 2], 3), "wall_s_max": round(max(walls), 3),
        "duration_s_median": round(sorted(durations)[len(durations) // 2], 3),
        "cpu_s_median": round(sorted(cpus)[len(cpus) // 2], 3),
        "queue_bytes": queue_bytes, "queue_parse_s_median": round(sorted(parse)[len(parse) // 2], 3),
        "squeue_s_median": round(sorted(squeue_s)[len(squeue_s) // 2], 3),
        "commands_last_tick": per_tick,
        "rpcs_by_type": rpcs,
        "ctld_ms_per_tick_by_type": {k: round(v / 1000 / ticks, 1) for k, v in ctld_us.items()}, "rpcs_per_tick": round(per_tick_rpcs, 2),
        "rpcs_per_minute": round(per_tick_rpcs * 60 / interval, 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cluster-dir", default="var/test-cluster-scale")
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--ticks", type=int, default=5)
    ap.add_argument("--slipway-jobs", type=int, default=4)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    cdir = Path(args.cluster_dir).resolve()
    env = cluster_env(cdir)
    os.environ.update(env)
    teams = ensure_teams(env)
    sizes = [int(x) for x in args.sizes.split(",")]
    wait_purged(env, max(10, sizes[0] // 10))
    sw, ids = start_slipway_with_jobs(env, args.slipway_jobs)
    results = {"slipway_jobs": len(ids), "teams": TEAMS, "sizes": []}
    try:
        sw.stop()   # its reconciler lets the lease go; the ticks run here
        os.environ.update({k: v for k, v in sw.env.items() if k.startswith("SLIPWAY_")})
        from portal.adapters.slurm import make_backend
        from portal.bootstrap import bootstrap
        from portal.config import load_config
        from portal.jobs.reconciler import Reconciler

        config = load_config()
        backend = make_backend(config)
        runner = backend.runner = CountingRunner(backend.runner)
        svc = bootstrap(config, backend=backend)
        r = Reconciler(svc)
        interval = 5.0   # the default reconcile_interval: RPCs per minute at that pace
        have = queued_others(env)
        for size in sizes:
            if size > have:
                t0 = time.monotonic()
                add_held(env, teams, size - have, have)
                print(f"queued {size - have} held jobs in {time.monotonic() - t0:.1f} s",
                      file=sys.stderr)
                have = size
            row = {"queued_other": have, "queue_total": have + len(ids)}
            for query in ("json", "text"):
                row[query] = measure(r, runner, env, args.ticks, query, interval)
                print(json.dumps({size: {query: row[query]}}), file=sys.stderr)
            results["sizes"].append(row)
    finally:
        from tests.support.harness import cleanup
        ids_out = [line.split()[0] for line in slurm(env, "squeue", "-h", "-o", "%i %j").splitlines()
                   if line.split()[1:2] and line.split()[1].startswith(JOB_PREFIX)]
        for k in range(0, len(ids_out), 2000):
            slurm(env, "scancel", *ids_out[k:k + 2000], check=False)
        cleanup(sw, env)
    doc = json.dumps(results, indent=1)
    print(doc)
    if args.out:
        Path(args.out).write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
