"""Policy against the live cluster, through a real Slipway (issue 13): quotas are Slurm's
association limits and a job over one waits with the reason in words; an over-request is cut
down and the push says so; a job over its memory fails with "out of memory at …"; an emergency
job preempts a normal one, which requeues and resumes from its files; teams take turns; once
the balance mirrored into Slurm is spent, Slurm starts nothing more while Slipway is stopped."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env)
    sw.cluster_env = slurm_cluster.env
    try:
        for name in ("alice", "bob", "carol"):
            sw.cli("user", "add", name, "--unix-user", f"sw-{name}")
            sw.cli("team", "add-funds", name, "100.00", "--note", "policy e2e")
            sw.cli("project", "create", name, "p", "--gpus", "a4000:1", "--image", "python")
            sw.tokens[name] = sw.cli("token", "create", name).stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def _slurm(sw, *argv: str) -> str:
    res = subprocess.run(list(argv), env=sw.env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, (argv, res.stdout, res.stderr)
    return res.stdout


def _account(sw, team: str) -> str:
    return sw.env["SLIPWAY_SLURM_ACCOUNT_PREFIX"] + team


def _clone(sw, tmp_path: Path, user: str) -> Path:
    work = tmp_path / f"{user}-p"
    if not work.exists():
        sw.git("clone", "-q", sw.remote(user, user, "p"), str(work))
    return work


def _push(sw, work: Path, branches: dict[str, str], *options: str) -> str:
    """Commit ``branches`` (name -> entrypoint) and push them in ONE push with ``options``."""
    for branch, entry in branches.items():
        sw.git("checkout", "-q", "-B", branch, cwd=work)
        write_project(work, entry)
        sw.git("add", "-A", cwd=work)
        sw.git("commit", "-qm", branch, "--allow-empty", cwd=work)
    args = ["push", "-q", "origin", *branches]
    for o in options:
        args[1:1] = ["-o", o]
    out = sw.git(*args, cwd=work, check=False)
    return out.stderr


def _wait(what, fn, timeout=120, every=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def _cancel(sw, *job_ids: int) -> None:
    for j in job_ids:
        sw.cli("job", "cancel", str(j), check=False)


SLEEP = "#!/bin/bash\nsleep {s}\n"


def test_quota_is_slurms_limit_and_a_job_over_it_waits_with_the_reason_in_words(sw, tmp_path):
    sw.cli("quota", "set", "alice", "gpu:a4000", "2")
    limits = _slurm(sw, "sacctmgr", "-nP", "show", "assoc", f"account={_account(sw, 'alice')}",
                    "format=user,grptres")
    assert "|gres/gpu:a4000=2" in limits, limits           # Slurm holds it: also outside Slipway
    work = _clone(sw, tmp_path, "alice")
    out = _push(sw, work, {"q1": SLEEP.format(s=120)}, "gpus=a4000:8")
    assert "slipway: asked a4000 x8; nodes have at most 4 — running with 4" in out, out
    assert "slipway: asked a4000 x4; team alice's quota is 2 a4000 GPUs — running with 2" in out, out
    first = job_id_from_push(out)
    assert sw.job(first)["gpu_count"] == 2
    _wait("q1 running", lambda: sw.job(first)["state"] == "running", 90)
    out = _push(sw, work, {"q2": SLEEP.format(s=5)}, "gpus=a4000:1")
    second = job_id_from_push(out)
    try:
        job = _wait("the worded reason", lambda: (j := sw.job(second))["state"] == "pending"
                    and "uses 2 of its 2" in (j["reason"] or "") and j, 60)
        assert job["reason"] == "waiting: team alice uses 2 of its 2 a4000 GPUs", job
        code = _slurm(sw, "squeue", "-h", "-o", "%r", "-j", str(job["slurm_job_id"])).strip()
        assert code == "AssocGrpGRES", code
    finally:
        _cancel(sw, first, second)
        sw.cli("quota", "remove", "alice", "gpu:a4000")


def test_a_job_over_its_memory_fails_out_of_memory_with_the_limit_on_its_page(sw, tmp_path):
    conf = Path(sw.env["SLURM_CONF"]).read_text()
    if "TaskPlugin=task/cgroup" not in conf:
        pytest.skip("this host has no writable memory cgroup: Slurm's sampler kills instead "
                    "(FAILED, signal 9), see slurm_conf/templates/slurm.conf.tmpl")
    work = _clone(sw, tmp_path, "bob")
    hog = ("#!/bin/bash\npython3 -c \"import time; b = bytearray(700 * 1024 * 1024); "
           "b[::4096] = b'x' * len(b[::4096]); time.sleep(30)\"\n")
    out = _push(sw, work, {"oom": hog}, "gpus=none", "mem=300M")
    job_id = job_id_from_push(out)
    job = sw.wait_job(job_id, timeout=120)
    assert job["state"] == "failed", job
    assert job["reason"].startswith("out of memory at 0.3 GiB (the job's memory limit)"), job


def test_emergency_preempts_and_the_victim_resumes_from_its_files(sw, tmp_path):
    victim_entry = ("#!/bin/bash\nif [ -f checkpoint.txt ]; then echo resumed >> checkpoint.txt; "
                    "exit 0; fi\necho step-1 > checkpoint.txt\nsleep 300\n")
    work = _clone(sw, tmp_path, "carol")
    out = _push(sw, work, {"long": victim_entry}, "gpus=a6000:2")
    victim = job_id_from_push(out)
    _wait("victim running", lambda: sw.job(victim)["state"] == "running", 90)
    time.sleep(3)   # the victim's first attempt writes its checkpoint
    alice = _clone(sw, tmp_path, "alice")
    refused = _push(sw, alice, {"urgent0": SLEEP.format(s=2)}, "gpus=a6000:2", "emergency=yes")
    assert "emergency=yes needs the emergency right" in refused, refused
    sw.cli("emergency", "grant", "alice", "--until", "2099-12-31", "--note", "e2e deadline")
    out = _push(sw, alice, {"urgent": SLEEP.format(s=2)}, "gpus=a6000:2", "emergency=yes")
    urgent = job_id_from_push(out)
    try:
        v = _wait("the preemption", lambda: (j := sw.job(victim))["preempted_count"] >= 1 and j, 90)
        assert v["reason"].startswith(f"preempted by an emergency job (job {urgent})"), v
        assert sw.wait_job(urgent, timeout=120)["state"] == "succeeded"
        done = sw.wait_results(victim, timeout=180)
        assert done["state"] == "succeeded" and done["attempt"] >= 1, done
        assert sw.job(urgent)["qos"] == "emergency"
        sw.git("pull", "-q", "origin", "long", cwd=work)
        assert (work / "checkpoint.txt").read_text() == "step-1\nresumed\n"   # resumed from its files
        log = sw.cli("policy", "log").stdout
        assert "grant" in log and f"job {urgent}" in log
    finally:
        _cancel(sw, victim, urgent)
        sw.cli("emergency", "revoke", "alice", check=False)


def test_two_teams_take_turns_on_a_full_cluster(sw, tmp_path):
    carol = _clone(sw, tmp_path, "carol")
    out = _push(sw, carol, {"block1": SLEEP.format(s=600), "block2": SLEEP.format(s=600)},
                "gpus=a4000:4")
    blockers = [int(x) for x in re.findall(r"slipway: job (\d+) queued", out)]
    assert len(blockers) == 2, out
    for b in blockers:
        _wait("blocker running", lambda b=b: sw.job(b)["state"] == "running", 90)
    ids = {}
    for user in ("alice", "bob"):        # alice queues all of hers first: the worst case for turns
        work = _clone(sw, tmp_path, user)
        out = _push(sw, work, {f"t{i}": SLEEP.format(s=90) for i in range(6)}, "gpus=a4000:1")
        ids[user] = [int(x) for x in re.findall(r"slipway: job (\d+) queued", out)]
        assert len(ids[user]) == 6, out
    everyone = ids["alice"] + ids["bob"]
    try:
        # the reconciler gives each team's k-th pending job the same place (nice k x step)
        def niced():
            text = _slurm(sw, "squeue", "-h", "-t", "PD", "-o", "%j %y")
            nices = {int(n.split("-")[-1]): int(v) for n, v in (line.split() for line in text.splitlines())
                     if n.startswith("slipway-")}
            return all(j in nices for j in everyone) and nices
        nices = _wait("turn places", niced, 60)
        assert [nices[j] for j in ids["alice"]] == [nices[j] for j in ids["bob"]], nices
        for b in blockers:
            sw.cli("job", "cancel", str(b))
        # the order Slurm started them in, from one squeue snapshot (a scheduling pass starts
        # several at once, all in one snapshot): StartTime (whole seconds), then priority order
        # (nice, then job id). Not the page's started_at: a fast poll saw the runner's own
        # "started" calls of a pass arrive one by one
        def slurm_started():
            text = _slurm(sw, "squeue", "-h", "-t", "R", "-o", "%j %S")
            got = {int(n.split("-")[-1]): t for n, t in (line.split() for line in text.splitlines())
                   if n.startswith("slipway-") and int(n.split("-")[-1]) in everyone}
            return len(got) >= 6 and got
        starts = _wait("six started", slurm_started, 120)
        order = sorted(starts, key=lambda j: (starts[j], nices[j], j))[:6]
        team = ["alice" if j in ids["alice"] else "bob" for j in order]
        for k in range(1, 7):                       # every prefix within one of an even split
            assert abs(team[:k].count("alice") - team[:k].count("bob")) <= 1, team
    finally:
        _cancel(sw, *blockers, *everyone)


def test_slurm_stops_a_team_whose_mirrored_balance_is_spent_while_slipway_is_stopped(sw, tmp_path):
    from decimal import Decimal
    from datetime import datetime, timezone

    from portal import integrations as ig
    from portal.billing import ledger as billing
    from portal.db import Database

    sw.cli("user", "add", "dora", "--unix-user", "sw-bob")       # a team with little money
    sw.cli("team", "add-funds", "dora", "2.00", "--note", "little")
    account = _account(sw, "dora")

    def mirrored():
        m = re.search(r"billing=(\d+)", _slurm(sw, "sacctmgr", "-nP", "show", "assoc",
                                               f"account={account}", "user=", "format=grptresmins"))
        return m and int(m.group(1))
    # $2 at $0.50/h for an a4000 weighted 10 (and $1.00/h for an a6000 weighted 20): 2400
    # billing-minutes (the deposit asks the reconciler for an account sync at once)
    assert _wait("the mirrored budget", lambda: (mirrored() or 0) >= 2400, 30)

    def sbatch() -> int:
        return int(_slurm(sw, "sbatch", "--parsable", "--uid=sw-bob", f"--account={account}",
                          "--gres=gpu:a4000:1", "--time=600", "--output=/dev/null",
                          "--wrap=sleep 60").strip().split(";")[0])

    def state(job: int) -> str:
        return _slurm(sw, "squeue", "-h", "-o", "%T %r", "-j", str(job)).strip()
    paid = sbatch()          # outside Slipway, while there is money: it runs (no "safe" refusal)
    _wait("the paid job running", lambda: state(paid).startswith("RUNNING"), 60)
    subprocess.run(["scancel", str(paid)], env=sw.env, capture_output=True)

    db = Database(sw.env.get("SLIPWAY_DATABASE_URL") or f"sqlite:///{sw.data_dir / 'slipway.db'}")
    try:                     # the money is spent (a charge Slipway booked)
        billing.DbLedgerStore(db).append_if_absent(ig.Adjustment(
            team="dora", amount=Decimal("-2.00"), by="test", at=datetime.now(timezone.utc),
            reason="spent"))
    finally:
        db.dispose()
    _wait("the spent balance mirrored", lambda: (m := mirrored()) is not None and m < 2400, 120)
    sw.stop()
    spent = None
    try:
        spent = sbatch()
        _wait("Slurm's refusal", lambda: state(spent) == "PENDING AssocGrpBillingMinutes", 30)
    finally:
        if spent is not None:
            subprocess.run(["scancel", str(spent)], env=sw.env, capture_output=True)
        sw.start()


def test_slipway_submit_runs_a_script_as_the_user_and_the_admin_queue_shows_it(sw, tmp_path):
    """sbatch's flags and a script, through Slipway: a container job as alice, billed to her
    team, its files pushed to the new branch submit/N; `slipway queue`, hold and release."""
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/bash\n#SBATCH --time=5\necho \"as $(id -un) gpus=$CUDA_VISIBLE_DEVICES "
                      "cpus=$(nproc)\" > submitted.txt\nsleep 20\n")
    bad = sw.cli("submit", "--gres=gpu:a4000:1", "-u", "alice", "-A", "alice", "--array=5-1",
                 str(script), check=False)
    assert bad.returncode != 0 and "--array" in (bad.stderr + bad.stdout), bad
    unknown = sw.cli("submit", "--frobnicate", "-u", "alice", "-A", "alice", str(script), check=False)
    assert unknown.returncode != 0 and "--frobnicate" in unknown.stderr + unknown.stdout, unknown
    out = sw.cli("submit", "--gres=gpu:a4000:1", "-c", "2", "--mem=2G", "-u", "alice", "-A", "alice",
                 str(script))
    job_id = job_id_from_push(out.stdout)
    branch = re.search(r"branch (submit/\d+)", out.stdout).group(1)
    job = _wait("the submitted job running", lambda: (j := sw.job(job_id))["state"] == "running" and j, 90)
    assert (job["gpu_type"], job["gpu_count"], job["pusher"]) == ("a4000", 1, "alice")
    queue = sw.cli("queue", "--team", "alice").stdout
    assert str(job_id) in queue and "running" in queue and "alice" in queue, queue
    done = sw.wait_results(job_id, timeout=120)
    assert done["state"] == "succeeded" and done["branch_updated"], done
    work = tmp_path / "submitted"
    sw.git("clone", "-q", "-b", branch, sw.remote("alice", "alice", "submit"), str(work))
    text = (work / "submitted.txt").read_text()
    assert text.startswith("as sw-alice gpus=") and "cpus=2" in text, text
    assert float(done["cost"]) > 0
