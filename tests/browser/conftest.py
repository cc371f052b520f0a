"""Playwright (sync API) against the portal served by waitress in a thread.

Reusable fixtures (the real-cluster browser test uses them with its own services):

* ``portal_server(services, **create_app_kw) -> base_url`` — serve ``create_app(…)``
  with waitress as ``slipway serve`` does (``waitress_options``: the body gate included) on a
  free 127.0.0.1 port in a daemon thread; stopped at teardown;
* ``browser`` — Debian's /usr/bin/chromium, headless (session scope; Playwright's own browser
  downloads are not available here);
* ``new_page(base_url) -> Page`` — a fresh context (own cookies) per call, clipboard allowed;
* ``log_in(page, base_url, name, password=None)`` and ``shot(page, name)`` (screenshots go to
  ``test-output/screenshots/NAME.png``, gitignored).
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SLIPWAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


def _wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"portal did not start on {host}:{port}")


@pytest.fixture
def portal_server():
    """Factory: ``base_url = portal_server(svc)``; every server started is stopped at teardown."""
    from portal.app import create_app
    from portal.cli.serve import waitress_options

    servers = []

    def start(services, **create_app_kw) -> str:
        app = create_app(services, **create_app_kw)
        options = waitress_options(services, app)   # as `slipway serve` (the body gate too)
        make = options.pop("_server")
        server = make(app, host="127.0.0.1", port=0, threads=8, **options)
        port = int(server.effective_port)
        t = threading.Thread(target=server.run, name=f"portal-{port}", daemon=True)
        t.start()
        servers.append((server, t))
        _wait_port("127.0.0.1", port)
        base = f"http://127.0.0.1:{port}"
        return base

    yield start
    for server, t in servers:
        server.close()
        t.join(timeout=5)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def new_page(browser):
    contexts = []

    def make(base_url: str):
        ctx = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
        try:
            ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
        except Exception:  # noqa: BLE001 — older chromium: the copy button falls back
            pass
        ctx.set_default_timeout(10_000)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()


def log_in(page, base_url: str, name: str, password: str | None = None) -> None:
    from tests.support.web import password_of

    page.goto(base_url + "/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password or password_of(name))
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u)


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
