"""Read-only /input0../input4 and a writable /output for ch-run jobs (git_gateway.node.readonly,
the runner's use of it) and the spec fields behind them (``readonly_paths``, ``output_dir``).

The container tests are real: the node program is copied the way it reaches a node (this folder
under a stub ``git_gateway/__init__.py``), run by the system python3 as the job's Unix user
(sw-alice when the tests run as root), and starts ch-run on the busybox image.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.job_user import job_user_or_skip

from git_gateway.node import readonly
from git_gateway.node import runner as runner_mod
from git_gateway.node.runner import Runner, bind_problem
from git_gateway.node.spec import RunnerSpec, SpecError

NODE_DIR = Path(readonly.__file__).resolve().parent
IMAGE = Path(os.environ.get("SLIPWAY_TEST_IMAGE_CACHE", "/var/tmp/slipway-images")) / "busybox"
JOB_USER = os.environ.get("SLIPWAY_TEST_JOB_USER", "sw-alice")
NODE_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
CH_RUN = shutil.which("ch-run")

SPEC = {"job_id": 7, "repo_url": "http://127.0.0.1:8000/git/team/proj.git",
        "username": "job:7", "token": "t", "commit": "b" * 40, "branch": "main",
        "workdir": "/jobs/7/work", "container_argv": ["ch-run", "/img", "--", "true"],
        "env": {}}


# ------------------------------------------------------------------------------------ spec
def test_spec_round_trip_with_inputs_and_output():
    d = dict(SPEC, readonly_paths=["/data/a", "/data/b"], output_dir="/jobs/7/output")
    s = RunnerSpec.from_dict(d)
    assert s.readonly_paths == ("/data/a", "/data/b") and s.output_dir == "/jobs/7/output"
    back = json.loads(s.to_json())
    assert back["readonly_paths"] == ["/data/a", "/data/b"]
    assert back["output_dir"] == "/jobs/7/output"
    assert RunnerSpec.from_dict(back) == s


def test_spec_without_them_is_todays_spec():
    s = RunnerSpec.from_dict(SPEC)
    assert s.readonly_paths == () and s.output_dir is None
    assert s.to_dict()["readonly_paths"] == [] and s.to_dict()["output_dir"] is None
    assert RunnerSpec.from_dict(s.to_dict()) == s


@pytest.mark.parametrize("over, match", [
    ({"readonly_paths": "/data/a"}, "readonly_paths must be a list"),
    ({"readonly_paths": [f"/d{i}" for i in range(6)]}, "holds 6 paths; at most 5"),
    ({"readonly_paths": ["data/a"]}, r"readonly_paths\[0\] 'data/a' must be an absolute path"),
    ({"readonly_paths": ["/a", "/data:x"]}, r"readonly_paths\[1\] .* contains ':'"),
    ({"readonly_paths": ["/data,x"]}, "contains ','"),
    ({"readonly_paths": ["/data\nx"]}, "control character"),
    ({"readonly_paths": ["/data\x00x"]}, "NUL"),
    ({"readonly_paths": ["/data/../etc"]}, "normalised"),
    ({"readonly_paths": ["/data/"]}, "normalised"),
    ({"readonly_paths": ["/"]}, "cannot be '/'"),
    ({"readonly_paths": [3]}, "must be a path string"),
    ({"output_dir": "out"}, "output_dir 'out' must be an absolute path"),
    ({"output_dir": "/jobs/7/out:put"}, "contains ':'"),
    ({"output_dir": "/jobs/7/out,put"}, "contains ','"),
    ({"output_dir": "/jobs/7/out\n"}, "control character"),
    ({"output_dir": 7}, "must be a path string"),
])
def test_spec_refuses_bad_paths(over, match):
    with pytest.raises(SpecError, match=match):
        RunnerSpec.from_dict(dict(SPEC, **over))


# ----------------------------------------------------------------------- runner, in-process
def test_wrapper_only_for_charliecloud_with_readonly_paths():
    ch = RunnerSpec.from_dict(dict(SPEC, readonly_paths=["/data/a"]))
    argv = Runner(ch).container_command()
    assert argv == [sys.executable, "-I", str(NODE_DIR / "readonly.py"), "/data/a", "--",
                    "ch-run", "/img", "--", "true"]
    assert Runner(RunnerSpec.from_dict(SPEC)).container_command() == ["ch-run", "/img", "--", "true"]
    app = RunnerSpec.from_dict(dict(SPEC, readonly_paths=["/data/a"], container_argv=[
        "apptainer", "exec", "--bind", "/data/a:/input0:ro", "/i.sif", "true"]))
    assert Runner(app).container_command() == list(app.container_argv)
    forced = RunnerSpec.from_dict(dict(SPEC, readonly_paths=["/data/a"],
                                       container_argv=["/opt/ch/bin/ch-run", "/img", "--", "x"],
                                       container_runtime="charliecloud"))
    assert Runner(forced).container_command()[3:] == ["/data/a", "--", "/opt/ch/bin/ch-run",
                                                      "/img", "--", "x"]


def test_bind_problem(tmp_path):
    out, inp = tmp_path / "output", tmp_path / "in"
    base = dict(SPEC, output_dir=str(out), readonly_paths=[str(inp)])
    assert "its /output directory" in bind_problem(RunnerSpec.from_dict(base))
    assert "does not exist on this node" in bind_problem(RunnerSpec.from_dict(base))
    out.write_text("x")
    assert "is not a directory" in bind_problem(RunnerSpec.from_dict(base))
    out.unlink()
    out.mkdir()
    assert bind_problem(RunnerSpec.from_dict(base)) == f"its input {inp} does not exist on this node"
    inp.mkdir()
    assert bind_problem(RunnerSpec.from_dict(base)) is None
    assert bind_problem(RunnerSpec.from_dict(SPEC)) is None


def test_runner_fails_the_job_before_the_entrypoint_when_output_is_missing(tmp_path, monkeypatch):
    posted = []
    spec = RunnerSpec.from_dict(dict(SPEC, workdir=str(tmp_path / "work"),
                                     output_dir=str(tmp_path / "nope"),
                                     container_argv=["sh", "-c", f"touch {tmp_path}/ran"]))
    r = Runner(spec, post=lambda url, token, event: posted.append(event))
    monkeypatch.setattr(r, "checkout", lambda: None)
    monkeypatch.setattr(runner_mod.Runner, "install_signal_handlers", lambda self: None)
    assert r.run() == 1
    assert not (tmp_path / "ran").exists()
    assert [e["event"] for e in posted] == ["finishing", "results"]
    assert posted[1]["message"] == (f"slipway: job 7 cannot start: its /output directory "
                                    f"{tmp_path}/nope does not exist on this node")


def test_wrapper_arguments_and_mountinfo_escapes(capsys):
    assert readonly.parse_args(["/a", "/b", "--", "ch-run", "--", "x"]) == (
        ["/a", "/b"], ["ch-run", "--", "x"])
    assert readonly.main(["/a", "ch-run"]) == 2
    assert readonly.main(["/a", "--"]) == 2
    assert readonly.main(["rel", "--", "true"]) == 2
    assert "must be absolute" in capsys.readouterr().err
    assert readonly._unescape(r"/data/with\040space\134x") == "/data/with space\\x"


# ----------------------------------------------------------------- real containers (ch-run)
needs_container = pytest.mark.skipif(
    CH_RUN is None or not (IMAGE / "bin" / "sh").exists(),
    reason=f"needs ch-run and the busybox image at {IMAGE} (container_images/build busybox)")


@pytest.fixture(scope="module")
def job_user() -> pwd.struct_passwd:
    return job_user_or_skip(JOB_USER)


@pytest.fixture
def node(job_user):
    """A node-like tree: the node program copied as it is shipped, an input version owned by
    the job user and writable on the host (only the read-only mount can stop a write), a
    root-owned read-only input (how the datastore stages them), work/ and output/."""
    base = Path(tempfile.mkdtemp(prefix="slipway-ro-", dir="/tmp"))
    os.chmod(base, 0o755)
    pkg = base / "node" / "git_gateway"
    shutil.copytree(NODE_DIR, pkg / "node", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "__init__.py").write_text("")
    for d in ("in", "sealed", "work", "output"):
        (base / d).mkdir()
    (base / "in" / "data.txt").write_text("input data\n")
    (base / "sealed" / "data.txt").write_text("sealed data\n")
    for p in base.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.chmod(base / "sealed" / "data.txt", 0o444)
    os.chmod(base / "sealed", 0o555)
    for d in (".", "in", "in/data.txt", "work", "output"):   # "." as a job dir: the user's
        os.chown(base / d, job_user.pw_uid, job_user.pw_gid)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def run_as(user: pwd.struct_passwd, argv: list[str], cwd: Path, timeout: float = 60
           ) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "USER": user.pw_name, "HOME": "/tmp",
           "LANG": "C.UTF-8"}
    kwargs = {}
    if os.geteuid() == 0 and user.pw_uid != 0:
        kwargs = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def ch_run(base: Path, inputs: list[Path], script: str) -> list[str]:
    binds = [f"--bind={p}:/input{i}" for i, p in enumerate(inputs)]
    return [CH_RUN, "--private-tmp", f"--bind={base}/work:/work", *binds,
            f"--bind={base}/output:/output", "--cd=/work", str(IMAGE), "--", "sh", "-c", script]


PROBE = ("cat /input0/data.txt; "
         "echo x > /input0/new.txt || echo INPUT-WRITE-FAILED; "
         "echo x >> /input0/data.txt || echo INPUT-APPEND-FAILED; "
         "echo result > /output/result.txt && echo OUTPUT-OK")


def _wrapper(base: Path) -> str:
    return str(base / "node" / "git_gateway" / "node" / "readonly.py")


@needs_container
def test_inputs_are_read_only_mounts_and_output_is_writable(node, job_user):
    proc = run_as(job_user, [NODE_PYTHON, "-I", _wrapper(node), str(node / "in"), "--",
                             *ch_run(node, [node / "in"], PROBE)], cwd=node / "work")
    assert proc.returncode == 0, proc
    assert "input data" in proc.stdout
    assert "INPUT-WRITE-FAILED" in proc.stdout and "INPUT-APPEND-FAILED" in proc.stdout
    assert proc.stderr.count("Read-only file system") == 2, proc.stderr
    assert "not read-only mounts" not in proc.stderr
    assert "OUTPUT-OK" in proc.stdout
    # nothing changed on the host's input; the output landed in the host dir, the user's file
    assert sorted(os.listdir(node / "in")) == ["data.txt"]
    assert (node / "in" / "data.txt").read_text() == "input data\n"
    result = node / "output" / "result.txt"
    assert result.read_text() == "result\n" and result.stat().st_uid == job_user.pw_uid
    # the read-only mount lived in the job's namespace only: the host's input stays writable
    assert str(node / "in") not in Path("/proc/self/mountinfo").read_text()
    assert run_as(job_user, ["sh", "-c", f"echo y > {node}/in/host.txt"], cwd=node).returncode == 0


@needs_container
def test_the_runner_starts_ch_run_through_the_wrapper(node, job_user):
    """Runner.run_child as the job user, from the copied node program: its inputs are read-only,
    its output writable, the exit status the entrypoint's."""
    spec = dict(SPEC, workdir=str(node / "work"), readonly_paths=[str(node / "in")],
                output_dir=str(node / "output"),
                container_argv=ch_run(node, [node / "in"], PROBE + "; exit 3"))
    (node / "spec.json").write_text(json.dumps(spec))
    os.chmod(node / "spec.json", 0o644)
    driver = ("import json, sys\n"
              "from git_gateway.node.runner import Runner, bind_problem\n"
              "from git_gateway.node.spec import RunnerSpec\n"
              "spec = RunnerSpec.from_dict(json.load(open(sys.argv[1])))\n"
              "assert bind_problem(spec) is None, bind_problem(spec)\n"
              "r = Runner(spec)\n"
              "print('ARGV', json.dumps(r.container_command()), flush=True)\n"
              "sys.exit(r.run_child())\n")
    proc = run_as(job_user, [NODE_PYTHON, "-c", driver, str(node / "spec.json")],
                  cwd=node / "node")
    assert proc.returncode == 3, proc
    argv = json.loads(proc.stdout.split("ARGV ", 1)[1].splitlines()[0])
    assert argv[:4] == [NODE_PYTHON, "-I", _wrapper(node), str(node / "in")]
    assert "INPUT-WRITE-FAILED" in proc.stdout and "OUTPUT-OK" in proc.stdout
    assert "Read-only file system" in proc.stderr
    assert sorted(os.listdir(node / "in")) == ["data.txt"]
    assert (node / "output" / "result.txt").read_text() == "result\n"


@needs_container
def test_an_output_the_user_cannot_write_fails_before_the_entrypoint(node, job_user):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory the job user cannot write")
    os.chown(node / "output", 0, 0)
    spec = RunnerSpec.from_dict(dict(SPEC, output_dir=str(node / "output")))
    driver = ("import json, sys\n"
              "from git_gateway.node.runner import bind_problem\n"
              "from git_gateway.node.spec import RunnerSpec\n"
              "print(bind_problem(RunnerSpec.from_dict(json.loads(sys.argv[1]))))\n")
    proc = run_as(job_user, [NODE_PYTHON, "-c", driver, json.dumps(spec.to_dict())],
                  cwd=node / "node")
    assert proc.stdout.strip() == (f"its /output directory {node}/output is not writable by "
                                   f"this user (uid {job_user.pw_uid})"), proc


@needs_container
def test_fallback_without_user_namespaces_warns_and_runs(node, job_user):
    """unshare refused (user namespaces off): a warning, and the command runs anyway; the
    root-owned 0444/0555 input still refuses writes (permissions), the output works."""
    code = ("import sys\n"
            f"sys.path.insert(0, {str(node / 'node')!r})\n"
            "from git_gateway.node import readonly\n"
            "def refused(flags):\n"
            "    raise readonly.NamespaceUnavailable(1, 'unshare: Operation not permitted')\n"
            "readonly._unshare = refused\n"
            "sys.exit(readonly.main(sys.argv[1:]))\n")
    proc = run_as(job_user, [NODE_PYTHON, "-I", "-c", code, str(node / "sealed"), "--",
                             *ch_run(node, [node / "sealed"], PROBE.replace("input data", ""))],
                  cwd=node / "work")
    assert proc.returncode == 0, proc
    assert ("slipway: warning: inputs are not read-only mounts on this node: unshare: Operation "
            "not permitted; they stay protected by file permissions") in proc.stderr
    assert "sealed data" in proc.stdout and "OUTPUT-OK" in proc.stdout
    assert "INPUT-WRITE-FAILED" in proc.stdout and "INPUT-APPEND-FAILED" in proc.stdout
    if job_user.pw_uid != 0:
        assert "Permission denied" in proc.stderr
    assert sorted(os.listdir(node / "sealed")) == ["data.txt"]


@needs_container
def test_mounts_below_an_input_are_read_only_too(node, job_user):
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) to mount a tmpfs below an input")
    sub = node / "in" / "sub"
    sub.mkdir()
    inner = [NODE_PYTHON, "-I", _wrapper(node), str(node / "in"), "--",
             *ch_run(node, [node / "in"], "echo x > /input0/sub/f || echo SUB-WRITE-FAILED")]
    script = (f"mount -t tmpfs -o mode=0777 slipway-test {sub} || exit 90; "
              f"exec setpriv --reuid={job_user.pw_uid} --regid={job_user.pw_gid} --clear-groups "
              f"-- \"$@\"")
    proc = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", script,
                           "sh", *inner], capture_output=True, text=True, timeout=60,
                          cwd=node / "work", env={"PATH": "/usr/bin:/bin", "USER": job_user.pw_name,
                                                  "HOME": "/tmp"})
    if proc.returncode == 90:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc
    assert "SUB-WRITE-FAILED" in proc.stdout and "Read-only file system" in proc.stderr


def test_a_mount_that_fails_warns_and_still_runs(job_user):
    """A read-only path that cannot be mounted (here: missing) costs a warning, not the job."""
    base = Path(tempfile.mkdtemp(prefix="slipway-ro-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        wrapper = base / "readonly.py"
        shutil.copy(NODE_DIR / "readonly.py", wrapper)
        os.chmod(wrapper, 0o644)
        proc = run_as(job_user, [NODE_PYTHON, "-I", str(wrapper), "/nonexistent-input", "--",
                                 "sh", "-c", "echo ran; id -u"], cwd=base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert proc.returncode == 0, proc
    assert proc.stdout.split() == ["ran", str(job_user.pw_uid)]
    assert ("inputs are not read-only mounts on this node: mount /nonexistent-input: No such file "
            "or directory; they stay protected by file permissions") in proc.stderr
