"""notification settings (migration 0013, docs/MONITORING.md): being built."""
from __future__ import annotations

from .models import Base  # noqa: F401
