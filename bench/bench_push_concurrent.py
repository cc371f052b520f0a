"""Benchmark (issue 17 item 4): 50 pushes from 50 clients at once, to 50 branches.

Each client is its own clone (its own commit, its own `git push` process) of one of several
projects, pushing as one of two users. All pushes wait on one FIFO and are released together
when it is closed; each client times its own `git push` (bash's $EPOCHREALTIME around it).

The baseline, in the same run: the same 50 clients released the same way against plain
`git http-backend` behind the same WSGI gateway with HTTP Basic auth (no hooks), each running one
bare `sbatch` after its push; its push time includes that `sbatch`, as Slipway's reply does.

Then, with every push returned, checks that nothing was lost:
* every push exited 0 and its reply named its job (`slipway: job N queued (...)`: Slurm's answer);
* Slipway's database has exactly one job per pushed branch, each with a Slurm job id, and no
  reservation left behind (no job still `queued` without a Slurm id);
* Slurm has every one of those jobs (squeue by name `slipway-N`, PENDING or already RUNNING), each
  exactly once, and no other Slipway job.
The entrypoint sleeps, so the jobs stay in the queue while they are checked; they are cancelled
at the end.

Usage (a cluster must be up):
    SLURM_CONF=... .venv/bin/python bench/bench_push_concurrent.py [-n 50] [--projects 5]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.harness import cleanup, start_slipway, write_project  # noqa: E402

ENTRY = "#!/bin/bash\nsleep 120\n"
USERS = (("alice", "sw-alice"), ("bob", "sw-bob"))

BASELINE_CLIENT = r"""
read -r _ < "$FIFO"
start=$EPOCHREALTIME
git push "$URL" "HEAD:refs/heads/$BRANCH" > "$OUT.log" 2>&1 && \
    sbatch --parsable --uid=sw-alice -A slipway-test --gres=gpu:a4000:1 -o /dev/null \
        --chdir=/tmp "$SCRIPT" >> "$OUT.log" 2>&1
rc=$?
end=$EPOCHREALTIME
echo "$start $end $rc" > "$OUT.time"
"""

CLIENT = r"""
read -r _ < "$FIFO"
start=$EPOCHREALTIME
git push origin "HEAD:refs/heads/$BRANCH" > "$OUT.log" 2>&1
rc=$?
end=$EPOCHREALTIME
echo "$start $end $rc" > "$OUT.time"
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p * len(xs))) - 1))]


def burst(clients: list, fifo: Path) -> float:
    """Release every client blocked on ``fifo`` at once; the wall time until all are done."""
    time.sleep(1.0)                       # every client is blocked on the FIFO
    t0 = time.time()
    os.close(os.open(fifo, os.O_WRONLY))  # release them all at once
    for *_, proc in clients:
        proc.wait(timeout=600)
    return time.time() - t0


def timings(out: Path, n: int) -> tuple[list[float], list[str]]:
    ms, rcs = [], []
    for i in range(n):
        start, end, rc = (out / f"r{i}.time").read_text().split()
        ms.append((float(end) - float(start)) * 1000)
        rcs.append(rc)
    return ms, rcs


def baseline(sw, seeds: dict, projects: list[str], n: int, tmp: Path, env: dict) -> dict:
    """The same burst to plain `git http-backend` (Basic auth, no hooks) + one bare `sbatch`
    per client: what git and Slurm alone cost for 50 pushes at once on this machine."""
    from git_gateway.http import GitHttpApp
    from tests.support.git_server import serve, static_authenticator

    root = tmp / "plain"
    for p in projects:
        repo = root / "lab" / f"{p}.git"
        sw.git("init", "-q", "--bare", str(repo))
        sw.git("config", "-f", str(repo / "config"), "http.receivepack", "true")
    script = tmp / "job.sh"
    script.write_text("#!/bin/bash\nsleep 120\n")
    script.chmod(0o755)
    app = GitHttpApp(repos_root=str(root), authenticate=static_authenticator({"u": "pw"}),
                     hook_url="", hook_secret="", lfs_root=str(tmp / "lfs"),
                     direct_receive_pack=False)   # the baseline is git's http-backend
    out = tmp / "base-out"
    out.mkdir()
    fifo = tmp / "go-base"
    os.mkfifo(fifo)
    with serve(app, threads=16) as base_url:
        clients = []
        for i in range(n):
            p = projects[i % len(projects)]
            cenv = {"PATH": os.environ["PATH"], "HOME": str(sw.homes), "GIT_TERMINAL_PROMPT": "0",
                    "LANG": "C.UTF-8", "FIFO": str(fifo), "BRANCH": f"c{i}", "OUT": str(out / f"r{i}"),
                    "URL": base_url.replace("http://", "http://u:pw@") + f"/git/lab/{p}.git",
                    "SCRIPT": str(script), "SLURM_CONF": env["SLURM_CONF"]}
            clients.append((i, p, "u", subprocess.Popen(["bash", "-c", BASELINE_CLIENT],
                                                        cwd=tmp / f"c{i}", env=cenv)))
        wall = burst(clients, fifo)
    ms, rcs = timings(out, n)
    subprocess.run(["scancel", "-u", "sw-alice", "-A", "slipway-test"], env=env, capture_output=True)
    return {"ok": rcs.count("0"), "push_ms": {"p50": round(statistics.median(ms), 1),
                                               "p95": round(pct(ms, 0.95), 1),
                                               "max": round(max(ms), 1)},
            "all_done_wall_s": round(wall, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50, help="clients (= pushes = branches)")
    ap.add_argument("--projects", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="`slipway serve --threads` (default: the server's own default)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the same burst to plain git http-backend + sbatch")
    args = ap.parse_args()
    cluster_env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    env = {**os.environ, **cluster_env}
    sw = start_slipway(cluster_env, SLIPWAY_RECONCILE_INTERVAL="5")
    if args.threads:
        sw.stop()
        import tests.support.harness as h
        port = sw.url.rsplit(":", 1)[1]
        sw.proc = subprocess.Popen([h.SLIPWAY, "serve", "--host", "127.0.0.1", "--port", port,
                                    "--workspace-port", "0", "--threads", str(args.threads)],
                                   env=sw.env, stdout=open(sw.log_file, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while sw.cli("job", "list", check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.3)
    tmp = Path(tempfile.mkdtemp(prefix="bench-push50-", dir="/tmp"))
    try:
        for user, unix in USERS:
            sw.cli("user", "add", user, "--unix-user", unix)
            sw.tokens[user] = sw.cli("token", "create", user).stdout.strip()
        sw.cli("team", "create", "lab", "--owner", USERS[0][0])
        for user, _ in USERS[1:]:
            sw.cli("team", "add-member", "lab", user, "--role", "user")
        sw.cli("team", "add-funds", "lab", "10000.00")
        projects = [f"p{i}" for i in range(args.projects)]
        for p in projects:
            sw.cli("project", "create", "lab", p, "--gpus", "a4000:1", "--image", "busybox")
        seeds = {}
        for i, p in enumerate(projects):
            seed = tmp / f"seed-{p}"
            sw.git("clone", "-q", sw.remote(USERS[0][0], "lab", p), str(seed))
            write_project(seed, ENTRY)
            sw.git("add", "-A", cwd=seed)
            sw.git("commit", "-qm", "base", cwd=seed)
            seeds[p] = seed
        fifo = tmp / "go"
        os.mkfifo(fifo)
        clients = []
        for i in range(args.n):
            p = projects[i % len(projects)]
            user = USERS[i % len(USERS)][0]
            work = tmp / f"c{i}"
            shutil.copytree(seeds[p], work, symlinks=True)
            sw.git("remote", "set-url", "origin", sw.remote(user, "lab", p), cwd=work)
            (work / "client.txt").write_text(f"client {i}\n")
            sw.git("add", "-A", cwd=work)
            sw.git("commit", "-qm", f"client {i}", cwd=work)
            cenv = {"PATH": os.environ["PATH"], "HOME": str(sw.homes), "GIT_TERMINAL_PROMPT": "0",
                    "LANG": "C.UTF-8", "FIFO": str(fifo), "BRANCH": f"c{i}", "OUT": str(tmp / f"r{i}")}
            proc = subprocess.Popen(["bash", "-c", CLIENT], cwd=work, env=cenv)
            clients.append((i, p, user, proc))
        wall = burst(clients, fifo)

        durations, failures, job_of = [], [], {}
        for i, p, user, _ in clients:
            start, end, rc = (tmp / f"r{i}.time").read_text().split()
            log = (tmp / f"r{i}.log").read_text()
            durations.append(float(end) - float(start))
            queued = [ln for ln in log.splitlines() if "slipway: job " in ln and " queued (" in ln]
            if rc != "0" or len(queued) != 1:
                failures.append(f"client {i} ({user} → {p}/c{i}): rc {rc}: {log.strip()[-600:]}")
                continue
            job_of[(p, f"c{i}")] = int(queued[0].split("slipway: job ", 1)[1].split()[0])

        ms = [d * 1000 for d in durations]
        print(f"{len(job_of)}/{args.n} pushes accepted with a job in {wall:.2f} s; push p50 "
              f"{statistics.median(ms):.0f} ms, max {max(ms):.0f} ms", flush=True)
        for f in failures[:5]:
            print("FAILED:", f, flush=True)
        db = sqlite3.connect(f"file:{sw.data_dir / 'slipway.db'}?mode=ro", uri=True)
        rows = db.execute("SELECT j.id, p.name, j.branch, j.state, j.slurm_job_id FROM jobs j "
                          "JOIN projects p ON p.id = j.project_id").fetchall()
        db.close()
        per_branch: dict[tuple[str, str], list] = {}
        for jid, p, branch, state, slurm_id in rows:
            per_branch.setdefault((p, branch), []).append((jid, state, slurm_id))
        problems = list(failures)
        for i, p, *_ in clients:
            got = per_branch.get((p, f"c{i}"), [])
            if len(got) != 1:
                problems.append(f"{p}/c{i}: {len(got)} job rows in the database: {got}")
            elif job_of.get((p, f"c{i}")) not in (None, got[0][0]):
                problems.append(f"{p}/c{i}: the push named job {job_of[(p, f'c{i}')]}, the database {got[0]}")
        left = [r for r in rows if r[3] == "queued" or (r[4] is None and r[3] != "failed")]
        if left:
            problems.append(f"reservations left behind (queued, no Slurm id): {left}")
        sq = subprocess.run(["squeue", "-h", "-o", "%i %j %T %a"], env=env, capture_output=True,
                            text=True)
        if sq.returncode != 0:
            raise RuntimeError(f"squeue failed: {sq.stderr.strip()}")
        out = sq.stdout.split("\n")
        in_slurm: dict[str, list[tuple[str, str]]] = {}
        mine = sw.env["SLIPWAY_SLURM_ACCOUNT_PREFIX"]   # this Slipway's accounts, not another's
        for line in filter(None, out):
            sid, name, state, account = line.split()
            if name.startswith("slipway-") and account.startswith(mine):
                in_slurm.setdefault(name, []).append((sid, state))
        slurm_states: dict[str, int] = {}
        for jid, p, branch, state, slurm_id in rows:
            seen = in_slurm.pop(f"slipway-{jid}", [])
            if len(seen) != 1 or seen[0][0] != str(slurm_id):
                problems.append(f"job {jid} ({p}/{branch}, Slurm id {slurm_id}): in squeue as {seen}")
            else:
                slurm_states[seen[0][1]] = slurm_states.get(seen[0][1], 0) + 1
        if in_slurm:
            problems.append(f"Slipway jobs in Slurm that the database does not have: {in_slurm}")

        result = {
            "clients": args.n, "projects": args.projects, "users": len(USERS),
            "server_threads": args.threads or "default",
            "accepted_with_job": len(job_of), "db_jobs": len(rows),
            "in_squeue": slurm_states, "lost_or_failed": len(problems),
            "push_ms": {"p50": round(statistics.median(ms), 1), "p95": round(pct(ms, 0.95), 1),
                        "max": round(max(ms), 1), "min": round(min(ms), 1)},
            "all_done_wall_s": round(wall, 2),
        }
        if not args.no_baseline:
            result["baseline_plain_http_plus_sbatch"] = baseline(sw, seeds, projects, args.n, tmp, env)
            result["p95_ratio_vs_baseline"] = round(
                result["push_ms"]["p95"] / result["baseline_plain_http_plus_sbatch"]["push_ms"]["p95"], 2)
        print(json.dumps(result, indent=1))
        for p in problems[:20]:
            print("PROBLEM:", p)
        return 1 if problems else 0
    finally:
        cleanup(sw, cluster_env)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
