"""Issue 9 item 7: malformed input answers 4xx, never 5xx, on every route of the app.

* every route from ``app.url_map`` (new routes are walked automatically) with hostile ids in its
  ``<int:…>`` parameters (2^63, 2^64, -1, 0, 23 digits), as a cluster administrator (session
  + CSRF) and with an access token;
* every GET route with hostile ``page``/``before``/``limit``/``offset``/``per_page`` values;
* a JSON body nested 100,000 deep to every route that accepts a body, the internal hook and the
  LFS batch endpoint;
* loose JSON types are refused, not guessed: ``gpu_count: true``/``1.9``/``"2"``, an amount as a
  JSON float; ``gpus=a4000`` without a count (push option and project settings) is refused with a
  message showing ``a4000:1``.
"""
from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select
from werkzeug.routing import IntegerConverter

from portal import integrations as ig
from portal.app import create_app
from portal.db import Project, User
from portal.jobs import push_options
from tests.support.fakes import FakeBackend, make_services
from portal.identity import user_tokens
from portal.projects import settings as project_settings
from portal.teams import access
from tests.support.web import add_job, csrf_token, login, make_world
from slurm_bridge.request import GpuRequest

HOSTILE_IDS = [2**63, 2**64, -1, 0, 99999999999999999999999]
HOSTILE_NUMBERS = ["9223372036854775808", "18446744073709551616", "-1", "0",
                   "99999999999999999999999", "abc", "1e3", "1.5", " 7", "0x10", "٣"]
QUERY_INTS = ("page", "before", "limit", "offset", "per_page")
DEEP = "[" * 100_000 + "]" * 100_000
STRINGS = {"team": "nlp", "project": "proj", "rest": "x", "filename": "slipway.css",
           "username": "alice", "action": "approve"}


@pytest.fixture
def world(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    app = create_app(svc)
    with svc.db.session() as s:
        alice = access.Actor(id=s.scalar(select(User.id).where(User.name == "alice")), name="alice")
    _tid, token = user_tokens.create_token(svc, alice, "hostile")
    yield svc, app, ids, token
    svc.db.dispose()


def admin_client(app):
    c = app.test_client()
    assert login(c, "dave").status_code == 302
    return c, csrf_token(c)


def int_args(rule):
    return [a for a in rule.arguments if isinstance(rule._converters.get(a), IntegerConverter)]


def build(rule, ints: dict) -> str:
    values = {a: ints.get(a, STRINGS.get(a, "x")) for a in rule.arguments if a in rule._converters}
    return rule.build(values, append_unknown=False)[1]


def methods(rule):
    return sorted(rule.methods - {"HEAD", "OPTIONS"})


def send(client, method, url, csrf, **kw):
    headers = dict(kw.pop("headers", {}), **{"X-CSRFToken": csrf} if csrf else {})
    if "json_text" in kw:
        r = client.open(url, method=method, data=kw.pop("json_text"), headers=headers,
                        content_type="application/json")
    else:
        data = {"csrf_token": csrf} if csrf and method != "GET" else None
        r = client.open(url, method=method, data=data, headers=headers)
    r.close()  # streamed responses (CSV, log) end their request context here
    return r


def no_server_error(r, rule) -> bool:
    """No 5xx; the job proxy may answer 502/503 (the job's own server is not there)."""
    return r.status_code < 500 or (rule.endpoint.startswith("proxy.") and r.status_code in (502, 503))


def test_every_int_route_param_refuses_hostile_ids_without_5xx(world):
    _svc, app, _ids, token = world
    admin, csrf = admin_client(app)
    bearer = app.test_client()
    walked = 0
    for rule in app.url_map.iter_rules():
        args = int_args(rule)
        if not args:
            continue
        for value in HOSTILE_IDS:
            url = build(rule, {a: value for a in args})
            for method in methods(rule):
                r = send(admin, method, url, csrf)
                assert no_server_error(r, rule), (method, url, r.status_code)
                r = send(bearer, method, url, None, headers={"Authorization": f"Bearer {token}"})
                assert no_server_error(r, rule), (method, url, r.status_code)
                walked += 1
    assert walked >= 5 * 6  # jobs, job log, cancel, proxy, token revoke, internal events…
    assert admin.get(f"/api/jobs/{2**63}").status_code == 404
    assert admin.get(f"/jobs/{2**64}").status_code == 404


def test_every_get_route_refuses_hostile_page_params_without_5xx(world):
    _svc, app, ids, _token = world
    admin, csrf = admin_client(app)
    sane = {"job_id": ids["running"]}
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static":
            continue
        base = build(rule, {a: sane.get(a, 1) for a in int_args(rule)})
        for name in QUERY_INTS:
            for value in HOSTILE_NUMBERS[1::4]:  # a sample; the 400 test below checks more
                r = admin.get(base, query_string={name: value})
                r.close()
                assert no_server_error(r, rule), (base, name, value, r.status_code)


PAGED = [("/api/jobs", "before"), ("/api/jobs", "limit"), ("/api/teams/nlp/ledger", "before"),
         ("/api/teams/nlp/projects", "page"), ("/api/teams/nlp/projects", "per_page"),
         ("/api/jobs/{job}/log", "offset"), ("/jobs", "before"), ("/teams/nlp/billing", "before"),
         ("/teams/nlp", "page"), ("/projects/nlp/proj", "before")]


def test_hostile_page_params_answer_400_with_a_message(world):
    _svc, app, ids, _token = world
    admin, _csrf = admin_client(app)
    for url, name in PAGED:
        for value in (str(2**64), str(2**63), "abc", "-1", "1.5"):
            r = admin.get(url.format(job=ids["running"]), query_string={name: value})
            text = r.get_data(as_text=True)
            assert r.status_code == 400, (url, name, value, r.status_code)
            assert name in text and "whole number" in text, text


def test_deep_json_to_every_body_route_is_a_4xx(world):
    _svc, app, ids, token = world
    admin, csrf = admin_client(app)
    sane = {"job_id": ids["running"]}
    walked = 0
    for rule in app.url_map.iter_rules():
        for method in methods(rule):
            if method == "GET" or rule.endpoint == "auth.logout":
                continue
            url = build(rule, {a: sane.get(a, 1) for a in int_args(rule)})
            r = send(admin, method, url, csrf, json_text=DEEP)
            assert no_server_error(r, rule), (method, url, r.status_code)
            if url.startswith("/api/"):
                r = send(app.test_client(), method, url, None, json_text=DEEP,
                         headers={"Authorization": f"Bearer {token}"})
                assert no_server_error(r, rule), (method, url, r.status_code)
            walked += 1
    assert walked > 10
    r = send(admin, "POST", "/api/teams/nlp/funds", csrf, json_text=DEEP)
    assert r.status_code == 400 and "nested deeper than 64" in r.get_json()["error"]


def test_deep_json_to_internal_hooks_and_lfs_batch(world):
    svc, app, _ids, token = world
    c = app.test_client()
    r = c.post("/internal/hooks", data=DEEP, content_type="application/json",
               headers={"X-Slipway-Hook-Secret": svc.config.hook_secret})
    assert r.status_code == 400 and "nested deeper" in r.get_data(as_text=True)
    auth = base64.b64encode(f"alice:{token}".encode()).decode()
    r = c.post("/git/nlp/proj.git/info/lfs/objects/batch", data=DEEP,
               headers={"Authorization": f"Basic {auth}", "Accept": "application/vnd.git-lfs+json",
                        "Content-Type": "application/vnd.git-lfs+json"})
    assert 400 <= r.status_code < 500 and "nested deeper" in r.get_data(as_text=True)


def test_malformed_json_body_is_400_not_guessed(world):
    _svc, app, _ids, token = world
    c = app.test_client()
    for body in ("{", '{"name": NaN}', "\xff", '{"a": 1}x'):
        r = c.post("/api/tokens", data=body, content_type="application/json",
                   headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 400, body
    r = c.post("/api/tokens", data="[1]", content_type="application/json",
               headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 400 and "JSON object" in r.get_json()["error"]


@pytest.mark.parametrize("field,value,says", [
    ("gpu_count", True, "gpu_count must be a JSON integer"),
    ("gpu_count", 1.9, "gpu_count must be a JSON integer"),
    ("gpu_count", "2", "gpu_count must be a JSON integer"),
    ("gpu_type", 7, "gpu_type must be a JSON string"),
    ("image", ["python"], "image must be a JSON string"),
    ("time", 1.5, "time must be a JSON integer"),
    ("gpus", "a4000", "a4000:1"),
])
def test_loose_json_types_are_refused(world, field, value, says):
    svc, app, _ids, token = world
    c = app.test_client()
    h = {"Authorization": f"Bearer {token}"}
    r = c.post("/api/teams/nlp/projects", json={"name": "p2", field: value}, headers=h)
    assert r.status_code == 400 and says in r.get_json()["error"], r.get_json()
    r = c.patch("/api/projects/nlp/proj", json={field: value}, headers=h)
    assert r.status_code == 400 and says in r.get_json()["error"], r.get_json()
    with svc.db.session() as s:
        assert s.scalar(select(Project.gpu_count).where(Project.name == "proj")) == 1
        assert s.scalar(select(Project.id).where(Project.name == "p2")) is None
    ok = c.post("/api/teams/nlp/projects", json={"name": "p3", "gpu_count": 2, "time": 90}, headers=h)
    assert ok.status_code == 201, ok.get_json()


def test_names_must_be_json_strings(world):
    _svc, app, _ids, token = world
    c = app.test_client()
    h = {"Authorization": f"Bearer {token}"}
    for value in (5, True, ["p"], {"a": 1}):
        r = c.post("/api/teams/nlp/projects", json={"name": value}, headers=h)
        assert r.status_code == 400 and "name must be a JSON string" in r.get_json()["error"]
        r = c.post("/api/tokens", json={"name": value}, headers=h)
        assert r.status_code == 400 and "name must be a JSON string" in r.get_json()["error"]


def test_form_gpu_count_must_be_whole(world):
    svc = world[0]
    for bad in ("1.9", "true", "2x", ""):
        st, problems = project_settings.parse_settings(svc, gpu_type="a4000", gpu_count=bad)
        assert (st is None and problems) or bad == ""
    st, problems = project_settings.parse_settings(svc, gpu_type="a4000", gpu_count="2")
    assert st is not None and st.gpu_count == 2


def test_amount_as_json_float_is_refused(world):
    _svc, app, _ids, _token = world
    admin, csrf = admin_client(app)
    r = admin.post("/api/teams/nlp/funds", json={"amount": 10.5}, headers={"X-CSRFToken": csrf})
    assert r.status_code == 400 and "float" in r.get_json()["error"]


def test_push_option_gpus_without_count_is_refused_showing_the_count():
    overrides, problems = push_options.parse_push_options(["gpus=a4000"], {"a4000": 4, "a6000": 2})
    assert "gpus" not in overrides
    assert len(problems) == 1 and "a4000:1" in problems[0] and "no count" in problems[0]
    overrides, problems = push_options.parse_push_options(["gpus=a6000:1"], {"a4000": 4, "a6000": 2})
    assert overrides == {"gpus": GpuRequest("a6000", 1)} and not problems


def test_gpu_messages_suggest_only_what_is_accepted():
    limits = {"a4000": 4, "a6000": 2}
    for text in ("a4000:x", "::", "a4000:1:2"):
        with pytest.raises(ig.InvalidRequest) as e:
            ig.parse_gpus(text, limits)
        assert "shard" not in str(e.value) and "a4000:1" in str(e.value)
    with pytest.raises(ig.InvalidRequest) as e:
        GpuRequest.parse("a4000:x")
    assert "shard" not in str(e.value)
    _overrides, problems = push_options.parse_push_options(["gpus=nope:x"], limits)
    assert "shard" not in problems[0] and "a4000, a6000" in problems[0]


def test_proxy_of_a_running_job_without_a_node_says_so(world):
    svc, app, ids, _token = world
    jid = add_job(svc, ids["proj"], branch="exp-9", state="running", pusher="alice")
    c = app.test_client()
    login(c, "alice")
    r = c.get(f"/jobs/{jid}/proxy/")
    text = r.get_data(as_text=True)
    assert r.status_code == 503 and "has not reported its node yet" in text
    assert "try again in a moment" in text and "only while it runs" not in text
    assert r.headers["Retry-After"]
    ended = add_job(svc, ids["proj"], branch="exp-8", state="succeeded", pusher="alice")
    r = c.get(f"/jobs/{ended}/proxy/")
    assert r.status_code == 409 and "only while it runs" in r.get_data(as_text=True)


def test_json_depth_scan_ignores_brackets_inside_strings():
    from git_gateway.jsonbody import JsonBodyError, loads_bounded

    assert loads_bounded(json.dumps({"s": "[" * 1000 + '\\"{'})) == {"s": "[" * 1000 + '\\"{'}
    assert loads_bounded("[" * 64 + "]" * 64) is not None
    with pytest.raises(JsonBodyError):
        loads_bounded("[" * 65 + "]" * 65)
    with pytest.raises(JsonBodyError):
        loads_bounded('{"n": 1' + "0" * 5000 + "}")  # int digit limit: ValueError, not 500
