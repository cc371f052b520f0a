"""The ``Containers`` port: container_images' catalog (``SLIPWAY_CATALOG`` names another
catalog file than the packaged one)."""
from __future__ import annotations

import os

from container_images.catalog import Catalog

from ..config import Config


def load_catalog(config: Config) -> Catalog:
    path = os.environ.get("SLIPWAY_CATALOG")
    return Catalog.load(path) if path else Catalog.load()
