"""``POST /api/submit``: run a script as a user with sbatch's flags (``slipway submit``'s remote
mode; cluster administrators only). The service layer (``portal.jobs.scripted``) decides.

Body: ``{"script": "#!/bin/bash\\n...", "flags": ["--gres=gpu:a4000:1", "-t", "60"],
"user": "alice", "team": "vision", "project": "submit"}`` — ``user``/``team``/``project`` may
instead be flags (``--user``, ``--account``, ``--project``). Answer (201): the job, its branch and
commit, its state, the admission's notes and the submission's message."""
from __future__ import annotations

from flask import jsonify

from .. import inputs as input_types
from ..http.context import actor, svc
from ..jobs import scripted
from .core import ApiError, _body, api

FIELDS = ("script", "flags", "user", "team", "project")


def _opt_text(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{key} must be a JSON string, got {input_types.json_type(value)}")
    return value.strip() or None


@api.post("/submit")
def submit_script():
    me = actor()
    if not me.is_cluster_admin:  # before the body is read
        raise ApiError(403, "only cluster administrators may submit scripts as other users "
                            "(slipway submit); push a branch instead")
    body = _body()
    extra = sorted(k for k in body if k not in FIELDS)
    if extra:
        raise ApiError(400, f"unknown field(s) {', '.join(map(repr, extra))[:200]}; known: "
                            f"{', '.join(FIELDS)}")
    script = body.get("script")
    if not isinstance(script, str):
        raise ApiError(400, f"script must be a JSON string (the batch script), got "
                            f"{input_types.json_type(script)}")
    flags = body.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags) or len(flags) > 200:
        raise ApiError(400, 'flags must be a list of at most 200 strings, e.g. '
                            '["--gres=gpu:a4000:1", "-t", "60"]')
    done = scripted.submit_script(svc(), me, script, flags, user=_opt_text(body, "user"),
                                  team=_opt_text(body, "team"),
                                  project=_opt_text(body, "project"))
    return jsonify({"ok": True, **done.as_dict(), "lines": done.lines()}), 201
