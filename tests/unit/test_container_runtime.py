"""container_images.runtime: exact argv for Apptainer and ch-run, and what is refused."""
from __future__ import annotations

import fnmatch
import string

import pytest
from hypothesis import given, settings, strategies as st

from container_images.runtime import (
    Bind,
    InvalidContainerSpec,
    container_argv,
    job_binds,
    launch_env,
    unset_globs_except,
)

CUDA_GLOBS = [f"--unset-env={g}" for g in unset_globs_except(["CUDA_VISIBLE_DEVICES"])]


def test_apptainer_argv_exact_with_gpus_binds_and_env():
    argv = container_argv(
        "apptainer",
        "/images/slipway/python-cuda12.sif",
        "/jobs/42/work",
        ["python3", "train.py", "--epochs", "3"],
        {"PORT": "12345", "MSG": "a b,c=\"d\" $(id)"},
        binds=job_binds(["/data/set1", "/data/set2"], "/jobs/42/output"),
        gpus=True,
    )
    assert argv == [
        "apptainer", "exec", "--nv", "--cleanenv", "--containall",
        "--bind", "/jobs/42/work:/work", "--pwd", "/work",
        "--bind", "/data/set1:/input0:ro",
        "--bind", "/data/set2:/input1:ro",
        "--bind", "/jobs/42/output:/output",
        "/images/slipway/python-cuda12.sif",
        "/usr/bin/env", "MSG=a b,c=\"d\" $(id)", "PORT=12345",
        "python3", "train.py", "--epochs", "3",
    ]


def test_apptainer_argv_without_gpus_or_env_has_no_nv_and_no_env_wrapper():
    argv = container_argv("apptainer", "/i/busybox.sif", "/w", ["sh", "-c", "echo hi"], {})
    assert argv == ["apptainer", "exec", "--cleanenv", "--containall", "--bind", "/w:/work",
                    "--pwd", "/work", "/i/busybox.sif", "sh", "-c", "echo hi"]
    assert "--nv" not in argv


def test_charliecloud_argv_exact():
    argv = container_argv(
        "charliecloud", "/var/tmp/slipway-images/python", "/jobs/7/work",
        ["python3", "-c", "print(1)"], {"B": "it's", "A": ""},
        binds=[Bind("/data/in", "/input0", True), Bind("/jobs/7/out", "/output", False)],
        gpus=True,
    )
    assert argv == [
        "ch-run", *CUDA_GLOBS, "--env-no-expand",
        "--set-env=HOME='/tmp'",
        "--set-env=PATH='/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'",
        "--set-env=A=''", "--set-env=B='it's'",
        "--private-tmp",
        "--bind=/jobs/7/work:/work", "--bind=/data/in:/input0", "--bind=/jobs/7/out:/output",
        "--cd=/work", "/var/tmp/slipway-images/python", "--", "python3", "-c", "print(1)",
    ]


def test_executable_override_and_no_passthrough():
    argv = container_argv("charliecloud", "/img", "/w", ["true"], {}, executable="/usr/bin/ch-run",
                          passthrough=())
    assert argv[:2] == ["/usr/bin/ch-run", "--unset-env=*"]


def test_job_binds():
    assert job_binds(["/a", "/b"], "/o") == (
        Bind("/a", "/input0", True), Bind("/b", "/input1", True), Bind("/o", "/output", False))
    assert job_binds() == ()
    with pytest.raises(InvalidContainerSpec, match="at most 5 inputs"):
        job_binds([f"/d{i}" for i in range(6)])


def test_tuple_binds_are_accepted():
    argv = container_argv("apptainer", "/i.sif", "/w", ["true"], {}, binds=[("/a", "/input0", False)])
    assert "/a:/input0" in argv


@pytest.mark.parametrize("runtime", ["apptainer", "charliecloud"])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"env": {"1BAD": "x"}}, "name '1BAD' is not allowed"),
        ({"env": {"A-B": "x"}}, "not allowed"),
        ({"env": {"A=B": "x"}}, "not allowed"),
        ({"env": {"": "x"}}, "not allowed"),
        ({"env": {"A": "nul\x00here"}}, "NUL"),
        ({"env": {"A": 3}}, "must be a string"),
        ({"env": ["A=B"]}, "mapping"),
        ({"workdir": "/w:x"}, "contains ':'"),
        ({"workdir": "/w,x"}, "contains ','"),
        ({"workdir": "relative/dir"}, "absolute"),
        ({"workdir": "/w\nx"}, "control character"),
        ({"image_path": "img.sif"}, "absolute"),
        ({"image_path": "/i\x00"}, "NUL"),
        ({"binds": [Bind("/a:b", "/input0")]}, "contains ':'"),
        ({"binds": [Bind("/a", "/input0,/etc")]}, "contains ','"),
        ({"binds": [Bind("/a", "input0")]}, "absolute"),
        ({"binds": [Bind("/a", "/x/../etc")]}, "normalised"),
        ({"binds": [Bind("/a", "/")]}, "cannot be '/'"),
        ({"binds": [Bind("/a", "/work")]}, "workdir"),
        ({"binds": [Bind("/a", "/input0"), Bind("/b", "/input0")]}, "used twice"),
        ({"binds": ["/a:/input0"]}, "Bind"),
        ({"command": "python3 -c 'print(1)'"}, "not a string"),
        ({"command": []}, "empty"),
        ({"command": [""]}, "empty"),
        ({"command": ["--privileged"]}, "must name a program"),
        ({"command": ["A=B", "sh"]}, "must name a program"),
        ({"command": ["sh", "-c", "x\x00y"]}, "NUL"),
        ({"command": ["sh", 3]}, "must be a string"),
        ({"gpus": "yes"}, "gpus"),
        ({"passthrough": ["BAD-NAME"]}, "pass-through"),
    ],
)
def test_unsafe_specs_are_refused(runtime, kwargs, match):
    spec = dict(image_path="/images/x", workdir="/w", command=["true"], env={})
    spec.update(kwargs)
    with pytest.raises(InvalidContainerSpec, match=match):
        container_argv(runtime, **spec)


def test_unknown_runtime():
    with pytest.raises(InvalidContainerSpec, match="apptainer, charliecloud"):
        container_argv("docker", "/i", "/w", ["true"], {})
    with pytest.raises(InvalidContainerSpec):
        launch_env("podman", {})


def test_invalid_spec_is_a_value_error():
    assert issubclass(InvalidContainerSpec, ValueError)


def test_launch_env_sets_user_and_apptainer_passthrough():
    env = launch_env("apptainer", {"CUDA_VISIBLE_DEVICES": "0,1", "PATH": "/bin"})
    assert env["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["USER"]
    ch = launch_env("charliecloud", {"USER": "sw-alice", "CUDA_VISIBLE_DEVICES": "2"})
    assert ch == {"USER": "sw-alice", "CUDA_VISIBLE_DEVICES": "2"}
    assert "APPTAINERENV_CUDA_VISIBLE_DEVICES" not in launch_env("apptainer", {"USER": "x"})


_names = st.text(alphabet=string.ascii_letters[:4] + "_", min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(keep=st.sets(_names, max_size=4), probe=st.lists(_names, max_size=20))
def test_unset_globs_match_everything_but_the_kept_names(keep, probe):
    globs = unset_globs_except(keep)
    for name in [*probe, *keep, *(k + "_" for k in keep), *(k[:-1] for k in keep if len(k) > 1)]:
        matched = any(fnmatch.fnmatchcase(name, g) for g in globs)
        assert matched == (name not in keep), (name, keep, globs)


# -- issue 11: /input0../input4 read-only, /output writable ------------------------------------
def test_apptainer_inputs_and_output_exact():
    argv = container_argv("apptainer", "/images/IMAGE.sif", "/jobs/7/work", ["sh", "x.sh"], {},
                          binds=job_binds(["/data/a", "/data/b"], "/jobs/7/output"))
    assert argv == ["apptainer", "exec", "--cleanenv", "--containall",
                    "--bind", "/jobs/7/work:/work", "--pwd", "/work",
                    "--bind", "/data/a:/input0:ro", "--bind", "/data/b:/input1:ro",
                    "--bind", "/jobs/7/output:/output",
                    "/images/IMAGE.sif", "sh", "x.sh"]


def test_charliecloud_inputs_and_output_are_plain_binds():
    """ch-run has no ``:ro``: the runner's namespace step (git_gateway.node.readonly) makes the
    inputs read-only, so the argv binds them like the output."""
    argv = container_argv("charliecloud", "/img", "/jobs/7/work", ["true"], {},
                          binds=job_binds([f"/data/{i}" for i in range(5)], "/jobs/7/output"))
    binds = [a for a in argv if a.startswith("--bind=")]
    assert binds == ["--bind=/jobs/7/work:/work",
                     *(f"--bind=/data/{i}:/input{i}" for i in range(5)),
                     "--bind=/jobs/7/output:/output"]
    assert not any(a.endswith(":ro") for a in argv)


@pytest.mark.parametrize("runtime", ["apptainer", "charliecloud"])
@pytest.mark.parametrize("inputs, output, match", [
    (["/data/a:b"], None, "contains ':'"),
    (["/data/a,b"], None, "contains ','"),
    (["/data/a"], "/jobs/7/out:put", "contains ':'"),
    (["/data/a"], "/jobs/7/out,put", "contains ','"),
    (["data/a"], None, "absolute"),
    (["/data/a\nb"], None, "control character"),
])
def test_bad_input_or_output_paths_are_refused(runtime, inputs, output, match):
    with pytest.raises(InvalidContainerSpec, match=match):
        container_argv(runtime, "/img", "/w", ["true"], {}, binds=job_binds(inputs, output))


def test_a_sixth_input_is_refused():
    assert len(job_binds([f"/d{i}" for i in range(5)], "/o")) == 6
    with pytest.raises(InvalidContainerSpec, match=r"at most 5 inputs .*got 6"):
        job_binds([f"/d{i}" for i in range(6)], "/o")


def test_portal_container_argv_passes_binds():
    """portal.integrations.container_argv hands ``binds`` (Bind values or plain tuples) to the
    runtime's builder."""
    from types import SimpleNamespace

    from portal import integrations as ig

    class Catalog:
        def sif_path(self, image, root):
            return f"{root}/{image}.sif"

        def local_path(self, image, root):
            return f"{root}/{image}"

    cfg = SimpleNamespace(container_runtime="apptainer", images_root="/images")
    argv = ig.container_argv(cfg, Catalog(), "py", "/jobs/7/work", ["true"], {},
                             binds=[Bind("/data/a", "/input0", True), ("/jobs/7/o", "/output", False)])
    assert argv[argv.index("--pwd") + 2:] == ["--bind", "/data/a:/input0:ro",
                                               "--bind", "/jobs/7/o:/output", "/images/py.sif",
                                               "true"]
    cfg.container_runtime = "charliecloud"
    argv = ig.container_argv(cfg, Catalog(), "busybox", "/w", ["true"], {},
                             binds=job_binds(["/data/a"], "/o"))
    assert "--bind=/data/a:/input0" in argv and "--bind=/o:/output" in argv
    assert ig.container_argv(cfg, Catalog(), "busybox", "/w", ["true"], {}) == \
        ig.container_argv(cfg, Catalog(), "busybox", "/w", ["true"], {}, binds=())
    with pytest.raises(InvalidContainerSpec, match="contains ':'"):
        ig.container_argv(cfg, Catalog(), "busybox", "/w", ["true"], {},
                          binds=[("/a:b", "/input0", True)])
