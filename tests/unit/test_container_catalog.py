"""container_images catalog + Apptainer definition files (parsed with spython, no binary)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from spython.main.parse.parsers import SingularityParser

from container_images.catalog import (
    CATALOG_PATH,
    Catalog,
    CatalogError,
    ImageNotBuilt,
    UnknownImage,
    default_image_cache,
)

PKG = CATALOG_PATH.parent
DEF_FILES = sorted(PKG.glob("*.def"))


def _header(path: Path) -> dict[str, str]:
    """Header keywords (before the first %section), as Apptainer reads them."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("%"):
            break
        m = re.match(r"^\s*(Bootstrap|From)\s*:\s*(\S+)\s*$", line, re.I)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def _sections(path: Path) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^%(\w+)", path.read_text(), re.M)}


def test_packaged_catalog_loads():
    cat = Catalog.load()
    assert {"python", "pytorch", "busybox"} <= set(cat.names)
    assert cat.default == "python"
    py = cat.get("python")
    assert py.def_file == PKG / "python.def" and py.def_file.is_file()
    assert py.sif == "slipway/python-cuda12.sif"
    assert py.local == "python"
    assert cat.get("pytorch").local is None
    assert set(cat.local_names()) == {"busybox", "python"}
    for img in cat:
        assert img.description
        assert img.def_file is not None and img.def_file.is_file(), img.name


def test_unknown_image_lists_available_names():
    cat = Catalog.load()
    with pytest.raises(UnknownImage) as exc:
        cat.get("tensorflow")
    msg = str(exc.value)
    assert "unknown image 'tensorflow'" in msg
    assert "busybox, python, pytorch" in msg
    assert exc.value.available == cat.names
    assert isinstance(exc.value, LookupError)


def test_sif_and_local_paths(tmp_path, monkeypatch):
    cat = Catalog.load()
    assert cat.sif_path("pytorch", "/srv/images") == Path("/srv/images/slipway/pytorch-cuda12.sif")
    assert cat.local_path("python", tmp_path) == tmp_path / "python"
    with pytest.raises(ImageNotBuilt, match="not built"):
        cat.local_path("python", tmp_path, must_exist=True)
    (tmp_path / "python").mkdir()
    (tmp_path / "python.stamp.json").write_text("{}")
    assert cat.local_path("python", tmp_path, must_exist=True) == tmp_path / "python"
    with pytest.raises(ImageNotBuilt, match="no local build.*busybox, python"):
        cat.local_path("pytorch", tmp_path)
    monkeypatch.setenv("SLIPWAY_IMAGE_CACHE", str(tmp_path / "cache"))
    assert default_image_cache() == tmp_path / "cache"
    assert cat.local_path("busybox") == tmp_path / "cache" / "busybox"
    monkeypatch.delenv("SLIPWAY_IMAGE_CACHE")
    assert default_image_cache() == Path.home() / ".cache" / "slipway" / "images"


def test_load_custom_path_and_errors(tmp_path):
    good = {"images": {"x": {"description": "X", "def_file": None, "sif": "x.sif", "local": None}}}
    p = tmp_path / "c.json"
    p.write_text(json.dumps(good))
    assert Catalog.load(p).names == ("x",)
    assert Catalog.load(str(p)).get("x").sif == "x.sif"
    bad_cases = [
        {"images": {"X Y": {"description": "d"}}},
        {"images": {"x": {"description": ""}}},
        {"images": {"x": {"description": "d", "sif": "/abs.sif"}}},
        {"images": {"x": {"description": "d", "sif": "../up.sif"}}},
        {"images": {"x": {"description": "d", "local": "x"}}},  # local without recipe
        {"images": {"x": {"description": "d"}}, "default": "nope"},
        {"nothing": 1},
    ]
    for bad in bad_cases:
        p.write_text(json.dumps(bad))
        with pytest.raises(CatalogError):
            Catalog.load(p)
    p.write_text("{not json")
    with pytest.raises(CatalogError, match="not valid JSON"):
        Catalog.load(p)
    with pytest.raises(CatalogError, match="cannot read"):
        Catalog.load(tmp_path / "missing.json")


def test_every_catalog_def_file_exists():
    cat = Catalog.load()
    listed = {img.def_file for img in cat if img.def_file}
    assert listed == set(DEF_FILES)


@pytest.mark.parametrize("path", DEF_FILES, ids=lambda p: p.name)
def test_def_files_parse_with_spython(path):
    recipe = SingularityParser(str(path)).recipe
    layer = recipe["spython-base"]
    header = _header(path)
    assert header["bootstrap"] == "docker"
    assert layer.fromHeader == header["from"]
    assert {"labels", "environment", "runscript", "test", "post", "help"} <= _sections(path)
    labels = dict(line.split(None, 1) for line in layer.labels)
    assert labels["org.slipway.image"] == path.stem
    assert labels["org.slipway.image.version"].isdigit()
    assert layer.environ, "environment section is empty"
    assert all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", e) for e in layer.environ)
    assert layer.cmd and layer.cmd.startswith("exec ")
    assert layer.test
    install = "\n".join(layer.install)
    assert "mkdir -p /work /output /input0 /input1 /input2 /input3 /input4" in install


def test_python_def_is_cuda12_ubuntu2204_with_python_pip_git():
    path = PKG / "python.def"
    frm = _header(path)["from"]
    assert re.fullmatch(r"nvidia/cuda:12\.\d+(\.\d+)?-runtime-ubuntu22\.04", frm), frm
    post = SingularityParser(str(path)).recipe["spython-base"].install
    text = "\n".join(post)
    for pkg in ("python3", "python3-pip", "git"):
        assert re.search(rf"\b{re.escape(pkg)}\b", text), pkg


def test_pytorch_def_has_torch():
    path = PKG / "pytorch.def"
    frm = _header(path)["from"]
    assert frm.startswith("pytorch/pytorch:") and "cuda12" in frm
    assert "import torch" in path.read_text()


def test_builds_per_runtime_and_the_message_names_what_can_run():
    cat = Catalog.load()
    assert cat.has_build("pytorch", "apptainer") and not cat.has_build("pytorch", "charliecloud")
    assert cat.names_for_runtime("charliecloud") == ("busybox", "python")
    assert cat.names_for_runtime("apptainer") == ("busybox", "python", "pytorch")
    assert cat.runtime_problem("python", "charliecloud") is None
    assert cat.runtime_problem("pytorch", "apptainer") is None
    assert cat.runtime_problem("pytorch", "charliecloud") == (
        "image 'pytorch' is in the catalog but has no build for this cluster's container "
        "runtime (charliecloud); available images: busybox, python")
    assert cat.runtime_problem("nope", "charliecloud") == (
        "unknown image 'nope'; available images: busybox, python")
    with pytest.raises(ValueError, match="unknown container runtime 'podman'"):
        cat.names_for_runtime("podman")
    empty = Catalog.from_dict({"images": {"x": {"description": "d", "sif": "x.sif"}}})
    assert "available images: (none)" in empty.runtime_problem("x", "charliecloud")


# ------------------------------------------------------------------- JupyterLab (issue 12)
def test_which_images_have_jupyter_and_the_refusal_names_them():
    cat = Catalog.load()
    assert cat.has_jupyter("python") and cat.has_jupyter("pytorch")
    assert cat.has_jupyter("busybox") is False
    assert cat.jupyter_names() == ("python", "pytorch")
    assert cat.jupyter_names("charliecloud") == ("python",)
    assert cat.jupyter_names("apptainer") == ("python", "pytorch")
    assert cat.jupyter_problem("python") is None
    assert cat.jupyter_problem("python", "charliecloud") is None
    assert cat.jupyter_problem("busybox") == (
        "image 'busybox' has no JupyterLab, so it cannot run a workspace; "
        "images with JupyterLab: python, pytorch")
    assert cat.jupyter_problem("busybox", "charliecloud").endswith("images with JupyterLab: python")
    assert "no build for this cluster's container runtime (charliecloud)" in \
        cat.jupyter_problem("pytorch", "charliecloud")
    assert cat.jupyter_problem("nope") == "unknown image 'nope'; images with JupyterLab: python, pytorch"
    with pytest.raises(UnknownImage, match="available images"):
        cat.has_jupyter("nope")


def test_jupyter_flag_defaults_false_and_must_be_a_bool(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"images": {"x": {"description": "X"}}}))
    cat = Catalog.load(p)
    assert cat.has_jupyter("x") is False and cat.jupyter_names() == ()
    assert cat.jupyter_problem("x") == ("image 'x' has no JupyterLab, so it cannot run a "
                                        "workspace; images with JupyterLab: (none)")
    for bad in ("yes", 1, None):
        p.write_text(json.dumps({"images": {"x": {"description": "X", "jupyter": bad}}}))
        with pytest.raises(CatalogError, match="'jupyter' must be true or false"):
            Catalog.load(p)


@pytest.mark.parametrize("name", ["python", "pytorch"])
def test_def_files_install_pinned_jupyterlab_and_test_it(name):
    layer = SingularityParser(str(PKG / f"{name}.def")).recipe["spython-base"]
    install = "\n".join(layer.install)
    pin = re.search(r"^jupyterlab==(\S+)$", install, re.M)
    assert pin, "no pinned jupyterlab in %post"
    assert re.search(r"^jupyter-server==\S+$", install, re.M)
    assert "pip install --no-cache-dir --no-input" in install
    test_section = (PKG / f"{name}.def").read_text().split("%test", 1)[1]
    assert f'test "$(jupyter lab --version)" = "{pin.group(1)}"' in test_section
