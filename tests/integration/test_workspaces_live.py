"""Issue 12, live: workspaces (JupyterLab in the python image, a Slurm job of kind "workspace")
on the real local cluster, reached through the portal's gateway (``slipway serve``'s second
port).

* the idle policy (a team override of 40 s idle, reminded 20 s before, stopped automatically):
  an untouched workspace is reminded (its user's banner says so) and then stopped with the
  reason, while one whose kernel runs a long loop (busy, nobody watching, no request through
  the portal) is not; a stopped workspace's URL answers "not running";
* an outsider (another team's user, logged in) and an anonymous client get "not found" on the
  workspace's page, its gateway URL and its kernel WebSocket, exactly as for a workspace that
  does not exist, while its member runs ``6*7`` through the same WebSocket;
* the Jupyter server on the node refuses a direct request without the credential (403) and
  answers with it: the credential is what protects it, and it is never in a page or an argv.

One Slipway serves the module; its three workspaces are started together by one fixture
(JupyterLab takes seconds to start in a container), the idle test runs first.
"""
from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.support.data_live import api
from portal.workspaces import credential
from tests.support.harness import cleanup, start_slipway, write_project
from tests.support.workspace_live import (
    auth, cookie_header, execute, gateway_lab, handshake, job_row, kernels, node_lab,
    portal_login, raw_handshake, result_text, server_log_tail, show, start_kernel,
    start_workspace, token, wait_lab, wait_state, ws_url)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

USERS = ("alice", "bob", "carol")
PASSWORDS = {u: f"{u}-secret-pw" for u in USERS}
IDLE_S, REMIND_S = 40, 20
LOOP = "import time\nfor i in range(90):\n    time.sleep(1)\n"


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    # the local cluster's nodes are this machine: the gateway and the idle policy reach 127.0.0.1
    sw = start_slipway(slurm_cluster.env, SLIPWAY_NODE_ADDRESSES="*:127.0.0.1")
    try:
        for user in USERS:
            sw.cli("user", "add", user, "--unix-user", "sw-" + user, "--password", PASSWORDS[user])
            sw.cli("team", "add-funds", user, "100.00", "--note", "e2e")
            sw.cli("project", "create", user, "proj", "--gpus", "a4000:1", "--image", "python")
            sw.tokens[user] = sw.cli("token", "create", user).stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def _push_branches(sw, tmp: Path, user: str, branches: tuple[str, ...]) -> None:
    """Push ``branches`` (one commit) in one push that starts no job (``run=no``)."""
    work = tmp / user
    sw.git("clone", "-q", sw.remote(user, user, "proj"), str(work))
    sw.git("checkout", "-qB", branches[0], cwd=work)
    write_project(work)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", "start", cwd=work)
    for b in branches[1:]:
        sw.git("branch", b, cwd=work)
    out = sw.git("push", "-o", "run=no", "origin", *branches, cwd=work).stderr
    assert "no job started (run=no)" in out and "queued (" not in out, out


@pytest.fixture(scope="module")
def ws(sw, tmp_path_factory):
    """alice's workspace "open" (2 cores, no GPU) and carol's "idle" and "busy" (1 core each),
    started together."""
    tmp = tmp_path_factory.mktemp("ws-live")
    _push_branches(sw, tmp, "alice", ("open",))
    _push_branches(sw, tmp, "carol", ("idle", "busy"))
    out = {"open": start_workspace(sw, "alice", "alice", "proj", "open", cpus="2"),
           "idle": start_workspace(sw, "carol", "carol", "proj", "idle", cpus="1"),
           "busy": start_workspace(sw, "carol", "carol", "proj", "busy", cpus="1")}
    for w in out.values():
        assert w["state"] in ("queued", "pending", "running"), w
        assert w["gpu_type"] == "cpu" and w["bills_while_open"], w
    assert out["open"]["gpu_count"] == 2, out["open"]
    return {name: w["id"] for name, w in out.items()}


def _sessions(sw) -> dict[str, requests.Session]:
    return {u: portal_login(sw, u, PASSWORDS[u]) for u in USERS}


@pytest.fixture(scope="module")
def sessions(sw):
    return _sessions(sw)


# --------------------------------------------------------------------------- idle policy (d)

def test_idle_workspace_is_reminded_then_stopped_and_a_busy_one_is_not(sw, ws, sessions):
    idle_id, busy_id = ws["idle"], ws["busy"]
    carol = sessions["carol"]
    wait_state(sw, "carol", idle_id)
    wait_state(sw, "carol", busy_id)

    # the busy one: a kernel started straight on the node (with the credential: no request
    # through the portal, so nothing but the kernel keeps it alive) runs a 90 s loop
    lab_b = node_lab(sw, busy_id)
    wait_lab(lab_b, headers=auth(sw, busy_id))
    kid = start_kernel(lab_b, headers=auth(sw, busy_id))
    started = execute(ws_url(lab_b + f"api/kernels/{kid}/channels"), LOOP,
                      headers=auth(sw, busy_id), until="busy")
    assert started[-1]["content"]["execution_state"] == "busy", started
    # the idle one: one look through the gateway as its user (activity: its idle clock starts now)
    wait_lab(gateway_lab(sw, idle_id), cookies=carol.cookies)
    touched = time.monotonic()
    time.sleep(1.5)   # the gateway records activity at most once a second, in the background
    assert job_row(sw, idle_id)["last_activity_at"] is not None

    sw.cli("workspace", "policy", "--team", "carol", "--idle", f"{IDLE_S}s",
           "--remind", f"{REMIND_S}s", "--auto-stop")
    t0 = touched
    reminded_after = stopped_after = None
    banner = page = None
    busy_seen = []
    deadline = t0 + IDLE_S + 40
    while time.monotonic() < deadline:
        a, b = job_row(sw, idle_id), job_row(sw, busy_id)
        busy_seen.append((round(time.monotonic() - t0, 1), b["state"], b["cancel_requested_at"],
                          b["cancel_reason"]))
        if a["reminded_at"] is not None and reminded_after is None:
            reminded_after = time.monotonic() - t0
            # the banner of every portal page of its user, and the workspace's own page
            banner = carol.get(sw.url + "/", timeout=30).text
            page = carol.get(f"{sw.url}/workspaces/{idle_id}", timeout=30).text
        if a["cancel_requested_at"] is not None or a["state"] != "running":
            stopped_after = time.monotonic() - t0
            break
        time.sleep(0.5)
    assert reminded_after is not None, (job_row(sw, idle_id), server_log_tail(sw))
    assert stopped_after is not None, (job_row(sw, idle_id), server_log_tail(sw))
    # reminded once idle for idle - remind (20 s), stopped once idle for 40 s (1 s ticks; the
    # last recorded activity may be up to a second before the last request)
    assert IDLE_S - REMIND_S - 3 <= reminded_after <= IDLE_S - REMIND_S + 8, (reminded_after, stopped_after)
    assert IDLE_S - 3 <= stopped_after <= IDLE_S + 12, (reminded_after, stopped_after)
    assert 'id="workspace-reminders"' in banner and f"#{idle_id}" in banner, banner[-3000:]
    assert 'id="idle-reminder"' in page, page[-3000:]

    # stopped like a user's stop, with the reason on its page
    done = wait_state(sw, "carol", idle_id, ("cancelled", "succeeded", "failed"), timeout=90)
    assert done["state"] == "cancelled", done
    assert done["stop_reason"] == f"stopped after {IDLE_S} seconds idle (the workspace policy)", done
    page = carol.get(f"{sw.url}/workspaces/{idle_id}", timeout=30).text
    assert f"stopped after {IDLE_S} seconds idle" in page and 'id="stop-reason"' in page
    # its URL now: "not running" for its member
    r = carol.get(gateway_lab(sw, idle_id) + "api/status", timeout=30)
    assert r.status_code == 404 and f"workspace {idle_id} is not running" in r.text, (r.status_code, r.text)

    # the busy one lives on: still running and never stopped, its reminder (if it had one before
    # the loop started) cleared, its kernel still computing -- for 8 s more after the idle one went
    stop_at = time.monotonic() + 8
    while time.monotonic() < stop_at:
        b = job_row(sw, busy_id)
        busy_seen.append((round(time.monotonic() - t0, 1), b["state"], b["cancel_requested_at"],
                          b["cancel_reason"]))
        time.sleep(0.5)
    assert all(state == "running" and req is None for _t, state, req, _r in busy_seen), busy_seen
    b = job_row(sw, busy_id)
    assert b["reminded_at"] is None, b
    assert [k["execution_state"] for k in kernels(lab_b, headers=auth(sw, busy_id))] == ["busy"]
    assert show(sw, "carol", busy_id)["stop_reason"] is None
    r = api(sw, "carol", "POST", f"workspaces/{busy_id}/stop")
    assert r.status == 200, r.body


# ------------------------------------------------------------- outsiders and anonymous (b)

def test_outsider_and_anonymous_get_not_found_on_pages_gateway_and_websocket(sw, ws, sessions):
    wid = ws["open"]
    alice, bob = sessions["alice"], sessions["bob"]
    wait_state(sw, "alice", wid)
    lab = gateway_lab(sw, wid)
    wait_lab(lab, cookies=alice.cookies)

    # the member: a kernel through the gateway, 6*7 over its WebSocket through the gateway
    kid = start_kernel(lab, cookies=alice.cookies)
    channels = ws_url(lab + f"api/kernels/{kid}/channels")
    assert result_text(execute(channels, "6*7", headers=cookie_header(alice))) == "42"
    assert alice.get(f"{sw.url}/workspaces/{wid}", timeout=30).status_code == 200
    assert alice.get(lab, timeout=30).status_code == 200

    missing = 987654
    tampered = requests.Session()
    tampered.cookies.set("slipway_session", alice.cookies.get("slipway_session")[:-4] + "AAAA")
    for who, s in (("bob", bob), ("anonymous", requests.Session()), ("tampered", tampered)):
        for url in (lab, lab + "api/kernels", lab + f"api/kernels/{kid}", lab + "tree/README"):
            r = s.get(url, timeout=30, allow_redirects=False)
            assert (r.status_code, r.text) == (404, "not found\n"), (who, url, r.status_code, r.text)
        r = s.post(lab + "api/kernels", json={"name": "python3"}, timeout=30)
        assert (r.status_code, r.text) == (404, "not found\n"), (who, r.status_code, r.text)
        # the WebSocket: refused before any upgrade, with the same answer
        cookie = None if s.cookies.get("slipway_session") is None else \
            f"slipway_session={s.cookies.get('slipway_session')}"
        r = raw_handshake(channels, cookie)
        assert (r.status_code, r.text) == (404, "not found\n"), (who, r.status_code, r.text)
        assert handshake(channels, {"Cookie": cookie} if cookie else {}) == 404, who
    # exactly what a workspace that does not exist answers (nothing to learn by trying ids)
    r = alice.get(gateway_lab(sw, missing) + "api/kernels", timeout=30)
    assert (r.status_code, r.text) == (404, "not found\n")
    # nothing of it on the outsider's side: the portal's page and the API
    assert bob.get(f"{sw.url}/workspaces/{wid}", timeout=30).status_code == 404
    assert api(sw, "bob", "GET", f"workspaces/{wid}").status == 404
    assert api(sw, "bob", "POST", f"workspaces/{wid}/stop").status == 404
    # anonymous: the portal's page sends to the login, as it does for any id
    anon = requests.get(f"{sw.url}/workspaces/{wid}", timeout=30, allow_redirects=False)
    anon_missing = requests.get(f"{sw.url}/workspaces/{missing}", timeout=30, allow_redirects=False)
    assert anon.status_code == anon_missing.status_code and anon.status_code in (302, 303, 401, 404), anon
    if anon.is_redirect:
        assert "/login" in anon.headers["Location"], anon.headers
    # the kernel never saw the outsiders: the member's kernel is the only one, still idle
    assert [k["id"] for k in kernels(lab, cookies=alice.cookies)] == [kid]


def test_the_credential_is_never_shown(sw, ws, sessions):
    """Not in any process's argv on the node, not in the workspace's portal page or JSON, and
    not in what JupyterLab's pages give the browser through the gateway (a member who had it
    could reach the node's port directly, around the portal and its idle clock, even after
    leaving the team)."""
    wid = ws["open"]
    alice = sessions["alice"]
    if job_row(sw, wid)["state"] != "running":   # run alone (or after a failure): one of carol's
        wid, alice = ws["busy"], sessions["carol"]
        if job_row(sw, wid)["state"] != "running":
            pytest.skip("no running workspace left in this module")
    wait_lab(gateway_lab(sw, wid), cookies=alice.cookies)
    secret = token(sw, wid)
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    assert "jupyter" in ps and f"/workspaces/{wid}/lab/" in ps, ps[-2000:]
    assert secret not in ps
    assert secret not in alice.get(f"{sw.url}/workspaces/{wid}", timeout=30).text
    assert secret not in api(sw, "alice" if wid == ws["open"] else "carol", "GET",
                             f"workspaces/{wid}").body.decode()
    for path in ("", "lab", "lab/tree/README", "lab/api/settings", "api/me"):
        r = alice.get(gateway_lab(sw, wid) + path, timeout=30)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        assert secret not in r.text, (path, _around(r.text, secret))


def _around(text: str, needle: str, width: int = 80) -> str:
    i = text.find(needle)
    return text[max(0, i - width):i + len(needle) + width]


# --------------------------------------------------------------- the node's port directly (c)

def test_node_port_refuses_without_the_credential_and_answers_with_it(sw, ws, sessions):
    wid = ws["open"]
    alice = sessions["alice"]
    wait_state(sw, "alice", wid)
    direct = node_lab(sw, wid)
    wait_lab(direct, headers=auth(sw, wid))
    secret = token(sw, wid)
    for headers, params in (({}, {}), ({"Authorization": "token " + "0" * 64}, {}),
                            ({}, {"token": "0" * 64}),
                            ({"Cookie": f"slipway_session={alice.cookies.get('slipway_session')}"}, {}),
                            ({"Authorization": "token " + credential.token("another portal's key", wid)}, {})):
        r = requests.get(direct + "api/kernels", headers=headers, params=params, timeout=30)
        assert r.status_code == 403, (headers, params, r.status_code, r.text[:300])
    assert handshake(ws_url(direct + f"api/kernels/{uuid.uuid4()}/channels")) == 403
    # with the credential: 200, and the same server the gateway reaches
    r = requests.get(direct + "api/kernels", headers={"Authorization": f"token {secret}"}, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    through = alice.get(gateway_lab(sw, wid) + "api/kernels", timeout=30)
    assert through.status_code == 200, (through.status_code, through.text)
    assert [k["id"] for k in through.json()] == [k["id"] for k in r.json()], (through.text, r.text)
    # stop it (the API): the gateway then says it is not running
    r = api(sw, "alice", "POST", f"workspaces/{wid}/stop")
    assert r.status == 200, r.body
    done = wait_state(sw, "alice", wid, ("cancelled", "succeeded", "failed"), timeout=90)
    assert done["state"] == "cancelled" and done["stop_reason"] == "stopped by alice", done
    r = alice.get(gateway_lab(sw, wid), timeout=30)
    assert r.status_code == 404 and "is not running" in r.text, (r.status_code, r.text)
