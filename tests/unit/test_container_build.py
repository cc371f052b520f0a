"""container_images/build helpers that need no root and no network."""
from __future__ import annotations

import importlib.machinery
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
