"""Real containers: build (or reuse) the local images and run commands in them with ch-run,
as an unprivileged Unix user, through the exact argv container_argv() produces.

Images live in $SLIPWAY_TEST_IMAGE_CACHE (default /var/tmp/slipway-images, world-readable, kept
between runs: the python image takes about a minute to debootstrap the first time).
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from container_images.catalog import Catalog
from container_images.runtime import Bind, container_argv, job_binds, launch_env

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "container_images" / "build"
CACHE = Path(os.environ.get("SLIPWAY_TEST_IMAGE_CACHE", "/var/tmp/slipway-images"))
JOB_USER = os.environ.get("SLIPWAY_TEST_JOB_USER", "sw-alice")

pytestmark = pytest.mark.skipif(shutil.which("ch-run") is None, reason="ch-run not installed")

HOSTILE_ENV = {
    "PORT": "12345",
    "SPACES": "  two  spaces  ",
    "QUOTES": "it's \"quoted\" 'single'",
    "WRAPPED": "'wrapped in single quotes'",
    "SUBST": "$(touch /work/pwned) `id` ${HOME} $PATH",
    "NEWLINES": "line1\nline2\n",
    "BACKSLASH": "a\\b\\\\c\\n",
    "GLOB": "* ? [a-z]",
    "SEMI": "x; rm -rf / && echo no | cat",
    "EMPTY": "",
    "EQUALS": "a=b=c",
    "COMMA": "a,b,c",
    "UNICODE": "naïve ☃",
    "lower_case": "ok",
}


# -- fixtures -----------------------------------------------------------------------------------
def _build(*names: str) -> dict[str, dict]:
    proc = subprocess.run([sys.executable, str(BUILD), "--dest", str(CACHE), "--json", *names],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"container_images/build failed:\n{proc.stderr}")
    return {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}


@pytest.fixture(scope="session")
def job_user() -> pwd.struct_passwd:
    """The unprivileged user jobs run as: sw-alice when we are root, else ourselves."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.getuid())
    try:
        return pwd.getpwnam(JOB_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", JOB_USER], capture_output=True)
        return pwd.getpwnam(JOB_USER)  # (or another process created it meanwhile)


@pytest.fixture(scope="session")
def busybox_image() -> Path:
    res = _build("busybox")["busybox"]
    return Path(res["path"])


@pytest.fixture(scope="session")
def python_image() -> Path:
    if os.geteuid() != 0 and not (CACHE / "python.stamp.json").exists():
        pytest.skip("the python image needs root to build (debootstrap); run container_images/build as root")
    res = _build("python")["python"]
    return Path(res["path"])


@pytest.fixture
def jobdir(job_user):
    """A job directory tree the job user can reach: work/ and output/ owned by the user, input/
    owned by root and not writable by the user (how inputs must be staged for ch-run)."""
    base = Path(tempfile.mkdtemp(prefix="slipway-ct-", dir="/tmp"))
    os.chmod(base, 0o755)
    work, out, inp = base / "work", base / "output", base / "input"
    for d in (work, out, inp):
        d.mkdir()
    (inp / "data.txt").write_text("input data\n")
    os.chmod(inp, 0o755)
    os.chmod(inp / "data.txt", 0o644)
    for d in (work, out):
        os.chown(d, job_user.pw_uid, job_user.pw_gid)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def run_as(user: pwd.struct_passwd, argv: list[str], cwd: Path, host_env: dict | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    """Execute argv the way the node-side runner does: as the job user, argv only, with
    launch_env() over a Slurm-like job environment."""
    environ = {"PATH": "/usr/local/bin:/usr/bin:/bin", "USER": user.pw_name, "HOME": user.pw_dir,
               "SLURM_JOB_ID": "42", "HOST_ONLY_SECRET": "must-not-leak", **(host_env or {})}
    kwargs = {}
    if os.geteuid() == 0 and user.pw_uid != 0:
        kwargs = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    return subprocess.run(argv, env=launch_env("charliecloud", environ), cwd=cwd,
                          capture_output=True, timeout=timeout, **kwargs)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout.decode()


# -- busybox --------------------------------------------------------------------------------------
def test_user_namespaces_available():
    """Unprivileged ch-run needs user namespaces; report the knobs if they are off."""
    max_ns = Path("/proc/sys/user/max_user_namespaces")
    assert not max_ns.exists() or int(max_ns.read_text()) > 0, "user.max_user_namespaces is 0"
    clone = Path("/proc/sys/kernel/unprivileged_userns_clone")  # Debian-patched kernels only
    assert not clone.exists() or clone.read_text().strip() == "1", "kernel.unprivileged_userns_clone=0"


def test_busybox_workdir_bind_writes_as_job_user(busybox_image, jobdir, job_user):
    work = jobdir / "work"
    argv = container_argv("charliecloud", str(busybox_image), str(work),
                          ["sh", "-c", 'pwd; id -u; echo hello > /work/made-inside.txt; cat /etc/slipway-image'],
                          {})
    out = ok(run_as(job_user, argv, work)).splitlines()
    assert out[0] == "/work"
    assert out[1] == str(job_user.pw_uid)          # same uid inside: no root in the container
    assert json.loads(out[2])["name"] == "busybox"  # the image's own root
    made = work / "made-inside.txt"
    assert made.read_text() == "hello\n"
    st = made.stat()
    assert (st.st_uid, st.st_gid) == (job_user.pw_uid, job_user.pw_gid)


def test_busybox_is_a_different_root(busybox_image, jobdir, job_user):
    work = jobdir / "work"
    assert Path("/usr/bin/ch-run").exists()
    argv = container_argv("charliecloud", str(busybox_image), str(work),
                          ["sh", "-c", "cat /etc/os-release; test -e /usr/bin/ch-run && echo HOST-LEAK; "
                                       "test -e /usr/bin/python3 && echo HOST-PYTHON; echo done"], {})
    out = ok(run_as(job_user, argv, work))
    assert "ID=slipway-busybox" in out
    assert "HOST-LEAK" not in out and "HOST-PYTHON" not in out
    assert out.rstrip().endswith("done")


def test_busybox_image_is_read_only_and_tmp_is_private(busybox_image, jobdir, job_user):
    work = jobdir / "work"
    marker = f"slipway-private-tmp-{os.getpid()}-{time.monotonic_ns()}"
    argv = container_argv("charliecloud", str(busybox_image), str(work),
                          ["sh", "-c", f"touch /etc/nope 2>/dev/null && echo IMAGE-WRITABLE; "
                                       f"echo x > /tmp/{marker} && echo tmp-ok"], {})
    out = ok(run_as(job_user, argv, work))
    assert "IMAGE-WRITABLE" not in out and "tmp-ok" in out
    assert not (Path("/tmp") / marker).exists()     # container /tmp is a private tmpfs
    assert not (busybox_image / "etc" / "nope").exists()


def test_busybox_env_values_and_passthrough(busybox_image, jobdir, job_user):
    work = jobdir / "work"
    names = sorted(HOSTILE_ENV)
    # busybox-static has no printenv: expand each (trusted) name once and print the value as data.
    script = 'for n in "$@"; do eval "v=\\"\\${$n}\\""; printf "%s\\036" "$v"; done'
    argv = container_argv("charliecloud", str(busybox_image), str(work),
                          ["sh", "-c", script, "sh", *names, "CUDA_VISIBLE_DEVICES"], HOSTILE_ENV)
    out = ok(run_as(job_user, argv, work, {"CUDA_VISIBLE_DEVICES": "1,3"}))
    values = out.split("\x1e")[:-1]
    got = dict(zip([*names, "CUDA_VISIBLE_DEVICES"], values))
    assert got == {**HOSTILE_ENV, "CUDA_VISIBLE_DEVICES": "1,3"}
    assert not (work / "pwned").exists()


def test_busybox_binds_input_and_output(busybox_image, jobdir, job_user):
    work, inp, outp = jobdir / "work", jobdir / "input", jobdir / "output"
    argv = container_argv(
        "charliecloud", str(busybox_image), str(work),
        ["sh", "-c", "cat /input0/data.txt; (echo bad > /input0/x) 2>/dev/null || echo input-protected; "
                     "echo result > /output/result.txt && echo output-ok"],
        {}, binds=job_binds([str(inp)], str(outp)))
    out = ok(run_as(job_user, argv, work))
    assert out.splitlines() == ["input data", "input-protected", "output-ok"]
    assert not (inp / "x").exists()
    res = outp / "result.txt"
    assert res.read_text() == "result\n" and res.stat().st_uid == job_user.pw_uid


def test_missing_bind_destination_fails_loudly(busybox_image, jobdir, job_user):
    work = jobdir / "work"
    argv = container_argv("charliecloud", str(busybox_image), str(work), ["true"], {},
                          binds=[Bind(str(jobdir / "input"), "/not-in-image")])
    proc = run_as(job_user, argv, work)
    assert proc.returncode != 0
    assert b"not-in-image" in proc.stderr


def test_exit_status_propagates(busybox_image, jobdir, job_user):
    work = jobdir / "work"
    argv = container_argv("charliecloud", str(busybox_image), str(work), ["sh", "-c", "exit 7"], {})
    assert run_as(job_user, argv, work).returncode == 7


# -- python ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_python_print_1(python_image, jobdir, job_user):
    work = jobdir / "work"
    argv = container_argv("charliecloud", str(python_image), str(work), ["python3", "-c", "print(1)"], {})
    assert ok(run_as(job_user, argv, work)) == "1\n"


@pytest.mark.slow
def test_python_sees_exact_env_and_argv(python_image, jobdir, job_user):
    work = jobdir / "work"
    code = ("import json, os, sys; "
            "json.dump({'env': dict(os.environ), 'argv': sys.argv[1:], 'cwd': os.getcwd(), "
            "'uid': os.getuid(), 'image': open('/etc/slipway-image').read(), "
            "'host_tool': os.path.exists('/usr/bin/ch-run')}, sys.stdout)")
    args = ["a b", "$(id)", "'q'", "--", "x\ny", ""]
    argv = container_argv("charliecloud", str(python_image), str(work), ["python3", "-c", code, *args],
                          HOSTILE_ENV, gpus=True)
    res = json.loads(ok(run_as(job_user, argv, work, {"CUDA_VISIBLE_DEVICES": "0,2"})))
    env = res["env"]
    for k, v in HOSTILE_ENV.items():
        assert env[k] == v, k
    assert env["CUDA_VISIBLE_DEVICES"] == "0,2"
    # Nothing else of the host's environment gets in (LC_CTYPE is Python's own PEP 538 coercion).
    assert set(env) - set(HOSTILE_ENV) <= {"PATH", "HOME", "CUDA_VISIBLE_DEVICES", "CH_RUNNING", "LC_CTYPE"}
    assert "HOST_ONLY_SECRET" not in env and "SLURM_JOB_ID" not in env
    assert res["argv"] == args
    assert res["cwd"] == "/work" and res["uid"] == job_user.pw_uid
    assert json.loads(res["image"])["name"] == "python"
    assert res["host_tool"] is False
    assert not (work / "pwned").exists()


@pytest.mark.slow
def test_python_writes_results_into_workdir(python_image, jobdir, job_user):
    work = jobdir / "work"
    argv = container_argv("charliecloud", str(python_image), str(work),
                          ["python3", "-c", "open('/work/metrics.json','w').write('{\"loss\": 0.5}')"], {})
    ok(run_as(job_user, argv, work))
    f = work / "metrics.json"
    assert json.loads(f.read_text()) == {"loss": 0.5}
    assert f.stat().st_uid == job_user.pw_uid


@pytest.mark.slow
def test_catalog_local_path_points_at_the_built_image(python_image):
    assert Catalog.load().local_path("python", CACHE, must_exist=True) == python_image
