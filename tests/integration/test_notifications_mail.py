"""Notifications through a real Slipway, a real SMTP server and the live cluster (issue 15
part 6): a job's end sends its owner exactly one email, with the cost `slipway job show` gives;
with ``job_ended`` turned off, the next job's end sends none (and says why on the record)."""
from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import pytest

from tests.support.harness import cleanup, job_id_from_push, start_slipway, write_project
from tests.support.smtp import smtp_server

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ENTRY = "#!/bin/bash\nset -e\nsleep 2\necho done > out.txt\n"
COST = re.compile(r"^Cost:\s+\$([\d,.]+)(?: \(exactly ([\d.]+) USD\))?$", re.M)


def _wait(what, fn, timeout=60.0, every=0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def _push(sw, work, branch: str) -> int:
    sw.git("checkout", "-q", "-B", branch, cwd=work)
    write_project(work, ENTRY)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", branch, "--allow-empty", cwd=work)
    return job_id_from_push(sw.git("push", "-q", "origin", branch, cwd=work).stderr)


def _mails_about(inbox, job_id: int) -> list:
    return [m for m in inbox.messages if f" job {job_id} " in (m["Subject"] or "")]


def test_a_job_end_mails_its_owner_once_with_its_cost_and_off_means_none(slurm_cluster,
                                                                          tmp_path):
    with smtp_server() as (port, inbox):
        sw = start_slipway(slurm_cluster.env, SLIPWAY_SMTP_HOST="127.0.0.1",
                           SLIPWAY_SMTP_PORT=str(port), SLIPWAY_MAIL_FROM="slipway@test")
        try:
            sw.cli("user", "add", "alice", "--unix-user", "sw-alice")
            sw.cli("team", "add-funds", "alice", "50.00", "--note", "notify e2e")
            sw.cli("project", "create", "alice", "p", "--gpus", "a4000:1", "--image", "python")
            sw.tokens["alice"] = sw.cli("token", "create", "alice").stdout.strip()
            out = sw.cli("notifications", "email", "alice@example.org", as_user="alice").stdout
            assert "mail goes to alice@example.org" in out, out
            work = tmp_path / "p"
            sw.git("clone", "-q", sw.remote("alice", "alice", "p"), str(work))

            first = _push(sw, work, "exp-1")
            job = sw.wait_results(first, timeout=90)
            assert job["state"] == "succeeded", job
            [mail] = _wait("the job's mail", lambda: _mails_about(inbox, first))
            assert mail["Subject"] == f"Slipway: job {first} succeeded (alice/p exp-1)"
            assert mail["X-Envelope-To"] == "alice@example.org"
            assert mail["From"] == "slipway@test"
            body = mail.get_payload(decode=True).decode().replace("\r\n", "\n")
            shown, exact = COST.search(body).groups()
            job = sw.job(first)          # the cost as Slipway shows it, after the end
            assert Decimal(exact or shown.replace(",", "")) == Decimal(job["cost"]) > 0, body
            assert f"Job page: {sw.url}/jobs/{first}" in body
            assert f"at {job['results_sha'][:12]}" in body, body

            sw.cli("notifications", "set", "job_ended", "off", as_user="alice")
            second = _push(sw, work, "exp-2")
            assert sw.wait_job(second, timeout=90)["state"] == "succeeded"

            def decided():
                d = json.loads(sw.cli("notifications", "show", "--recent", "10", "--json",
                                      as_user="alice").stdout)
                return [n for n in d["recent"] if f"job {second} " in n["title"]]
            [row] = _wait("the second job's decision", decided, timeout=90)
            assert (row["status"], row["detail"]) == (
                "skipped", "turned off in the notification settings"), row
            time.sleep(2)                # a few more ticks: still nothing about either job
            assert _mails_about(inbox, second) == []
            assert len(_mails_about(inbox, first)) == 1
        finally:
            cleanup(sw, slurm_cluster.env)
