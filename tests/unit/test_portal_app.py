"""create_app wiring: hooks endpoint, runner events, git authenticate callback, health."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.app import create_app
from portal.identity.tokens import create_token, make_authenticate
from portal.config import ConfigError, Config, load_config
from portal.db import Job
from tests.support.fakes import FakeBackend, commit_to_bare, hook_payload, make_services, seed

Z = "0" * 40


@pytest.fixture
def env(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    seed(svc)
    app = create_app(svc)
    app.testing = True
    yield svc, app.test_client(), backend, tmp_path
    svc.db.dispose()


def test_index_and_health(env):
    svc, c, *_ = env
    r = c.get("/")  # anonymous visitors are sent to the login page
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert c.get("/healthz").get_json()["ok"] is True


def test_hooks_push_to_run_and_events(env):
    svc, c, backend, tmp = env
    sha = commit_to_bare(svc.config.repos_root / "nlp" / "proj.git", tmp / "w", {"slipway-entrypoint.sh": "true\n"})
    payload = hook_payload("pre-receive", "nlp/proj", "alice", [("refs/heads/exp-1", Z, sha)])
    assert c.post("/internal/hooks", json=payload).status_code == 403
    h = {"X-Slipway-Hook-Secret": svc.config.hook_secret}
    assert c.post("/internal/hooks", json=payload, headers=h).get_json() == {"ok": True, "messages": []}
    payload["phase"] = "post-receive"
    r = c.post("/internal/hooks", json=payload, headers=h).get_json()
    assert r["ok"] and r["messages"][0].endswith("queued (a4000 x1)")
    token = __import__("json").loads(open(backend.submits[0][1].command[3]).read())["token"]
    with svc.db.session() as s:
        jid = s.scalar(select(Job.id))
    url = f"/internal/jobs/{jid}/events"
    assert c.post(url, json={"event": "started"}).status_code == 401
    assert c.post(url, json={"event": "started"}, headers={"Authorization": "Bearer nope"}).status_code == 403
    r = c.post(url, json={"event": "started"}, headers={"Authorization": f"Bearer {token}"})
    assert r.get_json() == {"ok": True, "state": "running"}
    r = c.post(url, json={"event": "bogus"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 400


def test_authenticate_callback(env):
    svc, c, backend, tmp = env
    from git_gateway.http import AccessDenied
    from portal.db import User
    auth = make_authenticate(svc)
    with svc.db.transaction() as s:
        alice = s.scalar(select(User).where(User.name == "alice"))
        tok = create_token(s, alice, now=svc.now())
        eve = User(name="eve", unix_user="eve")
        s.add(eve)
        s.flush()
        eve_tok = create_token(s, eve, now=svc.now())
    p = auth("nlp/proj", "alice", tok, True)
    assert (p.name, p.is_job) == ("alice", False)
    assert auth("nlp/proj", "alice", "wrong", True) is None
    assert auth("nlp/proj", "alice", "", False) is None
    with pytest.raises(AccessDenied):
        auth("nlp/proj", "eve", eve_tok, False)
    with pytest.raises(AccessDenied):
        auth("nlp/ghost", "alice", tok, False)
    # job tokens: only the job's own repository
    from portal.jobs.runner_spec import hash_token
    with svc.db.transaction() as s:
        s.add(Job(id=7, project_id=1, branch="b", commit_sha="a" * 40, state="running", gpu_type="a4000",
                  gpu_count=1, image="python", time_limit_min=5, token_hash=hash_token("jobtok")))
    p = auth("nlp/proj", "job:7", "jobtok", True)
    assert (p.name, p.is_job) == ("job:7", True)
    assert auth("nlp/proj", "job:7", "other", True) is None
    assert auth("nlp/proj", "job:8", "jobtok", True) is None


def test_git_is_mounted(env):
    svc, c, *_ = env
    r = c.get("/git/nlp/proj.git/info/refs?service=git-upload-pack")
    assert r.status_code == 401 and "Basic" in r.headers.get("WWW-Authenticate", "")


def test_config_from_env_and_file(tmp_path):
    f = tmp_path / "slipway.toml"
    f.write_text('[slipway]\nbase_url = "http://portal:9000/"\ngpu_rates = {a4000 = "0.75", a6000 = "1.5"}\n')
    cfg = load_config({"SLIPWAY_CONFIG": str(f), "SLIPWAY_DATA_DIR": str(tmp_path / "d"),
                       "SLIPWAY_GPU_LIMITS": "a4000:4,a6000:1"})
    assert cfg.base_url == "http://portal:9000" and str(cfg.gpu_rates["a4000"]) == "0.75"
    # a shared type adds its shares (gpu_shards, default a6000 into 8): one GPU's worth per job,
    # at the GPU's rate / 8 (docs/SHARING.md)
    assert cfg.gpu_limits == {"a4000": 4, "a6000": 1, "a6000-shard": 8}
    assert cfg.gpu_rates["a6000-shard"] * 8 == cfg.gpu_rates["a6000"]
    d = str(tmp_path / "d")
    assert load_config({"SLIPWAY_DATA_DIR": d, "SLIPWAY_GPU_SHARDS": "none"}).gpu_limits == \
        {"a4000": 4, "a6000": 2}
    four = load_config({"SLIPWAY_DATA_DIR": d, "SLIPWAY_GPU_SHARDS": "a6000:4"})
    assert four.gpu_limits["a6000-shard"] == 4 and four.shards_of("a6000-shard") == ("a6000", 4)
    with pytest.raises(ConfigError, match="2 to 128 shards"):
        load_config({"SLIPWAY_DATA_DIR": d, "SLIPWAY_GPU_SHARDS": "a6000:1"})
    assert cfg.database_url == f"sqlite:///{tmp_path / 'd' / 'slipway.db'}"
    assert cfg.repo_url("t", "p") == "http://portal:9000/git/t/p.git"
    cfg.ensure_secrets()
    assert cfg.hook_secret and Config(data_dir=tmp_path / "d").__class__  # persisted:
    again = load_config({"SLIPWAY_DATA_DIR": str(tmp_path / "d")})
    again.ensure_secrets()
    assert again.hook_secret == cfg.hook_secret
    with pytest.raises(Exception, match="no hourly rate"):
        load_config({"SLIPWAY_GPU_LIMITS": "h100:1"})


def test_pages_pass_the_admission_gate_and_git_does_not(tmp_path):
    from portal.web.admission import AdmissionMiddleware

    app = create_app(make_services(tmp_path, page_slots=3))
    gate_mw = app.wsgi_app.app  # DispatcherMiddleware(app=<gated Flask>, mounts={"/git": ...})
    assert isinstance(gate_mw, AdmissionMiddleware) and not isinstance(app.wsgi_app.mounts["/git"], AdmissionMiddleware)
    gate_mw.gate.acquire(), gate_mw.gate.acquire(), gate_mw.gate.acquire()  # all 3 slots busy
    assert app.test_client().get("/healthz").status_code == 200  # bypasses the gate
    for _ in range(3):
        gate_mw.gate.release()
    assert app.test_client().get("/login").status_code == 200


def test_deactivated_user_loses_git_and_token_access(env):
    """A user switched off (LDAP dropped them) keeps no access through any of their tokens."""
    import base64

    from portal.identity.tokens import verify_token
    from portal.db import User
    svc, c, *_ = env
    auth = make_authenticate(svc)
    with svc.db.transaction() as s:
        tok = create_token(s, s.scalar(select(User).where(User.name == "alice")), now=svc.now())
    basic = {"Authorization": "Basic " + base64.b64encode(f"alice:{tok}".encode()).decode()}
    refs = "/git/nlp/proj.git/info/refs?service=git-upload-pack"
    assert auth("nlp/proj", "alice", tok, True).name == "alice"
    assert c.get(refs, headers=basic).status_code == 200
    assert c.get("/api/teams", headers={"Authorization": f"Bearer {tok}"}).status_code == 200
    with svc.db.transaction() as s:
        s.scalar(select(User).where(User.name == "alice")).active = False
    assert auth("nlp/proj", "alice", tok, True) is None        # git: bad credentials -> 401
    assert auth("nlp/proj", "alice", tok, False) is None
    with svc.db.session() as s:
        assert verify_token(s, "alice", tok) is None
    r = c.get(refs, headers=basic)
    assert r.status_code == 401 and "Basic" in r.headers.get("WWW-Authenticate", "")
    assert c.get("/api/teams", headers={"Authorization": f"Bearer {tok}"}).status_code == 401
    assert c.get("/api/teams", headers=basic).status_code == 401
    with svc.db.transaction() as s:                              # reactivated: the token works again
        s.scalar(select(User).where(User.name == "alice")).active = True
    assert c.get(refs, headers=basic).status_code == 200


def test_create_app_wires_the_pages_and_the_api_itself(tmp_path):
    """``create_app(services)`` registers the page blueprints (``init_web``) and the API; the web
    package registers no API of its own."""
    from flask import Flask

    from portal.web import init_web

    svc = make_services(tmp_path)
    app = create_app(svc)
    assert {"api", "auth", "teams", "jobs", "internal", "pages"} <= set(app.blueprints)
    assert app.extensions["slipway"] is svc
    bare = Flask("bare")
    bare.extensions["slipway"] = svc
    init_web(bare)
    assert "api" not in bare.blueprints and "teams" in bare.blueprints
    svc.db.dispose()


def test_bootstrap_wires_node_addresses_and_the_ports(tmp_path):
    from portal import ports
    from tests.support.fakes import InMemoryAccounts, InMemoryMailer

    svc = make_services(tmp_path, node_addresses={"a4k-1": "10.0.0.5", "*": "127.0.0.1"})
    assert svc.node_address("a4k-1") == "10.0.0.5" and svc.node_address("a6k-9") == "127.0.0.1"
    assert isinstance(svc.accounts, InMemoryAccounts) and isinstance(svc.mailer, InMemoryMailer)
    assert isinstance(svc.git, ports.Git) and isinstance(svc.metrics, ports.Metrics)
    assert isinstance(svc.catalog, ports.Containers) and svc.payments is None
    plain = make_services(tmp_path / "plain")
    assert plain.node_address("a4k-1") == "a4k-1"
    svc.db.dispose()
    plain.db.dispose()
