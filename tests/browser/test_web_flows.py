"""Browser flows with Playwright + Debian's chromium against waitress and a FakeBackend:
log in, create a project (remote URL + copy button), watch a job's page and cancel it, add funds
as an administrator and be refused as a user, create a token. Screenshots of every main page go
to test-output/screenshots/."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from portal.jobs import runner_spec
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import make_world

from .conftest import log_in, shot


@pytest.fixture
def site(tmp_path, portal_server):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = make_world(svc)
    base = portal_server(svc)
    yield svc, base, ids, backend
    svc.db.dispose()


def test_login_dashboard_create_project_and_copy_remote(site, new_page):
    svc, base, ids, _ = site
    page = new_page(base)
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/login$"))
    shot(page, "login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    expect(page.locator(".flash.error")).to_contain_text("wrong password")
    log_in(page, base, "alice")
    expect(page.locator("h1")).to_contain_text("Dashboard")
    expect(page.locator(".card").first).to_contain_text("$24.25")
    shot(page, "dashboard")

    page.click("a.card:has-text('nlp')")
    expect(page).to_have_url(re.compile(r"/teams/nlp$"))
    shot(page, "team")
    form = page.locator("#new-project")
    form.locator("input[name=name]").fill("web-made")
    form.locator("select[name=gpu_type]").select_option("a6000")
    form.locator("input[name=gpu_count]").fill("2")
    form.locator("input[name=time]").fill("2h")
    form.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/projects/nlp/web-made$"))
    expect(page.locator(".flash.ok")).to_contain_text("created")
    remote = svc.config.repo_url("nlp", "web-made")
    expect(page.locator("#remote-url")).to_have_text(remote)
    expect(page.locator("#push-commands")).to_contain_text(f"git remote add slipway {remote}")
    expect(page.locator("#push-commands")).to_contain_text("git push slipway exp-1")
    page.click("#copy-remote")
    expect(page.locator("#copy-remote")).to_have_text(re.compile("Copied|Select and copy"))
    try:
        assert page.evaluate("navigator.clipboard.readText()") == remote
    except Exception:  # noqa: BLE001 — clipboard not readable in this chromium build
        pass
    expect(page.locator("h1")).to_contain_text("a6000 × 2")
    shot(page, "project")
    assert (svc.config.repos_root / "nlp" / "web-made.git").is_dir()

    # settings validation shows the problem on the page
    settings = page.locator("#settings")
    settings.locator("input[name=gpu_count]").fill("7")
    settings.locator("button[type=submit]").click()
    expect(page.locator(".problems")).to_contain_text("a6000")


def test_job_page_live_log_and_cancel(site, new_page):
    svc, base, ids, backend = site
    page = new_page(base)
    log_in(page, base, "carol")
    jid = ids["running"]
    page.goto(f"{base}/jobs/{jid}")
    expect(page.locator("#job-state")).to_have_text("running")
    expect(page.locator("#log")).to_contain_text("epoch 2 loss 0.71")
    with runner_spec.log_path(svc, jid).open("a") as fh:
        fh.write("epoch 3 loss 0.42\n")
    expect(page.locator("#log")).to_contain_text("epoch 3 loss 0.42", timeout=8000)
    expect(page.locator("#proxy-link")).to_be_visible()
    shot(page, "job")
    page.click("#cancel")
    expect(page.locator(".flash.ok")).to_contain_text("stopping")
    assert backend.cancels == [(1001, "TERM", True)]
    # a job she did not push: a member of the team may cancel it too
    page.goto(f"{base}/jobs/{ids['pending']}")
    expect(page.locator("#job-state")).to_have_text("pending")
    expect(page.locator("#cancel")).to_have_count(1)
    # a plain user creates no projects: no form on the team page
    page.goto(f"{base}/teams/nlp")
    expect(page.locator("#new-project")).to_have_count(0)
    expect(page.locator("#new-project-note")).to_be_visible()
    # the jobs list
    page.goto(f"{base}/jobs?team=nlp")
    expect(page.locator("table.jobs")).to_contain_text("exp-1")
    shot(page, "jobs")


def test_admin_requests_funds_cluster_admin_approves_user_refused(site, new_page):
    svc, base, ids, _ = site
    admin = new_page(base)  # a team administrator: requests funds, cannot add them
    log_in(admin, base, "bob")
    admin.goto(base + "/teams/nlp/billing")
    expect(admin.locator("#balance")).to_have_text("$24.25")
    expect(admin.locator("#add-funds")).to_have_count(0)
    admin.fill("#request-funds input[name=amount]", "100")
    admin.fill("#request-funds input[name=note]", "Q3 grant")
    admin.click("#request-funds button[type=submit]")
    expect(admin.locator(".flash.ok")).to_contain_text("Requested $100.00")
    expect(admin.locator("#fund-requests")).to_contain_text("pending")
    expect(admin.locator("#balance")).to_have_text("$24.25")

    cluster_admin = new_page(base)
    log_in(cluster_admin, base, "dave")
    cluster_admin.goto(base + "/admin/fund-requests")
    expect(cluster_admin.locator("#fund-requests")).to_contain_text("Q3 grant")
    cluster_admin.click("#fund-requests button[name=approve]")
    expect(cluster_admin.locator(".flash.ok")).to_contain_text("approved")

    admin.goto(base + "/teams/nlp/billing")
    expect(admin.locator("#balance")).to_have_text("$124.25")
    expect(admin.locator("#fund-requests")).to_contain_text("approved")
    expect(admin.locator("#chart-spending canvas")).to_be_visible()
    expect(admin.locator("table").last).to_contain_text("Q3 grant")
    shot(admin, "billing")

    user = new_page(base)
    log_in(user, base, "carol")
    user.goto(base + "/teams/nlp/billing")
    expect(user.locator("#add-funds")).to_have_count(0)
    expect(user.locator("#request-funds")).to_have_count(0)
    # hand-made POSTs with a valid CSRF token are still refused
    for path in ("/teams/nlp/billing/funds", "/teams/nlp/billing/fund-requests"):
        status = user.evaluate("""async (path) => {
            const token = document.querySelector('meta[name=csrf-token]').content;
            const body = new URLSearchParams({amount: '50', csrf_token: token});
            const r = await fetch(path, {method: 'POST', body});
            return r.status; }""", path)
        assert status == 403, path
    user.goto(base + "/teams/nlp/billing")
    expect(user.locator("#balance")).to_have_text("$124.25")


def test_tokens_page(site, new_page):
    _svc, base, _ids, _ = site
    page = new_page(base)
    log_in(page, base, "erin")
    page.goto(base + "/tokens")
    page.fill("#create-token input[name=name]", "laptop")
    page.click("#create-token button[type=submit]")
    token = page.locator("#new-token").inner_text()
    assert token.startswith("swp_")
    shot(page, "tokens")
    page.goto(base + "/tokens")
    expect(page.locator("body")).not_to_contain_text(token)
    page.click("button:has-text('Revoke')")
    expect(page.locator(".flash.ok")).to_contain_text("revoked")


def test_outsider_sees_404(site, new_page):
    _svc, base, ids, _ = site
    page = new_page(base)
    log_in(page, base, "mallory")
    for path in ["/teams/nlp", "/projects/nlp/proj", f"/jobs/{ids['running']}"]:
        r = page.goto(base + path)
        assert r.status == 404, path
    expect(page.locator("h1")).to_contain_text("404")


_PROBE = b"""<!doctype html><html><body><pre id="out">probing</pre><script>
const out = ["origin=" + self.origin];
try { out.push("cookie=" + document.cookie); } catch (e) { out.push("cookie-refused"); }
try { out.push("storage=" + (window.localStorage ? "open" : "none")); } catch (e) { out.push("storage-refused"); }
fetch("/", {credentials: "include"}).then(r => r.text())
  .then(t => out.push(t.includes("csrf-token") ? "portal-read" : "portal-not-read"))
  .catch(e => out.push("portal-fetch-refused"))
  .finally(() => { document.getElementById("out").textContent = out.join("\\n"); });
</script></body></html>"""


def test_job_page_through_the_proxy_cannot_act_as_the_viewer(site, new_page):
    """A job's page opened by a member, in a real browser: it runs sandboxed in an opaque
    origin, so it reads neither the portal's cookies nor a portal page (the CSRF token)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from portal.db import Job

    class Probe(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(_PROBE)))
            self.send_header("Set-Cookie", "planted=1; Path=/")
            self.end_headers()
            self.wfile.write(_PROBE)

        def log_message(self, *a):
            pass

    svc, base, ids, _ = site
    server = ThreadingHTTPServer(("127.0.0.1", 0), Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with svc.db.transaction() as s:
            s.get(Job, ids["running"]).port = server.server_address[1]
        svc.node_address = {"a4k-1": "127.0.0.1"}.get
        page = new_page(base)
        log_in(page, base, "carol")
        page.goto(f"{base}/jobs/{ids['running']}/proxy/")
        out = page.locator("#out")
        expect(out).to_contain_text("portal-", timeout=8000)
        text = out.inner_text()
        assert "origin=null" in text, text
        assert "cookie-refused" in text and "portal-read" not in text, text
        names = {c["name"] for c in page.context.cookies()}
        assert "planted" not in names and "slipway_session" in names
        page.goto(f"{base}/")   # the portal itself still works for her
        expect(page.locator("h1")).to_contain_text("Dashboard")
    finally:
        server.shutdown()
