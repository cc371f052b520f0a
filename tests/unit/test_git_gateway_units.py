"""Unit tests for git_gateway (no servers; local git only where the behaviour is git's)."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from git_gateway import hook_program, hooks, lfs, repos
from git_gateway.node import gitops, lfs_track, pushing, results
from git_gateway.http import AccessDenied, GitHttpApp, Principal, basic_header, parse_basic
from git_gateway.node.container_env import child_env
from git_gateway.node.spec import RunnerSpec, SpecError
from tests.support.oneshot_http import oneshot_server


# ------------------------------------------------------------------------------------ repos
@pytest.mark.parametrize("name", ["a", "team-1", "proj.v2", "x_y", "0", "a" * 63])
def test_valid_names(name):
    assert repos.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "-a", ".a", "a..b", "a/b", "a b", "a" * 64, "p.git",
                                  "p.lock", "ü", "a\n", "..", "_a"])
def test_invalid_names(name):
    with pytest.raises(repos.InvalidName):
        repos.validate_name(name)


def test_repo_key_roundtrip(tmp_path):
    assert repos.repo_key("team", "proj") == "team/proj"
    assert repos.parse_repo_key("team/proj") == ("team", "proj")
    with pytest.raises(repos.InvalidName):
        repos.parse_repo_key("team/../x")
    assert repos.repo_path(tmp_path, "t", "p") == tmp_path / "t" / "p.git"


def test_read_file_and_entrypoint_check(tmp_path):
    root = tmp_path / "repos"
    bare = repos.create_repo(root, "t", "p")
    work = tmp_path / "w"
    env = dict(os.environ, GIT_AUTHOR_NAME="a", GIT_AUTHOR_EMAIL="a@b", GIT_COMMITTER_NAME="a",
               GIT_COMMITTER_EMAIL="a@b")
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "slipway-entrypoint.sh").write_text("echo hi\n")
    (work / "dir").mkdir()
    (work / "dir" / "f").write_text("f")
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=work, check=True, env=env)
    subprocess.run(["git", "push", "-q", str(bare), "HEAD:refs/heads/main"], cwd=work, check=True)
    sha = repos.resolve_ref(root, "t", "p", "refs/heads/main")
    assert repos.read_file(root, "t", "p", sha, "slipway-entrypoint.sh") == b"echo hi\n"
    assert repos.check_entrypoint(root, "t", "p", sha) is None
    assert repos.read_file(root, "t", "p", sha, "missing") is None
    assert repos.read_file(root, "t", "p", sha, "dir") is None
    assert repos.tree_entry(root, "t", "p", sha, "dir").type == "tree"
    with pytest.raises(ValueError):
        repos.read_file(root, "t", "p", sha, "slipway-entrypoint.sh", max_bytes=3)
    with pytest.raises(ValueError):
        repos.read_file(root, "t", "p", "HEAD~1", "x")
    assert repos.tree_entry(root, "t", "p", "f" * 40, "x") is None
    with pytest.raises(ValueError):  # quarantine must be inside the repository's objects/
        repos.read_file(root, "t", "p", sha, "x", quarantine=str(tmp_path))


# ------------------------------------------------------------------------------------ hooks
def test_hook_install(tmp_path):
    written = hooks.install(tmp_path / "hooks", python=sys.executable)
    assert [p.name for p in written] == ["pre-receive", "post-receive"]
    bash = hooks.find_bash()
    assert bash, "the test machine has bash"
    assert written[0].read_text().startswith(f"#!{bash}\n{hooks.MARKER}\n")   # the fast hook
    program = tmp_path / "hooks" / hooks.PYTHON_HOOK   # what it hands over to (https, errors)
    assert program.read_text().startswith(f"#!{sys.executable} -IS\n")
    assert os.access(written[0], os.X_OK) and os.access(program, os.X_OK)
    assert hooks.installed(tmp_path / "hooks")
    program.unlink()
    assert not hooks.installed(tmp_path / "hooks")
    # without bash: both hooks are the Python program, as before
    written = hooks.install(tmp_path / "py", python=sys.executable, bash=None)
    assert written[1].read_text().startswith(f"#!{sys.executable} -IS\n")
    assert hooks.installed(tmp_path / "py")
    with pytest.raises(ValueError):
        hooks.install(tmp_path / "h2", python="python3")


def test_refresh_hooks_upgrades_old_repositories_only(tmp_path):
    """An upgrade (Python hooks → bash hooks): serve's start re-installs the hooks of existing
    repositories that differ from what this version writes, and leaves current ones alone."""
    from git_gateway import repos
    old = repos.create_repo(tmp_path, "team-a", "old", python=sys.executable)
    new = repos.create_repo(tmp_path, "team-b", "new", python=sys.executable)
    hooks.install(old / "hooks", python=sys.executable, bash=None)   # as an older version did
    assert not hooks.current(old / "hooks", python=sys.executable)
    assert hooks.current(new / "hooks", python=sys.executable)
    before = (new / "hooks" / "pre-receive").stat().st_mtime_ns
    assert repos.refresh_hooks(tmp_path, python=sys.executable) == 1
    assert hooks.current(old / "hooks", python=sys.executable)
    assert (old / "hooks" / "pre-receive").read_text().startswith(f"#!{hooks.find_bash()}\n")
    assert (new / "hooks" / "pre-receive").stat().st_mtime_ns == before   # not rewritten
    assert repos.refresh_hooks(tmp_path, python=sys.executable) == 0


def test_hook_parse_and_payload():
    data = (b"0" * 40 + b" " + b"a" * 40 + b" refs/heads/feat/\xc3\xbc\n"
            + b"b" * 40 + b" " + b"0" * 40 + b" refs/heads/gone\n")
    updates, problems = hook_program.parse_updates(data)
    assert not problems
    assert updates == [{"ref": "refs/heads/feat/ü", "old": "0" * 40, "new": "a" * 40},
                       {"ref": "refs/heads/gone", "old": "b" * 40, "new": "0" * 40}]
    _, problems = hook_program.parse_updates(b"0" * 40 + b" " + b"a" * 40 + b" refs/heads/\xff\n")
    assert problems and "UTF-8" in problems[0]
    environ = {"SLIPWAY_REPO": "t/p", "SLIPWAY_PUSHER": "job:42", "SLIPWAY_PUSHER_IS_JOB": "1",
               "GIT_PUSH_OPTION_COUNT": "2", "GIT_PUSH_OPTION_0": "gpus=a6000:1",
               "GIT_PUSH_OPTION_1": "time=30m", "GIT_QUARANTINE_PATH": "/x/objects/incoming-1"}
    p = hook_program.build_payload("pre-receive", updates, environ)
    assert p == {"phase": "pre-receive", "repo": "t/p", "pusher": "job:42",
                 "pusher_is_job": True, "updates": updates,
                 "push_options": ["gpus=a6000:1", "time=30m"],
                 "quarantine": "/x/objects/incoming-1"}
    assert "quarantine" not in hook_program.build_payload("post-receive", updates, environ)


def _run_hook(phase, environ, data=b"0" * 40 + b" " + b"a" * 40 + b" refs/heads/x\n"):
    err = io.BytesIO()

    class E:
        buffer = err
    old = sys.stderr
    sys.stderr = E()
    try:
        rc = hook_program.main([f"/repo/hooks/{phase}"], environ, io.BytesIO(data))
    finally:
        sys.stderr = old
    return rc, err.getvalue().decode()


def test_hook_unreachable_refuses_pre_receive_only():
    environ = {"SLIPWAY_HOOK_URL": "http://127.0.0.1:9/hook", "SLIPWAY_HOOK_TIMEOUT": "2"}
    rc, err = _run_hook("pre-receive", environ)
    assert rc == 1 and err.startswith("slipway: the Slipway server is unavailable, try again (tried ")
    rc, err = _run_hook("post-receive", environ)
    assert rc == 0 and "no job was started" in err
    assert _run_hook("pre-receive", {}) == (0, "")    # not pushed through the gateway
    rc, err = _run_hook("pre-receive", environ, b"garbage\n")
    assert rc == 1 and "malformed" in err


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.text(),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
                    max_leaves=20))
def test_hook_json_encoder_matches_json(value):
    assert json.loads(hook_program.to_json(value)) == value


def _hook_server(status, body, ctype):
    return oneshot_server(status, body, ctype)


@pytest.mark.parametrize("status, body, ctype, rc, out", [
    (200, b"ok\nslipway: job 7 queued\n", "text/plain", 0, "slipway: job 7 queued\n"),
    (409, b"refused\nslipway: branch busy\nsecond line\n", "text/plain", 1,
     "slipway: branch busy\nsecond line\n"),
    (200, b'{"ok": true, "messages": ["from json"]}', "application/json", 0, "from json\n"),
    (400, b'{"ok": false, "messages": ["no"]}', "application/json", 1, "no\n"),
    (502, b"<html>bad gateway</html>", "text/html", 1, "slipway: the Slipway server is unavailable, try again "
     "(tried {url}: HTTP 502 from the Slipway server)\n"),
])
def test_hook_reads_text_and_json_replies(status, body, ctype, rc, out):
    url, seen = _hook_server(status, body, ctype)
    environ = {"SLIPWAY_HOOK_URL": url, "SLIPWAY_HOOK_SECRET": "s3", "SLIPWAY_REPO": 't/"q"',
               "SLIPWAY_HOOK_TIMEOUT": "5", "GIT_PUSH_OPTION_COUNT": "1", "GIT_PUSH_OPTION_0": "a\\b\x01"}
    assert _run_hook("pre-receive", environ) == (rc, out.format(url=url))
    head, sent = seen[0]
    assert "X-Slipway-Hook-Secret: s3" in head and "Accept: text/plain" in head
    payload = json.loads(sent)
    assert payload["repo"] == 't/"q"' and payload["push_options"] == ["a\\b\x01"]


def test_hook_is_stdlib_only():
    src = open(hook_program.__file__).read()
    for line in src.splitlines():
        if line.startswith(("import ", "from ")):
            mod = line.split()[1].split(".")[0]
            assert mod in sys.stdlib_module_names, line


# ------------------------------------------------------------------------------------- http
def test_parse_basic():
    h = lambda s: "Basic " + base64.b64encode(s.encode()).decode()  # noqa: E731
    assert parse_basic(h("alice:pw:with:colons")) == ("alice", "pw:with:colons")
    assert parse_basic(h("job:42:tok")) == ("job:42", "tok")
    assert parse_basic(h("job:x:tok")) == ("job", "x:tok")
    assert parse_basic(h("ü:p")) == ("ü", "p")
    assert parse_basic(h("a:b") + ", " + h("a:b")) == ("a", "b")
    assert parse_basic(basic_header("job:7", "t")) == ("job:7", "t")
    for bad in (None, "", "Bearer x", "Basic", "Basic !!!", h("nocolon")):
        assert parse_basic(bad) is None


def _call(app, path, method="GET", query="", auth=None, body=b""):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "QUERY_STRING": query,
               "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
               "wsgi.url_scheme": "http", "HTTP_HOST": "h"}
    if auth:
        environ["HTTP_AUTHORIZATION"] = basic_header(*auth)
    got = {}

    def start_response(status, headers):
        got["status"], got["headers"] = status, dict(headers)
    body = b"".join(app(environ, start_response))
    return got["status"], got["headers"], body


def test_app_routing_and_auth(tmp_path):
    calls = []

    def authenticate(key, user, pw, write):
        calls.append((key, user, pw, write))
        if pw == "boom":
            raise RuntimeError("db down")
        if user == "eve":
            raise AccessDenied(key)
        return Principal(user) if pw == "pw" else None

    repos.create_repo(tmp_path / "r", "t", "p")
    app = GitHttpApp(tmp_path / "r", authenticate, "http://x", "s", tmp_path / "l")
    q = "service=git-receive-pack"
    st, h, _ = _call(app, "/git/t/p.git/info/refs", query=q)
    assert st.startswith("401") and h["WWW-Authenticate"] == 'Basic realm="Slipway"'
    assert calls == []
    st, _, _ = _call(app, "/git/t/p.git/info/refs", query=q, auth=("a", "bad"))
    assert st.startswith("401") and calls[-1] == ("t/p", "a", "bad", True)
    assert _call(app, "/git/t/p.git/info/refs", query=q, auth=("eve", "pw"))[0].startswith("404")
    assert _call(app, "/git/t/p.git/info/refs", query=q, auth=("a", "boom"))[0].startswith("503")
    assert _call(app, "/git/t/nope.git/info/refs", query=q, auth=("a", "pw"))[0].startswith("404")
    for bad in ("/git/t/p.git/HEAD", "/git/t/p.git/objects/info/packs", "/git/T/p.git/info/refs",
                "/git/t/../p.git/info/refs", "/other"):
        assert _call(app, bad, query=q, auth=("a", "pw"))[0].startswith("404"), bad
    # served both with the /git prefix and mounted under /git
    for path in ("/git/t/p.git/info/refs", "/t/p.git/info/refs"):
        st, h, body = _call(app, path, query="service=git-upload-pack", auth=("a", "pw"))
        assert st.startswith("200"), (path, st, body)
        assert h["Content-Type"] == "application/x-git-upload-pack-advertisement"
        assert calls[-1][3] is False


def test_backend_env(tmp_path):
    app = GitHttpApp(tmp_path, lambda *a: None, "http://hook", "sec", tmp_path)
    env = app.backend_env({"REQUEST_METHOD": "POST", "HTTP_GIT_PROTOCOL": "version=2",
                           "HTTP_CONTENT_ENCODING": "gzip", "CONTENT_TYPE": "x"},
                          "t", "p", "/git-receive-pack", Principal("job:5", True))
    assert env["PATH_INFO"] == "/t/p.git/git-receive-pack"
    assert env["GIT_PROTOCOL"] == "version=2" and "CONTENT_LENGTH" not in env
    assert env["SLIPWAY_PUSHER"] == env["REMOTE_USER"] == "job:5"
    assert env["SLIPWAY_PUSHER_IS_JOB"] == "1" and env["SLIPWAY_REPO"] == "t/p"
    assert env["SLIPWAY_HOOK_URL"] == "http://hook" and env["SLIPWAY_HOOK_SECRET"] == "sec"
    # every receive-pack: pushes arrive loose (read by the entrypoint check without git), and
    # no `gc --auto` process in the push (the background upkeep runs it)
    config = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
              for i in range(int(env["GIT_CONFIG_COUNT"]))}
    assert config == {"receive.unpackLimit": "100", "receive.autogc": "false"}
    env = app.backend_env({"HTTP_GIT_PROTOCOL": "version=2\nX=1"}, "t", "p", "/x", Principal("a"))
    assert "GIT_PROTOCOL" not in env


# -------------------------------------------------------------------------------------- lfs
def test_lfs_classify():
    c = lfs.LfsApi.classify
    oid = "a" * 64
    assert c("POST", "/objects/batch").needs_body_for_write
    assert c("PUT", f"/objects/{oid}").write and not c("GET", f"/objects/{oid}").write
    assert c("GET", "/objects/../../etc") is None and c("PUT", "/objects/" + "A" * 64) is None
    assert c("POST", "/locks/verify").kind == "verify_locks"
    assert c("DELETE", f"/objects/{oid}") is None
    op = c("POST", "/objects/batch").with_body({"operation": "download"})
    assert not op.write


def test_lfs_store(tmp_path):
    store = lfs.LfsStore(tmp_path)
    data = os.urandom(200_000)
    oid = hashlib.sha256(data).hexdigest()
    assert store.put_stream("t", "p", oid, io.BytesIO(data), len(data)) == len(data)
    path = store.object_path("t", "p", oid)
    assert path == tmp_path / "t" / "p" / oid[:2] / oid[2:4] / oid and path.read_bytes() == data
    with pytest.raises(lfs.LfsError) as e:
        store.put_stream("t", "p", "b" * 64, io.BytesIO(data), None)
    assert e.value.status.startswith("422")
    with pytest.raises(lfs.LfsError) as e:
        store.put_stream("t", "p", oid, io.BytesIO(data), None, max_bytes=1000)
    assert e.value.status.startswith("413")
    with pytest.raises(lfs.LfsError):
        store.put_stream("t", "p", oid, io.BytesIO(data[:10]), len(data))
    assert list((tmp_path / "t" / "p" / "tmp").iterdir()) == []      # no temp files left
    with pytest.raises(ValueError):
        store.object_path("t", "p", "../../x")


# ---------------------------------------------------------------------------------- results
HOSTILE_FILES = ["plain.bin", "with space.bin", "glob*?[x].bin", 'q"uote.bin', "back\\slash.bin",
                 "ünï/ブ.bin", "#hash.bin", "!bang.bin", "tab\tname.bin", "new\nline.bin",
                 "$(touch pwned).bin", "a;b|c&d.bin", "trailing space .bin"]


def test_attr_patterns_match_exactly_that_path(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitattributes").write_text("".join(
        lfs_track._attr_pattern(p) + " filter=lfs\n" for p in HOSTILE_FILES))
    env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null")
    tracked = lfs_track._lfs_tracked(str(tmp_path), env, HOSTILE_FILES + ["other.bin", "globX.bin",
                                                                        "sub/plain.bin"])
    assert tracked == set(HOSTILE_FILES)
    assert not (tmp_path / "pwned").exists()


def test_parse_porcelain():
    out = ("To http://h/git/t/p.git\n*\tabc:refs/heads/results/x/1\t[new branch]\n"
           "!\tabc:refs/heads/x\t[rejected] (stale info)\nDone\n")
    assert pushing.parse_porcelain(out) == [
        ("*", "abc:refs/heads/results/x/1", "[new branch]"),
        ("!", "abc:refs/heads/x", "[rejected] (stale info)")]


def test_git_env_keeps_token_out_of_urls():
    env = gitops.git_env("http://127.0.0.1:8000/git/t/p.git", "job:42", "tok")
    assert env["GIT_CONFIG_KEY_0"] == "http.http://127.0.0.1:8000/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == "Authorization: " + basic_header("job:42", "tok")
    with pytest.raises(ValueError):
        gitops.git_env("http://u:p@h/git/t/p.git", "job:42", "tok")
    with pytest.raises(ValueError):
        gitops.git_env("file:///x", "job:42", "tok")


def test_names_and_messages():
    assert results.results_ref("exp-1", 42) == "refs/heads/results/exp-1/42"
    with pytest.raises(ValueError):
        results.results_ref("exp-1", "4;2")
    assert results.commit_message(42, 0) == "slipway: results of job 42 (exit 0)"
    assert results.commit_message(7, 143, "TERM") == "slipway: results of job 7 (exit 143, signal TERM)"


# ----------------------------------------------------------------------------------- runner
SPEC = {"job_id": 42, "repo_url": "http://127.0.0.1:8000/git/team/proj.git",
        "username": "job:42", "token": "t", "commit": "a" * 40, "branch": "exp-1",
        "workdir": "/abs/jobs/42/work", "container_argv": ["bash", "slipway-entrypoint.sh"],
        "env": {"PORT": "12345"}, "lfs_threshold_bytes": 1048576, "grace_seconds": 5,
        "callback_url": "http://127.0.0.1:8000/internal/jobs/42/events",
        "author_name": "Slipway", "author_email": "slipway@localhost"}


def test_spec_parsing():
    s = RunnerSpec.from_dict(json.loads(json.dumps(SPEC)))
    assert s.job_id == 42 and s.container_argv == ("bash", "slipway-entrypoint.sh")
    for key, bad in (("commit", "HEAD"), ("workdir", "rel/dir"), ("container_argv", []),
                     ("env", {"BAD NAME": "x"}), ("env", {"A": 1}), ("job_id", "x")):
        with pytest.raises(SpecError):
            RunnerSpec.from_dict(dict(SPEC, **{key: bad}))
    with pytest.raises(SpecError):
        RunnerSpec.from_dict({k: v for k, v in SPEC.items() if k != "token"})


def test_spec_port_range():
    """port_min/port_max (the portal's configured range) are read from the spec; a spec written
    before they existed gets the portal's defaults; bad values are refused by name."""
    old = RunnerSpec.from_dict(SPEC)
    assert (old.port_min, old.port_max) == (10000, 65535)
    s = RunnerSpec.from_dict(dict(SPEC, port_min=20000, port_max=20009))
    assert (s.port_min, s.port_max) == (20000, 20009)
    for over, word in (({"port_min": "20000"}, "port_min must be an integer"),
                       ({"port_max": 2.5}, "port_max must be an integer"),
                       ({"port_min": True}, "port_min must be an integer"),
                       ({"port_min": 0}, "port_min must be between 1 and 65535"),
                       ({"port_max": 70000}, "port_max must be between 1 and 65535"),
                       ({"port_min": 30000, "port_max": 29999}, "port_min (30000) is above")):
        with pytest.raises(SpecError, match=re.escape(word)):
            RunnerSpec.from_dict(dict(SPEC, **over))


def test_child_env_is_minimal():
    s = RunnerSpec.from_dict(SPEC)
    env = child_env(s, {"PATH": "/bin", "SLURM_JOB_ID": "9", "CUDA_VISIBLE_DEVICES": "0,1",
                        "SECRET": "x", "GIT_CONFIG_VALUE_0": "Authorization: x", "PORT": "1"})
    assert env["PORT"] == "12345" and env["SLURM_JOB_ID"] == "9"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and env["SLIPWAY_JOB_ID"] == "42"
    assert "SECRET" not in env and "GIT_CONFIG_VALUE_0" not in env
    assert "t" not in env.values()


# ------------------------------------------------------------- runner env = runtime.launch_env
NODE_ENV = {"PATH": "/usr/bin:/bin", "USER": "sw-alice", "CUDA_VISIBLE_DEVICES": "1,3",
            "SLURM_JOB_ID": "9", "SLURM_RESTART_COUNT": "0", "HOME": "/home/sw-alice"}


@pytest.mark.parametrize("runtime", ["apptainer", "charliecloud"])
@pytest.mark.parametrize("base", [NODE_ENV, {"PATH": "/bin"}, {"USER": "", "PORT": "1"}])
def test_runner_container_env_is_the_runtime_rule(runtime, base):
    """The runner cannot import container_images on the node: its copy of launch_env must
    give exactly what container_images.runtime.launch_env gives."""
    from container_images import runtime as rt
    from git_gateway.node import container_env, spec

    assert spec.CONTAINER_PASSTHROUGH == rt.PASSTHROUGH_ENV
    names = ["CUDA_VISIBLE_DEVICES", "PORT", "SLIPWAY_JOB_ID"]
    assert container_env.container_launch_env(runtime, base, names) == rt.launch_env(runtime, base, names)
    assert container_env.container_launch_env(runtime, base) == rt.launch_env(runtime, base)


def test_spec_input_limit_is_the_runtimes():
    """The node's spec and container_images agree on how many inputs a job binds, and on what a
    bind path may not hold."""
    from container_images import runtime as rt
    from git_gateway.node import spec

    assert spec.MAX_READONLY_PATHS == len(rt.INPUT_MOUNTS) == 5
    for bad in ("/a:b", "/a,b", "rel"):
        with pytest.raises(rt.InvalidContainerSpec):
            rt.container_argv("apptainer", "/i.sif", "/w", ["true"], {}, binds=rt.job_binds([bad]))
        with pytest.raises(SpecError):
            RunnerSpec.from_dict(dict(SPEC, readonly_paths=[bad]))


def test_runner_env_for_apptainer_carries_cuda_port_and_slipway_vars():
    from git_gateway.node.container_env import launch_env, runtime_of

    argv = ["apptainer", "exec", "--nv", "--cleanenv", "--containall", "--bind", "/w:/work",
            "--pwd", "/work", "/img/python.sif", "/usr/bin/env", "PORT=12345", "bash", "x.sh"]
    s = RunnerSpec.from_dict(dict(SPEC, container_argv=argv))
    assert runtime_of(s) == "apptainer"
    env = launch_env(s, dict(NODE_ENV, SECRET="x"))
    assert env["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "1,3"
    assert env["APPTAINERENV_PORT"] == "12345"
    assert env["APPTAINERENV_SLIPWAY_JOB_ID"] == "42"
    assert env["APPTAINERENV_SLIPWAY_BRANCH"] == "exp-1"
    assert env["APPTAINERENV_SLIPWAY_COMMIT"] == "a" * 40
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3" and env["USER"] == "sw-alice"
    assert "SECRET" not in env and "t" not in env.values()
    assert not any(k.startswith("APPTAINERENV_SLURM") for k in env)


def test_runner_env_for_charliecloud_and_plain_commands():
    from git_gateway.node.container_env import launch_env, runtime_of

    ch = RunnerSpec.from_dict(dict(SPEC, container_argv=["/usr/bin/ch-run", "--", "true"]))
    assert runtime_of(ch) == "charliecloud"
    env = launch_env(ch, {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0"})
    assert env["USER"] and env["CUDA_VISIBLE_DEVICES"] == "0" and env["PORT"] == "12345"
    assert not any(k.startswith("APPTAINERENV_") for k in env)
    plain = RunnerSpec.from_dict(SPEC)          # bash on the host (tests)
    assert runtime_of(plain) is None
    assert launch_env(plain, {"PATH": "/bin"}) == child_env(plain, {"PATH": "/bin"})
    # the spec's explicit runtime wins over the program name
    forced = RunnerSpec.from_dict(dict(SPEC, container_runtime="apptainer"))
    assert "APPTAINERENV_PORT" in launch_env(forced, {"PATH": "/bin"})
    for bad in ({"container_runtime": "podman"}, {"passthrough_env": ["BAD NAME"]},
                {"push_retry_seconds": -1}, {"stop_push_seconds": "soon"}):
        with pytest.raises(SpecError):
            RunnerSpec.from_dict(dict(SPEC, **bad))


# ------------------------------------------------------------------------- push retries
def _out(flag, summary="", stderr="", rc=1):
    return pushing.PushOutcome(flag in (" ", "+", "*", "="), flag, summary, rc, stderr)


def test_which_push_failures_are_retried():
    assert pushing.is_transient(_out(None, stderr="fatal: unable to access 'http://h/': "
                                                   "Failed to connect to h port 80: Connection refused"))
    assert pushing.is_transient(_out(None, stderr="error: RPC failed; HTTP 502"))
    assert pushing.is_transient(_out("!", "[remote rejected] (pre-receive hook declined)"))
    assert not pushing.is_transient(_out("!", "[rejected] (stale info)"))
    assert not pushing.is_transient(_out("!", "[rejected] (fetch first)"))
    assert not pushing.is_transient(_out(None, stderr="fatal: Authentication failed for 'http://h/'"))
    assert not pushing.is_transient(_out(None, stderr="fatal: repository 'http://h/x.git/' not found"))
    assert not pushing.is_transient(_out(" ", "[new branch]", rc=0))


def test_push_timeout_never_outlasts_the_deadline():
    assert pushing.push_timeout(None) == 120            # no deadline: the plain hang guard
    assert pushing.push_timeout(150.0) == 120           # far deadline: still the hang guard
    assert pushing.push_timeout(30.0) == 30             # after a TERM (stop_push_seconds)
    assert pushing.push_timeout(12.5) == 12.5
    assert pushing.push_timeout(1.0) == 5               # the floor: a push is always made
    assert pushing.push_timeout(-3.0) == 5


def test_hanging_push_after_term_ends_by_the_deadline(monkeypatch):
    """A deadline ~30 s away (stop_push_seconds after a TERM) with a push that hangs until its
    timeout: no push may run past the deadline (+ the 5 s floor), so the runner is done well
    before the portal's hard cancel (cancel_grace 60 s + KillWait) SIGKILLs it mid-push."""
    clock = [1000.0]
    monkeypatch.setattr(pushing.time, "monotonic", lambda: clock[0])
    timeouts = []

    def hanging_push(cwd, env, refspec, *, lease=None, timeout=None):
        timeouts.append(timeout)
        clock[0] += timeout                                  # hangs until killed
        return pushing.PushOutcome(False, None, "timed out", 124, "push timed out")

    def sleep(s):
        clock[0] += s

    monkeypatch.setattr(pushing, "push", hanging_push)
    deadline = clock[0] + 30.0
    out, n = pushing.push_with_retry("/w", {}, "x:y", deadline=deadline, sleep=sleep)
    assert not out.ok and n == len(timeouts) >= 1
    assert timeouts[0] == 30.0 and all(t <= 30.0 for t in timeouts)
    assert clock[0] <= deadline + pushing.MIN_PUSH_TIMEOUT

    # commit_back makes two such pushes (results ref, then branch): both bounded the same way
    timeouts.clear()
    clock[0] = 2000.0
    deadline = clock[0] + 30.0
    for _ in range(2):
        pushing.push_with_retry("/w", {}, "x:y", deadline=deadline, sleep=sleep)
    assert max(timeouts) <= 30.0
    assert clock[0] <= deadline + 2 * pushing.MIN_PUSH_TIMEOUT
    assert clock[0] - 2000.0 < 60             # TERM -> done, well inside cancel_grace


def test_push_with_retry_backs_off_until_the_deadline(monkeypatch):
    calls, sleeps = [], []
    down = _out(None, stderr="Connection refused")
    monkeypatch.setattr(pushing, "push", lambda *a, **kw: calls.append(a) or down)
    clock = [1000.0]
    monkeypatch.setattr(pushing.time, "monotonic", lambda: clock[0])

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    out, n = pushing.push_with_retry("/w", {}, "x:y", deadline=1000.0 + 60, sleep=sleep)
    assert not out.ok and n == len(calls) == len(sleeps) + 1
    assert sleeps[:6] == [0.5, 1, 2, 4, 8, 15] and max(sleeps) == 15
    assert sum(sleeps) <= 60 and sum(sleeps) + 15 > 60       # used the time it was given
    # a definite answer is not retried; success stops at once; max_attempts bounds the count
    monkeypatch.setattr(pushing, "push", lambda *a, **kw: _out("!", "[rejected] (stale info)"))
    assert pushing.push_with_retry("/w", {}, "x:y", deadline=clock[0] + 60, sleep=sleep)[1] == 1
    calls.clear()
    monkeypatch.setattr(pushing, "push", lambda *a, **kw: calls.append(a) or down)
    assert pushing.push_with_retry("/w", {}, "x:y", deadline=None, max_attempts=3,
                                   sleep=sleep)[1] == 3
    # the deadline already passed: still one push
    calls.clear()
    assert pushing.push_with_retry("/w", {}, "x:y", deadline=clock[0] - 1, sleep=sleep)[1] == 1


def test_port_taken_on_the_node_is_replaced_by_a_free_one():
    """PORT recorded at submit time may be taken on the node the job lands on: the runner
    moves the job to a free port in 10000-65535 (the started event tells the portal)."""
    import socket

    from git_gateway.node.ports import ensure_free_port, port_is_free
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    try:
        assert not port_is_free(taken)
        spec = RunnerSpec.from_dict(dict(SPEC, env={"PORT": str(taken)}))
        got = ensure_free_port(spec)
        assert got != taken and 10000 <= got <= 65535 and spec.env["PORT"] == str(got)
        assert port_is_free(got)
    finally:
        busy.close()
    # the portal's configured range is narrower: the job is moved only within it
    narrow = RunnerSpec.from_dict(dict(SPEC, env={"PORT": "20005"}, port_min=20000,
                                       port_max=20009))
    tried = []

    def only_20007_free(p):
        tried.append(p)
        return p == 20007

    assert ensure_free_port(narrow, is_free=only_20007_free) == 20007
    assert narrow.env["PORT"] == "20007"
    assert all(20000 <= p <= 20009 for p in tried) and len(tried) == len(set(tried))
    # every port of a small range is tried (no random misses); none free: PORT stays
    none_free = RunnerSpec.from_dict(dict(SPEC, env={"PORT": "20005"}, port_min=20000,
                                          port_max=20009))
    tried.clear()
    assert ensure_free_port(none_free, is_free=lambda p: tried.append(p) and False) == 20005
    assert sorted(tried) == list(range(20000, 20010)) and none_free.env["PORT"] == "20005"
    free = RunnerSpec.from_dict(dict(SPEC, env={"PORT": "23456"}))
    assert ensure_free_port(free, is_free=lambda p: True) == 23456 and free.env["PORT"] == "23456"
    assert ensure_free_port(RunnerSpec.from_dict(dict(SPEC, env={}))) is None


def test_job_git_runs_no_hook_or_fsmonitor_the_job_planted(tmp_path):
    """The job's code can write its checkout's .git; the runner's git (on the host, after the
    container) must not run a hook or an fsmonitor command planted there."""
    import subprocess

    from git_gateway.node import gitops

    repo = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    pwned = tmp_path / "pwned"
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {pwned}\n")
    hook.chmod(0o755)
    monitor = tmp_path / "monitor.sh"
    monitor.write_text(f"#!/bin/sh\ntouch {pwned}.fsmonitor\n")
    monitor.chmod(0o755)
    subprocess.run(["git", "-C", str(repo), "config", "core.fsmonitor", str(monitor)], check=True)
    (repo / "f").write_text("x")
    env = gitops.git_env("http://127.0.0.1:9/git/t/p.git", "job:1", "tok", workdir=str(repo))
    assert env["GIT_CONFIG_KEY_2"] == "core.hooksPath" and \
        env["GIT_CONFIG_VALUE_2"] == str(tmp_path / "git-hooks")   # beside the checkout, not in it
    env.update(GIT_AUTHOR_NAME="a", GIT_AUTHOR_EMAIL="a@b", GIT_COMMITTER_NAME="a",
               GIT_COMMITTER_EMAIL="a@b")
    gitops.run_git(["add", "-A"], str(repo), env)
    gitops.run_git(["status", "--porcelain"], str(repo), env)
    gitops.run_git(["commit", "-q", "-m", "results"], str(repo), env)
    assert not pwned.exists() and not (tmp_path / "pwned.fsmonitor").exists()
    # the same commit without these settings does run the planted hook (the test is not vacuous)
    (repo / "g").write_text("y")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env={**env, "GIT_CONFIG_COUNT": "0"})
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "x"], check=True,
                   env={**env, "GIT_CONFIG_COUNT": "0"})
    assert pwned.exists()


def test_a_push_is_served_by_receive_pack_itself_as_http_backend_would(tmp_path):
    """The direct path (git_gateway.receive_pack) answers the push's ref advertisement with the
    same bytes and content type as `git http-backend`; fetches, gzip bodies, protocol v2 and
    unexpected content types keep going through http-backend."""
    from git_gateway import receive_pack
    repos.create_repo(tmp_path / "r", "t", "p")
    answers = {}
    for direct in (True, False):
        app = GitHttpApp(tmp_path / "r", lambda *a: Principal("alice"), "http://x", "s",
                         tmp_path / "l", direct_receive_pack=direct)
        answers[direct] = _call(app, "/git/t/p.git/info/refs", query="service=git-receive-pack",
                                auth=("alice", "pw"))
        app.close()
    (st1, h1, b1), (st0, h0, b0) = answers[True], answers[False]
    assert st1.startswith("200") and st0.startswith("200")
    assert h1["Content-Type"] == h0["Content-Type"] == "application/x-git-receive-pack-advertisement"
    assert b1 == b0 and b1.startswith(receive_pack.ADVERTISEMENT_HEAD)
    assert "no-cache" in h1["Cache-Control"]

    def applies(method, rest, query="", ctype="", enc="", proto=""):
        environ = {"REQUEST_METHOD": method, "QUERY_STRING": query, "CONTENT_TYPE": ctype,
                   "HTTP_CONTENT_ENCODING": enc}
        return receive_pack.applies(environ, rest, {"GIT_PROTOCOL": proto} if proto else {})
    assert applies("GET", "/info/refs", "service=git-receive-pack")
    assert applies("POST", "/git-receive-pack", ctype=receive_pack.REQUEST_TYPE)
    assert not applies("GET", "/info/refs", "service=git-upload-pack")
    assert not applies("POST", "/git-upload-pack", ctype="application/x-git-upload-pack-request")
    assert not applies("POST", "/git-receive-pack", ctype=receive_pack.REQUEST_TYPE, enc="gzip")
    assert not applies("POST", "/git-receive-pack", ctype="text/plain")
    assert not applies("GET", "/info/refs", "service=git-receive-pack", proto="version=2")
    env = {"REMOTE_USER": "alice", "REMOTE_ADDR": "10.0.0.5"}
    assert receive_pack.argv("git", env, advertise=False) == \
        ["git", "receive-pack", "--stateless-rpc", "."]
    assert (env["GIT_COMMITTER_NAME"], env["GIT_COMMITTER_EMAIL"]) == \
        ("alice", "alice@http.10.0.0.5")       # the reflog's identity, as http-backend sets it
