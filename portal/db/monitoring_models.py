"""cluster and node samples (migration 0011, docs/MONITORING.md): being built."""
from __future__ import annotations

from .models import Base  # noqa: F401
