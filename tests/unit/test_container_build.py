"""container_images/build helpers that need no root and no network."""
from __future__ import annotations

import hashlib
import importlib.machinery
import json
import importlib.util
from pathlib import Path

import pytest

BUILD = Path(__file__).resolve().parents[2] / "container_images" / "build"


@pytest.fixture(scope="module")
def build():
    loader = importlib.machinery.SourceFileLoader("slipway_container_build", str(BUILD))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_build_is_executable():
    assert BUILD.stat().st_mode & 0o111
    assert BUILD.read_text().startswith("#!/usr/bin/env python3")


def test_mirror_from_deb822_sources(build, tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\n# comment\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nEnabled: no\nURIs: http://disabled.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n")
    assert build.find_debian_mirror("bookworm", tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(build, tmp_path):
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/x.gpg arch=amd64] http://one.example/debian bookworm main\n")
    assert build.find_debian_mirror("bookworm", tmp_path) == "http://one.example/debian"


def test_mirror_fallback(build, tmp_path):
    assert build.find_debian_mirror("bookworm", tmp_path) == "http://deb.debian.org/debian"
    (tmp_path / "sources.list").write_text("deb http://one.example/debian bullseye main\n")
    assert build.find_debian_mirror("bookworm", tmp_path) == "http://deb.debian.org/debian"


def test_recipe_hash_is_stable_and_sensitive(build):
    a = {"kind": "debootstrap", "suite": "bookworm", "include": ["python3"]}
    assert build.recipe_hash(a) == build.recipe_hash(dict(reversed(list(a.items()))))
    assert build.recipe_hash(a) != build.recipe_hash({**a, "include": ["python3", "git"]})


def test_image_without_local_recipe_is_refused(build, tmp_path, capsys):
    assert build.main(["--dest", str(tmp_path), "pytorch"]) == 1
    assert "no local recipe" in capsys.readouterr().err
    assert build.main(["--dest", str(tmp_path), "nope"]) == 1
    assert "available images" in capsys.readouterr().err


# ------------------------------------------------------------ the pip (JupyterLab) layer
def _catalog(tmp_path, recipe):
    from container_images.catalog import Catalog
    p = tmp_path / "catalog.json"
    p.write_text(json.dumps({"images": {"img": {"description": "d", "local": "img",
                                                 "local_recipe": recipe}}}))
    return Catalog.load(p)


def test_pinned_requirements_content_is_part_of_the_recipe_hash(build, tmp_path):
    recipe = {"kind": "debootstrap", "suite": "bookworm", "include": ["python3", "python3-pip"],
              "pip_requirements": "reqs.txt"}
    (tmp_path / "reqs.txt").write_text("jupyterlab==4.6.6\n")
    cat = _catalog(tmp_path, recipe)
    hashed, reqs = build.resolve_recipe(cat, "img", recipe)
    assert reqs == tmp_path / "reqs.txt"
    assert hashed["pip_requirements_sha256"] == hashlib.sha256(b"jupyterlab==4.6.6\n").hexdigest()
    first = build.recipe_hash(hashed)
    (tmp_path / "reqs.txt").write_text("jupyterlab==4.6.5\n")
    assert build.recipe_hash(build.resolve_recipe(cat, "img", recipe)[0]) != first
    plain = {"kind": "debootstrap", "include": ["python3"]}
    assert build.resolve_recipe(cat, "img", plain) == (plain, None)


def test_bad_pip_requirements_are_refused(build, tmp_path):
    recipe = {"kind": "debootstrap", "pip_requirements": "missing.txt"}
    cat = _catalog(tmp_path, recipe)
    with pytest.raises(build.BuildError, match="image 'img': local_recipe pip_requirements "
                                               "'missing.txt': no such file"):
        build.resolve_recipe(cat, "img", recipe)
    with pytest.raises(build.BuildError, match="needs a debootstrap recipe"):
        build.resolve_recipe(cat, "img", {"kind": "busybox", "pip_requirements": "x.txt"})


def test_packaged_python_recipe_installs_the_jupyter_pins(build):
    from container_images.catalog import Catalog
    cat = Catalog.load()
    hashed, reqs = build.resolve_recipe(cat, "python", dict(cat.get("python").local_recipe))
    assert reqs is not None and reqs.name == "jupyter-requirements.txt"
    assert "jupyterlab==" in reqs.read_text()


def test_a_jupyter_image_without_jupyter_is_not_complete(build, tmp_path):
    root = tmp_path / "img"
    for f in ("usr/bin/env", "bin/sh"):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).touch()
    (tmp_path / "img.stamp.json").write_text(json.dumps({"recipe_hash": "h"}))
    assert build.is_complete(tmp_path, "img", "debootstrap", "h")
    assert build.is_complete(tmp_path, "img", "debootstrap", "h", jupyter=True) is None
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/jupyter").touch()
    assert build.is_complete(tmp_path, "img", "debootstrap", "h", jupyter=True)
