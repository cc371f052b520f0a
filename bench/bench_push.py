"""Benchmark: `git push` → job PENDING in squeue, through Slipway vs. bare git + bare sbatch.

Slipway: a real `git push` over HTTP to a Slipway project (auth, pre-receive checks, reservation,
post-receive submission through slurm_bridge) until `squeue` lists the job.
Bare: `git push` of the same commit to a local bare repository, then `sbatch` of a one-line
script, until `squeue` lists it.
Bare over HTTP: the same, but the push goes over smart HTTP to a plain `git http-backend` (no
hooks, no Slipway), to separate the cost of the transport from Slipway's own work.
All three run interleaved in the same run, against the same cluster; each round starts once the
previous round's Slipway job has ended (its container run and results push are not measured and
must not slow the next round down).

The bare HTTP path has Basic authentication as a real site does: git's first request is answered
401 with a challenge, and every request after it carries the credentials and is checked
(``static_authenticator``: a dictionary lookup, the cheapest check there is, so the baseline is
never made slower than a real server's). ``push_only_median_ms`` is the time until ``git push``
returned (for Slipway: with Slurm's answer in the reply), without the ``squeue`` poll.

Usage (a cluster must be up; `make bench` does that):
    SLURM_CONF=... .venv/bin/python bench/bench_push.py [-n 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project  # noqa: E402

ENTRY = "#!/bin/bash\ntrue\n"


def squeue_has(env: dict, *, name: str | None = None, job_id: str | None = None) -> bool:
    argv = ["squeue", "-h", "-o", "%i %j"] + (["-j", job_id] if job_id else [])
    out = subprocess.run(argv, env=env, capture_output=True, text=True).stdout
    return any((name and line.split()[1:] == [name]) or (job_id and line.split()[0] == job_id)
               for line in out.splitlines() if line.strip())


def wait_queue(env: dict, **kw) -> None:
    deadline = time.monotonic() + 30
    while not squeue_has(env, **kw):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {kw} never appeared in squeue")
        time.sleep(0.005)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--python-hooks", action="store_true",
                    help="also push to a second project whose hooks are the Python hook program "
                         "(the hooks before issue 17), interleaved in the same run")
    args = ap.parse_args()
    cluster_env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    env = {**os.environ, **cluster_env}
    sw = start_slipway(cluster_env, SLIPWAY_RECONCILE_INTERVAL="5")
    tmp = Path(tempfile.mkdtemp(prefix="bench-push-", dir="/tmp"))
    try:
        sw.cli("user", "add", "bench", "--unix-user", "sw-alice")
        sw.cli("team", "add-funds", "bench", "1000.00")
        sw.cli("project", "create", "bench", "p", "--gpus", "a4000:1", "--image", "busybox")
        sw.tokens["bench"] = sw.cli("token", "create", "bench").stdout.strip()
        work = tmp / "work"
        sw.git("clone", "-q", sw.remote("bench", "bench", "p"), str(work))
        write_project(work, ENTRY)
        sw.git("add", "-A", cwd=work)
        sw.git("commit", "-qm", "bench", cwd=work)
        if args.python_hooks:
            from git_gateway import hooks
            sw.cli("project", "create", "bench", "py", "--gpus", "a4000:1", "--image", "busybox")
            hooks.install(sw.data_dir / "repos" / "bench" / "py.git" / "hooks", bash=None)
            sw.git("remote", "add", "py", sw.remote("bench", "bench", "py"), cwd=work)
        bare = tmp / "bare.git"
        sw.git("init", "-q", "--bare", str(bare))
        script = tmp / "job.sh"
        script.write_text("#!/bin/bash\ntrue\n")
        sbatch = ["sbatch", "--parsable", "--uid=sw-alice", "-A", "slipway-test", "--gres=gpu:a4000:1",
                  "-o", "/dev/null", "--chdir=/tmp"]

        from git_gateway.http import GitHttpApp
        from tests.support.git_server import serve, static_authenticator

        plain_root = tmp / "plain"
        (plain_root / "t").mkdir(parents=True)
        sw.git("init", "-q", "--bare", str(plain_root / "t" / "p.git"))
        sw.git("config", "-f", str(plain_root / "t" / "p.git" / "config"), "http.receivepack", "true")
        plain = GitHttpApp(repos_root=str(plain_root), authenticate=static_authenticator({"u": "pw"}),
                           hook_url="", hook_secret="", lfs_root=str(tmp / "lfs"),
                           direct_receive_pack=False)   # the baseline is git's http-backend
        http_ctx = serve(plain)
        plain_url = http_ctx.__enter__().replace("http://", "http://u:pw@") + "/git/t/p.git"

        slipway_s, bare_s, http_s, py_s = [], [], [], []
        pushed = {"slipway": [], "bare_local": [], "bare_http": [], "slipway_python_hooks": []}
        for i in range(args.n):
            branch = f"b{i}"
            t0 = time.perf_counter()
            out = sw.git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
            pushed["slipway"].append(time.perf_counter() - t0)
            job = job_id_from_push(out.stderr)
            wait_queue(env, name=f"slipway-{job}")
            slipway_s.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            sw.git("push", "-q", str(bare), f"HEAD:refs/heads/{branch}", cwd=work)
            pushed["bare_local"].append(time.perf_counter() - t0)
            jid = subprocess.run(sbatch + [str(script)], env=env, capture_output=True, text=True,
                                 check=True).stdout.strip().split(";")[0]
            wait_queue(env, job_id=jid)
            bare_s.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            sw.git("push", "-q", plain_url, f"HEAD:refs/heads/{branch}", cwd=work)
            pushed["bare_http"].append(time.perf_counter() - t0)
            jid = subprocess.run(sbatch + [str(script)], env=env, capture_output=True, text=True,
                                 check=True).stdout.strip().split(";")[0]
            wait_queue(env, job_id=jid)
            http_s.append(time.perf_counter() - t0)

            if args.python_hooks:
                t0 = time.perf_counter()
                out = sw.git("push", "-q", "py", f"HEAD:refs/heads/{branch}", cwd=work)
                pushed["slipway_python_hooks"].append(time.perf_counter() - t0)
                py_job = job_id_from_push(out.stderr)
                wait_queue(env, name=f"slipway-{py_job}")
                py_s.append(time.perf_counter() - t0)
                sw.wait_job(py_job, timeout=120)

            # Quiesce before the next round: Slipway's job runs its container and pushes its
            # results back (the bare jobs only run `true`); on a 2-core machine that work would
            # otherwise land inside the next round's measurements.
            sw.wait_job(job, timeout=120)
            time.sleep(0.3)

        def summary(xs):
            xs = sorted(xs)
            return {"median_ms": round(statistics.median(xs) * 1000, 1),
                    "p95_ms": round(xs[max(0, int(len(xs) * 0.95) - 1)] * 1000, 1),
                    "mean_ms": round(statistics.mean(xs) * 1000, 1)}

        http_ctx.__exit__(None, None, None)
        result = {"n": args.n, "slipway": summary(slipway_s), "bare_local": summary(bare_s),
                  "bare_http": summary(http_s),
                  "ratio_vs_bare_local": round(statistics.median(slipway_s) / statistics.median(bare_s), 2),
                  "ratio_vs_bare_http": round(statistics.median(slipway_s) / statistics.median(http_s), 2),
                  "push_only_median_ms": {k: round(statistics.median(v) * 1000, 1)
                                          for k, v in pushed.items() if v}}
        if py_s:
            result["slipway_python_hooks"] = summary(py_s)
            result["ratio_python_hooks_vs_bare_http"] = round(statistics.median(py_s)
                                                              / statistics.median(http_s), 2)
        print(json.dumps(result, indent=1))
    finally:
        cleanup(sw, cluster_env)
        subprocess.run(["scancel", "-u", "sw-alice"], env=env)


if __name__ == "__main__":
    main()
