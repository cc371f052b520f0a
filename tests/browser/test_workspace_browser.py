"""Issue 12 in a real browser against the real thing: `slipway serve` (portal + workspace gateway)
on the live Slurm cluster, JupyterLab in the python image, headless Chromium.

A user opens a workspace from the project page's form, waits on its page until it runs, opens
JupyterLab through the portal's gateway (the portal's session cookie is the only credential the
browser has), runs a notebook cell (``6*7`` → 42) and saves it, opens a terminal and runs
``echo $CUDA_VISIBLE_DEVICES > cvd.txt``, then stops the workspace from its page: the notebook
with its output and the file are committed back to the branch. Another team's user, logged in,
gets "not found" at the same JupyterLab URL.
"""
from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in, shot
from tests.support.harness import cleanup, start_slipway, write_project
from tests.support.workspace_live import NOTEBOOK, gateway_lab, server_log_tail

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PASSWORDS = {"erin": "erin-secret-pw", "frank": "frank-secret-pw"}


@pytest.fixture(scope="module")
def sw(slurm_cluster):
    sw = start_slipway(slurm_cluster.env, SLIPWAY_NODE_ADDRESSES="*:127.0.0.1")
    try:
        for user, unix in (("erin", "sw-alice"), ("frank", "sw-bob")):
            sw.cli("user", "add", user, "--unix-user", unix, "--password", PASSWORDS[user])
            sw.cli("team", "add-funds", user, "20.00")
            sw.cli("project", "create", user, "proj", "--gpus", "a4000:1", "--image", "python")
            sw.tokens[user] = sw.cli("token", "create", user).stdout.strip()
        yield sw
    finally:
        cleanup(sw, slurm_cluster.env)


def _wait_json(page, url: str, ok, timeout: float = 60, what: str = ""):
    """GET ``url`` with the page's cookies until ``ok(status, body)``; returns the last body."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        r = page.request.get(url, fail_on_status_code=False)
        body = r.text()
        last = (r.status, body[:500])
        if ok(r.status, body):
            return body
        assert time.monotonic() < deadline, f"{what or url}: {last}"
        time.sleep(0.5)


def _saved_outputs(body: str) -> str:
    """The first cell's outputs of a notebook as the contents API gives it (text)."""
    return json.dumps(json.loads(body)["content"]["cells"][0].get("outputs", []))


def _text(value) -> str:
    """nbformat's multiline strings: a string or a list of lines."""
    return "".join(value) if isinstance(value, list) else value


def _new_terminal(page) -> None:
    """File > New > Terminal in JupyterLab's menu bar."""
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(r"^File$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^New$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Terminal$")).first.click()


def _kernel_ready(page, timeout: float = 60) -> None:
    """Until the notebook's kernel is idle; JupyterLab may first ask which kernel to start
    ("Select Kernel"): its preferred one, Python 3."""
    deadline = time.monotonic() + timeout
    dialog = page.locator(".jp-Dialog")
    status = page.get_by_role("button", name=re.compile(r"Python 3 \(ipykernel\) \| Idle"))
    while time.monotonic() < deadline:
        if dialog.count() and dialog.first.is_visible():
            dialog.first.locator("button.jp-mod-accept").click()
        elif status.count():
            return
        time.sleep(0.3)
    raise AssertionError("the notebook's kernel did not become idle")


def test_open_workspace_run_a_cell_and_a_terminal_then_stop_commits_back(sw, new_page, browser,
                                                                          tmp_path):
    # the branch: a notebook with one cell, pushed without starting a job
    work = tmp_path / "proj"
    sw.git("clone", "-q", sw.remote("erin", "erin", "proj"), str(work))
    sw.git("checkout", "-qb", "nb", cwd=work)
    write_project(work, extra={"demo.ipynb": json.dumps(NOTEBOOK, indent=1) + "\n"})
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", "a notebook", cwd=work)
    out = sw.git("push", "-o", "run=no", "origin", "nb", cwd=work)
    assert "no job started" in out.stderr, out.stderr

    page = new_page(sw.url)
    page.set_default_timeout(30_000)
    log_in(page, sw.url, "erin", PASSWORDS["erin"])

    # "Open workspace" on the project page
    page.goto(f"{sw.url}/projects/erin/proj")
    form = page.locator("#open-workspace")
    form.locator("input[name=branch]").fill("nb")
    form.locator("select[name=compute]").select_option("a4000")
    form.locator("input[name=gpu_count]").fill("1")
    form.locator("#open-workspace-button").click()
    expect(page).to_have_url(re.compile(r"/workspaces/\d+$"))
    wid = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#bills-notice")).to_contain_text("bills while it is open")
    expect(page.locator("#workspace-state")).to_have_text("running", timeout=120_000)
    shot(page, "workspace-running")
    lab = page.locator("#open-lab").get_attribute("href")
    assert lab == gateway_lab(sw, wid), lab

    # JupyterLab takes a few seconds to start in its container
    _wait_json(page, lab + "api/status", lambda st, _b: st == 200, 120,
               f"JupyterLab of workspace {wid} through the gateway\n{server_log_tail(sw)}")

    # another team's user at the same URL: "not found"
    other = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        p2 = other.new_page()
        log_in(p2, sw.url, "frank", PASSWORDS["frank"])
        resp = p2.goto(lab)
        assert resp.status == 404 and p2.locator("body").inner_text().strip() == "not found"
        resp = p2.goto(f"{sw.url}/workspaces/{wid}")
        assert resp.status == 404
    finally:
        other.close()

    # every URL the browser asks for through the gateway (WebSockets included): none may carry
    # the credential (access logs keep URLs)
    urls: list[str] = []
    page.on("request", lambda req: urls.append(req.url))
    page.on("websocket", lambda ws: urls.append(ws.url))

    # the notebook: run its cell, see 42, save
    page.goto(lab + "lab/tree/demo.ipynb")   # JupyterLab is at BASE_URL/lab
    cell = page.locator(".jp-Notebook .jp-CodeCell").first
    expect(cell).to_be_visible(timeout=90_000)
    _kernel_ready(page)
    cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    expect(cell.locator(".jp-OutputArea-output")).to_contain_text("42", timeout=90_000)
    shot(page, "workspace-notebook-42")
    page.keyboard.press("Control+s")
    _wait_json(page, lab + "api/contents/demo.ipynb?content=1",
               lambda st, b: st == 200 and '"42"' in _saved_outputs(b), 30, "the saved notebook")

    # a terminal: echo $CUDA_VISIBLE_DEVICES into a file (xterm draws on a canvas: read the file)
    _new_terminal(page)
    term = page.locator(".jp-Terminal").last
    expect(term).to_be_visible(timeout=30_000)
    cvd = None
    for _attempt in range(3):
        term.click()
        page.keyboard.type("echo $CUDA_VISIBLE_DEVICES > cvd.txt")
        page.keyboard.press("Enter")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = page.request.get(lab + "api/contents/cvd.txt?content=1&type=file&format=text",
                                 fail_on_status_code=False)
            if r.status == 200 and r.json().get("content"):
                cvd = r.json()["content"]
                break
            time.sleep(0.5)
        if cvd is not None:
            break
    shot(page, "workspace-terminal")
    assert cvd is not None and re.fullmatch(r"\d+\n", cvd), cvd   # one GPU: its index

    kernel_sockets = [u for u in urls if u.startswith("ws://") and "/api/kernels/" in u]
    assert kernel_sockets and all(u.startswith(lab.replace("http://", "ws://")) for u in kernel_sockets), urls
    assert [u for u in urls if "token=" in u] == [], [u for u in urls if "token=" in u]

    # stop from the workspace's page: the branch gets the notebook (with its output) and the file
    page.goto(f"{sw.url}/workspaces/{wid}")
    page.click("#stop")
    expect(page.locator("#workspace-state")).to_have_text("cancelled", timeout=90_000)
    expect(page.locator("#stop-reason")).to_have_text("stopped by erin")
    shot(page, "workspace-stopped")
    job = sw.wait_results(wid, timeout=60)
    assert job["state"] == "cancelled" and job["branch_updated"], job
    sw.git("pull", "-q", "origin", "nb", cwd=work)
    assert (work / "cvd.txt").read_text() == cvd
    saved = json.loads((work / "demo.ipynb").read_text())
    outputs = saved["cells"][0]["outputs"]
    assert any(o.get("output_type") == "execute_result" and _text(o["data"]["text/plain"]) == "42"
               for o in outputs), outputs
    # and the JupyterLab URL is closed now
    r = page.request.get(lab + "api/status", fail_on_status_code=False)
    assert r.status == 404 and "is not running" in r.text(), (r.status, r.text())
