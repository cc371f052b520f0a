"""JupyterLab in Slipway's "python" image (issue 12, docs/WORKSPACES.md).

The pins: ``container_images/jupyter-requirements.txt`` is the one list; the local build installs
it (catalog.json ``local_recipe.pip_requirements``) and the Apptainer .def files carry the same
lines verbatim. The real tests run the local ch-run image as the job user (sw-alice when the
tests run as root), the way a workspace runs: ``jupyter lab`` with the credential only in the
environment (``JUPYTER_TOKEN``, passed through ch-run's environment, never in argv), HOME on
the private /tmp, a scratch directory bound at /work.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.job_user import job_user_or_skip

from container_images.catalog import Catalog
from container_images.runtime import PASSTHROUGH_ENV, container_argv, launch_env

HERE = Path(__file__).resolve().parents[2] / "container_images"
REQS = HERE / "jupyter-requirements.txt"
CACHE = Path(os.environ.get("SLIPWAY_TEST_IMAGE_CACHE", "/var/tmp/slipway-images"))
IMAGE = CACHE / "python"
JOB_USER = os.environ.get("SLIPWAY_TEST_JOB_USER", "sw-alice")
CH_RUN = shutil.which("ch-run")
BASE_URL = "/workspaces/7/lab/"
PIN_RE = re.compile(r'^([a-z0-9][a-z0-9._-]*)==([0-9][^ ;]*)( ; python_version (<|>=) "3\.\d+")?$')


def pins() -> list[str]:
    return [ln for ln in REQS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def pinned(name: str) -> str:
    found = {m.group(2) for m in map(PIN_RE.match, pins()) if m and m.group(1) == name}
    assert len(found) == 1, f"{name} must be pinned once, for every Python, in {REQS.name}"
    return found.pop()


# ------------------------------------------------------------------------ the pinned list
def test_every_requirement_is_pinned_exactly():
    lines = pins()
    assert len(lines) > 50  # the whole dependency tree, not just the top
    for ln in lines:
        assert PIN_RE.match(ln), f"not an exact pin: {ln!r}"
    assert pinned("jupyterlab").startswith("4.")
    assert pinned("jupyter-server").startswith("2.")
    for name in ("jupyter-server-terminals", "terminado", "jupyter-client", "jupyter-core"):
        pinned(name)  # terminals and the kernel/terminal APIs the idle policy reads
    names = [m.group(1) for m in map(PIN_RE.match, lines)]
    assert names == sorted(names)
    # the same package twice only with complementary markers (Python 3.10 vs 3.11+)
    for name in set(names):
        markers = sorted(m.group(4) or "" for m in map(PIN_RE.match, lines) if m.group(1) == name)
        assert markers in (["" ], ["<"], [">="], ["<", ">="]), (name, markers)


@pytest.mark.parametrize("def_file", ["python.def", "pytorch.def"])
def test_def_files_install_the_same_pins(def_file):
    text = (HERE / def_file).read_text()
    m = re.search(r"<<'SLIPWAY_JUPYTER_PINS'\n(.*?)\nSLIPWAY_JUPYTER_PINS\n", text, re.S)
    assert m, f"{def_file} has no JupyterLab pin list in %post"
    assert m.group(1).splitlines() == pins(), f"{def_file}: pins differ from {REQS.name}"
    post = text.split("%post", 1)[1].split("%runscript", 1)[0]
    assert "--requirement /tmp/slipway-jupyter/requirements.txt" in post
    test = text.split("%test", 1)[1]
    assert f'test "$(jupyter lab --version)" = "{pinned("jupyterlab")}"' in test


def test_catalog_marks_the_jupyter_images():
    cat = Catalog.load()
    assert cat.has_jupyter("python") and cat.has_jupyter("pytorch")
    assert not cat.has_jupyter("busybox")
    recipe = cat.get("python").local_recipe
    assert recipe["pip_requirements"] == REQS.name
    assert "python3-pip" in recipe["include"]


# ------------------------------------------------------------------ the real image (ch-run)
def _image_problem() -> str | None:
    if CH_RUN is None:
        return "ch-run is not installed"
    if not (IMAGE / "usr" / "bin" / "python3").exists():
        return f"the python image is not built at {IMAGE} (container_images/build --dest {CACHE} python)"
    if not (IMAGE / "usr" / "local" / "bin" / "jupyter").exists():
        return (f"the python image at {IMAGE} predates JupyterLab; rebuild it: "
                f"container_images/build --dest {CACHE} python")
    return None


needs_image = pytest.mark.skipif(_image_problem() is not None, reason=str(_image_problem()))


@pytest.fixture(scope="module")
def job_user() -> pwd.struct_passwd:
    return job_user_or_skip(JOB_USER)


@pytest.fixture
def workdir(job_user):
    base = Path(tempfile.mkdtemp(prefix="slipway-lab-", dir="/tmp"))
    os.chmod(base, 0o755)
    (base / "hello.txt").write_text("hi\n")
    for p in (base, base / "hello.txt"):
        os.chown(p, job_user.pw_uid, job_user.pw_gid)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _popen(user: pwd.struct_passwd, workdir: Path, command: list[str], extra_env: dict[str, str],
           **kw) -> subprocess.Popen:
    """Start COMMAND in the image as the workspace runner would: container_argv + launch_env,
    the extra variables passed through the environment (not argv)."""
    argv = container_argv("charliecloud", IMAGE, workdir, command, {},
                          passthrough=(*PASSTHROUGH_ENV, *extra_env))
    env = launch_env("charliecloud", {"PATH": "/usr/local/bin:/usr/bin:/bin", "USER": user.pw_name,
                                      "LANG": "C.UTF-8", **extra_env})
    if os.geteuid() == 0 and user.pw_uid != 0:
        kw.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    return subprocess.Popen(argv, env=env, cwd=workdir, start_new_session=True, **kw)


@needs_image
def test_jupyter_lab_version_is_the_pinned_one(job_user, workdir):
    proc = _popen(job_user, workdir, ["jupyter", "lab", "--version"], {},
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == pinned("jupyterlab")


@needs_image
def test_a_notebook_runs_in_the_image(job_user, workdir):
    """ipykernel, ZeroMQ and nbclient work for the job user: a cell prints 6*7."""
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {},
                     "outputs": [], "source": "print(6*7)"}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (workdir / "nb.ipynb").write_text(json.dumps(nb))
    os.chown(workdir / "nb.ipynb", job_user.pw_uid, job_user.pw_gid)
    proc = _popen(job_user, workdir, ["jupyter", "nbconvert", "--to", "notebook", "--execute",
                                      "--output", "ran.ipynb", "/work/nb.ipynb"], {},
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    ran = json.loads((workdir / "ran.ipynb").read_text())
    assert "".join(ran["cells"][0]["outputs"][0]["text"]) == "42\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url: str, token: str | None, method: str = "GET", body: dict | None = None):
    req = urllib.request.Request(url, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("Authorization", f"token {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as exc:
        return exc.code, None


@needs_image
def test_jupyter_lab_serves_kernels_and_terminals_with_the_token_only(job_user, workdir):
    token = os.urandom(24).hex()
    port = _free_port()
    log = tempfile.TemporaryFile()
    cmd = ["jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.base_url={BASE_URL}", "--ServerApp.root_dir=/work"]
    proc = _popen(job_user, workdir, cmd, {"JUPYTER_TOKEN": token}, stdout=log, stderr=log)
    api = f"http://127.0.0.1:{port}{BASE_URL}api"

    def server_log() -> str:
        log.seek(0)
        return log.read().decode(errors="replace")[-3000:]

    try:
        assert token not in " ".join(proc.args)  # the credential is not in argv
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"jupyter lab exited {proc.returncode}:\n{server_log()}"
            try:
                status, _ = _call(f"{api}/status", token)
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.3)
        assert status == 200, f"no answer on {api}/status:\n{server_log()}"

        assert _call(f"{api}/status", None)[0] in (401, 403)
        assert _call(f"{api}/status", "not-the-token")[0] in (401, 403)
        assert _call(f"{api}/kernels", None, "POST", {"name": "python3"})[0] in (401, 403)

        code, contents = _call(f"{api}/contents", token)
        assert code == 200 and "hello.txt" in {c["name"] for c in contents["content"]}  # /work

        code, kernel = _call(f"{api}/kernels", token, "POST", {"name": "python3"})
        assert code == 201, server_log()
        code, kernels = _call(f"{api}/kernels", token)
        assert code == 200
        mine = [k for k in kernels if k["id"] == kernel["id"]]
        assert mine and "execution_state" in mine[0] and mine[0]["last_activity"]
        # the server learns "idle" only once a client talks to the kernel (the WebSocket); the
        # kernel running code in this image is test_a_notebook_runs_in_the_image's part
        assert mine[0]["execution_state"] in ("starting", "idle", "busy")

        code, terms = _call(f"{api}/terminals", token)
        assert code == 200 and terms == []
        code, term = _call(f"{api}/terminals", token, "POST", {})
        assert code == 200, server_log()
        code, terms = _call(f"{api}/terminals", token)
        assert [t["name"] for t in terms] == [term["name"]] and terms[0]["last_activity"]

        assert _call(f"{api}/kernels/{kernel['id']}", token, "DELETE")[0] == 204
        assert _call(f"{api}/terminals/{term['name']}", token, "DELETE")[0] == 204
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        log.close()
