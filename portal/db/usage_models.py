"""per-job usage samples (migration 0014, docs/MONITORING.md): being built."""
from __future__ import annotations

from .models import Base  # noqa: F401
