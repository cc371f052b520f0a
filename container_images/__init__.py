"""Slipway container images: the catalog (name -> image) and runtime argv builders.

No Flask, no DB: plain values in, plain values out. See container_images/README.md.
"""
from container_images.catalog import (  # noqa: F401
    Catalog,
    CatalogError,
    Image,
    ImageNotBuilt,
    UnknownImage,
    default_image_cache,
)
from container_images.runtime import (  # noqa: F401
    Bind,
    InvalidContainerSpec,
    container_argv,
    job_binds,
    launch_env,
)
