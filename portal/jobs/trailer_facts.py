"""The runner spec's facts for result-commit trailers (git_gateway.node.trailers): the image and its
content digest, the GPUs and their hourly rate. None where Slipway cannot say (the trailer then
reads ``unknown``); never an error that stops a submission."""
from __future__ import annotations

from slurm_bridge.request import GpuRequest

from .. import integrations as ig
from ..services import Services, log


def image_digest(svc: Services, image: str) -> str | None:
    """``sha256:<hex>`` of the image the job runs (cached by path and stat; see
    container_images.digest), or None when it cannot be read here."""
    cfg = svc.config
    try:
        return svc.catalog.image_digest(image, cfg.container_runtime, cfg.images_root)
    except (OSError, LookupError, ValueError) as exc:
        log.warning("no digest for image %r (%s): its result commits say 'unknown'", image, exc)
        return None


def gpu_rate(svc: Services, gpu_type: str) -> str | None:
    """Dollars per GPU-hour of ``gpu_type`` as a decimal string (never a float), or None."""
    try:
        return str(ig.rates(svc.config).gpu_rate(gpu_type))
    except (LookupError, ValueError) as exc:
        log.warning("no rate for GPU type %r (%s): its result commits say 'unknown'", gpu_type, exc)
        return None


def spec_fields(svc: Services, image: str, gpus: GpuRequest) -> dict:
    """``image``, ``image_digest``, ``gpu_type``, ``gpu_count``, ``gpu_rate`` for the spec."""
    return {"image": image, "image_digest": image_digest(svc, image),
            "gpu_type": gpus.type, "gpu_count": int(gpus.count),
            "gpu_rate": gpu_rate(svc, gpus.type)}
