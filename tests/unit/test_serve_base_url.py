"""Issue 9 item 9: `slipway serve --port 8101` with no base_url configured tells git hooks and
jobs its own address (it used to announce http://127.0.0.1:8000, and every push was refused);
the CLI and a separate reconciler learn the same URL from the data dir."""
from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from portal import cli as cli_mod
from portal.config import load_config, served_base_url
from portal.bootstrap import bootstrap
from tests.support.fakes import FakeBackend, InMemoryAccounts


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Run `slipway serve` with waitress replaced; returns (run(args, env) -> (config, hook_url))."""
    import waitress

    seen = {}

    def fake_serve(app, **kw):
        seen.update(kw)

    monkeypatch.setattr(waitress, "serve", fake_serve)
    monkeypatch.setattr(cli_mod.serve, "_slipway_answers", lambda host, port: False)

    def run(args, env):
        cfg = load_config(env={"SLIPWAY_DATA_DIR": str(tmp_path / "data"), **env})
        svc = bootstrap(cfg, backend=FakeBackend(), accounts=InMemoryAccounts())
        svc.chown = False
        r = CliRunner().invoke(cli_mod.main, ["serve", "--no-reconciler", *args],
                               obj=cli_mod.Ctx(services=svc), catch_exceptions=False)
        assert r.exit_code == 0, r.output
        svc.db.dispose()
        return svc.config, seen, " ".join(r.output.split())  # rich wraps long lines

    return run


def test_serve_derives_the_public_url_from_its_port(served, tmp_path):
    cfg, seen, out = served(["--port", "8101"], {})
    assert seen["port"] == 8101
    assert cfg.base_url == "http://127.0.0.1:8101"
    assert cfg.hook_url == "http://127.0.0.1:8101/internal/hooks"
    assert cfg.repo_url("t", "p") == "http://127.0.0.1:8101/git/t/p.git"
    assert "public URL http://127.0.0.1:8101" in out
    # the CLI (another process, same data dir, no base_url set) finds the same URL
    served_file = tmp_path / "data" / "served_base_url"
    assert stat.S_IMODE(os.stat(served_file).st_mode) == 0o600
    other = load_config(env={"SLIPWAY_DATA_DIR": str(tmp_path / "data")})
    other.ensure_secrets()
    assert other.base_url == "http://127.0.0.1:8101"


def test_a_configured_base_url_wins(served, tmp_path):
    cfg, _, out = served(["--port", "8101"], {"SLIPWAY_BASE_URL": "https://slipway.example/"})
    assert cfg.base_url == "https://slipway.example"
    assert "public URL https://slipway.example, configured base_url" in out
    # ... and a CLI with its own setting keeps it
    other = load_config(env={"SLIPWAY_DATA_DIR": str(tmp_path / "data"),
                             "SLIPWAY_BASE_URL": "http://elsewhere:1"})
    other.ensure_secrets()
    assert other.base_url == "http://elsewhere:1"


def test_without_a_server_the_default_stays():
    cfg = load_config(env={})
    assert cfg.base_url == "http://127.0.0.1:8000" and not cfg.base_url_is_set


@pytest.mark.parametrize("host, port, url", [
    ("127.0.0.1", 8101, "http://127.0.0.1:8101"),
    ("0.0.0.0", 80, "http://127.0.0.1:80"),
    ("slipway.lan", 9000, "http://slipway.lan:9000"),
    ("::", 8000, "http://[::1]:8000"),
    ("::1", 8000, "http://[::1]:8000"),
    ("[fe80::1]", 8000, "http://[fe80::1]:8000"),
])
def test_served_base_url(host, port, url):
    assert served_base_url(host, port) == url
