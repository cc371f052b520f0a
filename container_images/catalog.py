"""The image catalog: image name -> where its recipe, SIF and local directory image live.

Plain values only (no Flask, no DB). The catalog file is ``container_images/catalog.json``::

    {"schema": 1, "default": "python",
     "images": {"python": {"description": "...", "def_file": "python.def",
                           "sif": "slipway/python-cuda12.sif", "local": "python",
                           "local_recipe": {"kind": "debootstrap", ...}}}}

* ``def_file`` -- Apptainer definition file, relative to the catalog's directory. Production
  builds the SIF from it with ``apptainer build <sif> <def_file>``.
* ``sif`` -- where production keeps the SIF, relative to a configurable images root
  (``Catalog.sif_path(name, images_root)``).
* ``local`` -- name of the directory image that ``container_images/build`` makes on this machine
  for ``ch-run`` (``Catalog.local_path(name, cache)``), or ``null`` when there is no local build.
* ``local_recipe`` -- what ``build`` does for that directory image; hashed into its stamp
  (``"pip_requirements": FILE`` -- a pinned pip requirements file beside the catalog, installed
  into the image's /usr/local at build time; its content is hashed too).
* ``jupyter`` -- true when the image has JupyterLab (``jupyter lab`` on PATH, pinned by
  ``jupyter-requirements.txt``): workspaces run only in such images (``Catalog.jupyter_problem``).

This module is stdlib-only on purpose: ``container_images/build`` imports it with the system
Python, outside any virtualenv.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from . import digest as _digest

__all__ = [
    "CATALOG_PATH",
    "Catalog",
    "CatalogError",
    "Image",
    "ImageNotBuilt",
    "UnknownImage",
    "default_image_cache",
]

CATALOG_PATH = Path(__file__).resolve().parent / "catalog.json"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class CatalogError(ValueError):
    """The catalog file itself is malformed."""


class UnknownImage(LookupError):
    """An image name that is not in the catalog (the message lists the available names)."""

    def __init__(self, name: str, available: tuple[str, ...]):
        self.name = name
        self.available = available
        super().__init__(
            f"unknown image {name!r}; available images: {', '.join(available) or '(none)'}"
        )

    def __str__(self) -> str:  # LookupError would repr() the message
        return self.args[0]


class ImageNotBuilt(LookupError):
    """The image is in the catalog but has no usable local (ch-run) directory image."""

    def __str__(self) -> str:
        return self.args[0]


def default_image_cache() -> Path:
    """``$SLIPWAY_IMAGE_CACHE`` or ``~/.cache/slipway/images`` (where ``build`` puts images)."""
    env = os.environ.get("SLIPWAY_IMAGE_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "slipway" / "images"


@dataclass(frozen=True)
class Image:
    name: str
    description: str
    def_file: Path | None            # absolute path of the Apptainer .def (None: none)
    sif: str | None                  # relative to the production images root
    local: str | None                # local directory image name under the cache (None: none)
    local_recipe: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    jupyter: bool = False            # JupyterLab installed (workspaces can run in it)


class Catalog:
    """Images by name. ``Catalog.load()`` reads the packaged ``catalog.json``."""

    def __init__(self, images: Mapping[str, Image], default: str | None = None,
                 path: Path | None = None):
        self._images = dict(images)
        if default is not None and default not in self._images:
            raise CatalogError(f"default image {default!r} is not in the catalog")
        self.default = default
        self.path = path

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> "Catalog":
        p = Path(path) if path is not None else CATALOG_PATH
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CatalogError(f"cannot read image catalog {p}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise CatalogError(f"image catalog {p} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, base_dir=p.parent, path=p)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path = CATALOG_PATH.parent,
                  path: Path | None = None) -> "Catalog":
        if not isinstance(data, Mapping) or not isinstance(data.get("images"), Mapping):
            raise CatalogError("image catalog needs an 'images' object")
        images: dict[str, Image] = {}
        for name, entry in data["images"].items():
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise CatalogError(f"bad image name {name!r} (lowercase letters, digits, . _ -)")
            if not isinstance(entry, Mapping):
                raise CatalogError(f"image {name!r}: entry must be an object")
            desc = entry.get("description")
            if not isinstance(desc, str) or not desc.strip():
                raise CatalogError(f"image {name!r}: 'description' must be a non-empty string")
            def_file = _opt_str(entry, "def_file", name)
            sif = _opt_str(entry, "sif", name)
            local = _opt_str(entry, "local", name)
            if sif is not None and (sif.startswith("/") or ".." in Path(sif).parts):
                raise CatalogError(f"image {name!r}: 'sif' must be relative to the images root")
            if local is not None and not _NAME_RE.match(local):
                raise CatalogError(f"image {name!r}: bad 'local' image name {local!r}")
            jupyter = entry.get("jupyter", False)
            if not isinstance(jupyter, bool):
                raise CatalogError(f"image {name!r}: 'jupyter' must be true or false")
            recipe = entry.get("local_recipe")
            if local is not None and not isinstance(recipe, Mapping):
                raise CatalogError(f"image {name!r}: 'local' needs a 'local_recipe' object")
            images[name] = Image(
                name=name,
                description=desc.strip(),
                def_file=(base_dir / def_file).resolve() if def_file else None,
                sif=sif,
                local=local,
                local_recipe=MappingProxyType(dict(recipe)) if isinstance(recipe, Mapping) else None,
                jupyter=jupyter,
            )
        return cls(images, default=data.get("default"), path=path)

    # -- lookups -------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._images))

    def __contains__(self, name: object) -> bool:
        return name in self._images

    def __iter__(self):
        return iter(self._images[n] for n in self.names)

    def __len__(self) -> int:
        return len(self._images)

    def get(self, name: str) -> Image:
        try:
            return self._images[name]
        except (KeyError, TypeError):
            raise UnknownImage(str(name), self.names) from None

    def sif_path(self, name: str, images_root: str | os.PathLike[str]) -> Path:
        """Where production keeps the image's SIF under ``images_root``."""
        img = self.get(name)
        if img.sif is None:
            raise ImageNotBuilt(f"image {name!r} has no SIF in the catalog")
        return Path(images_root) / img.sif

    def local_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if self._images[n].local)

    def has_build(self, name: str, runtime: str) -> bool:
        """Whether the catalog has a build of ``name`` for ``runtime``: a SIF for
        ``"apptainer"``, a local directory image for ``"charliecloud"``. Raises UnknownImage for
        a name not in the catalog and ValueError for an unknown runtime."""
        img = self.get(name)
        if runtime == "apptainer":
            return img.sif is not None
        if runtime == "charliecloud":
            return img.local is not None
        raise ValueError(f"unknown container runtime {runtime!r}; use apptainer or charliecloud")

    def names_for_runtime(self, runtime: str) -> tuple[str, ...]:
        """The images that can run under ``runtime`` (sorted)."""
        return tuple(n for n in self.names if self.has_build(n, runtime))

    def runtime_problem(self, name: str, runtime: str) -> str | None:
        """None when ``name`` can run under ``runtime``; else a message for the user naming the
        images that can."""
        available = ", ".join(self.names_for_runtime(runtime)) or "(none)"
        if name not in self._images:
            return f"unknown image {name!r}; available images: {available}"
        if not self.has_build(name, runtime):
            return (f"image {name!r} is in the catalog but has no build for this cluster's "
                    f"container runtime ({runtime}); available images: {available}")
        return None

    def has_jupyter(self, name: str) -> bool:
        """Whether ``name`` has JupyterLab (``"jupyter": true``). UnknownImage if not listed."""
        return self.get(name).jupyter

    def jupyter_names(self, runtime: str | None = None) -> tuple[str, ...]:
        """The images with JupyterLab (sorted), only those with a build for ``runtime`` if given."""
        names = self.names_for_runtime(runtime) if runtime is not None else self.names
        return tuple(n for n in names if self._images[n].jupyter)

    def jupyter_problem(self, name: str, runtime: str | None = None) -> str | None:
        """None when a workspace (JupyterLab) can run in ``name`` (under ``runtime`` if given);
        else a message for the user naming the images that can."""
        available = ", ".join(self.jupyter_names(runtime)) or "(none)"
        if name not in self._images:
            return f"unknown image {name!r}; images with JupyterLab: {available}"
        if not self._images[name].jupyter:
            return (f"image {name!r} has no JupyterLab, so it cannot run a workspace; "
                    f"images with JupyterLab: {available}")
        if runtime is not None:
            return self.runtime_problem(name, runtime)
        return None

    def image_path(self, name: str, runtime: str,
                   images_root: str | os.PathLike[str] | None = None) -> Path:
        """The file or directory that ``runtime`` runs for ``name``: the SIF under
        ``images_root`` for ``"apptainer"``, the local directory image for ``"charliecloud"``
        (``images_root`` or the default image cache)."""
        if runtime == "apptainer":
            if images_root is None:
                raise ValueError("apptainer images need an images root (where the SIFs are)")
            return self.sif_path(name, images_root)
        if runtime == "charliecloud":
            return self.local_path(name, images_root)
        raise ValueError(f"unknown container runtime {runtime!r}; use apptainer or charliecloud")

    def image_digest(self, name: str, runtime: str,
                     images_root: str | os.PathLike[str] | None = None) -> str:
        """``sha256:<hex>`` of the image ``runtime`` runs for ``name`` (``container_images.digest``:
        a SIF's bytes, or a directory image's paths, modes and contents), cached by path and
        stat so a push does not hash the image again. Raises OSError when it cannot be read."""
        return _digest.image_digest(self.image_path(name, runtime, images_root))

    def local_path(self, name: str, cache: str | os.PathLike[str] | None = None,
                   *, must_exist: bool = False) -> Path:
        """The directory image ``build`` makes for ``name`` (for ``ch-run``)."""
        img = self.get(name)
        if img.local is None:
            raise ImageNotBuilt(
                f"image {name!r} has no local build on this machine (it needs Apptainer); "
                f"images with a local build: {', '.join(self.local_names()) or '(none)'}"
            )
        path = Path(cache) if cache is not None else default_image_cache()
        path = path / img.local
        if must_exist and not (path.is_dir() and (path.parent / f"{img.local}.stamp.json").is_file()):
            raise ImageNotBuilt(
                f"local image {name!r} is not built at {path}; run: container_images/build "
                f"--dest {path.parent} {name}"
            )
        return path


def _opt_str(entry: Mapping[str, Any], key: str, name: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise CatalogError(f"image {name!r}: {key!r} must be a non-empty string or null")
    return value
