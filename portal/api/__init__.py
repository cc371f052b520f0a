"""Slipway's JSON API under ``/api/``.

Auth: ``Authorization: Bearer <access token>`` (a personal access token, ``slipway token
create`` or the Tokens page), or ``Authorization: Basic user:token``, or the browser session
(then writes need the ``X-CSRFToken`` header). Errors: ``{"ok": false, "error": "…"}`` with
401 (no/bad credentials), 403 (member lacking the role), 404 (unknown — or another team's),
400 (bad input), 409 (conflict: exists already, job already ended, active jobs).

Same operations and permission rules as the pages (the service layer, ``portal.teams.access``).
"""
from __future__ import annotations

from . import data, data_output, jobs, policy, projects, teams, tokens, workspaces  # noqa: F401  (their routes register on the blueprint)
from . import alarms, monitoring, notifications  # noqa: F401  (docs/MONITORING.md)
from . import submit  # noqa: F401  (POST /api/submit: slipway submit)
from .core import api

__all__ = ["api"]
