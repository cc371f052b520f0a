"""``/api/jobs/J/output`` (a job's kept /output: list, a file, the archive, delete),
``/api/jobs/J/continue``, ``/api/data/T/N/from-job`` and ``/api/teams/T/storage`` (usage and
quota) — docs/DATA.md. Front door only: parse, call the service layer, answer."""
from __future__ import annotations

from flask import jsonify, request

from ..data import outputs as outputs_svc
from ..data import quota as quota_svc
from ..http.context import actor, db, svc
from ..jobs import continuing
from ..teams import access
from ..teams.access import OpError
from .core import ApiError, _body, api
from .data import readable, send_archive, send_path


# ------------------------------------------------------------------------- job outputs

@api.get("/jobs/<int:job_id>/output")
def job_output(job_id: int):
    return jsonify({"ok": True, "output": outputs_svc.output_listing(svc(), actor(), job_id)})


@api.get("/jobs/<int:job_id>/output/files/<path:relpath>")
def job_output_file(job_id: int, relpath: str):
    return send_path(outputs_svc.output_file(svc(), actor(), job_id, relpath))


@api.get("/jobs/<int:job_id>/output/archive")
def job_output_archive(job_id: int):
    return send_archive(outputs_svc.output_archive(svc(), actor(), job_id))


@api.delete("/jobs/<int:job_id>/output")
def job_output_delete(job_id: int):
    body = _body()
    confirm = str(body.get("confirm", request.args.get("confirm", "")))
    return jsonify(dict(outputs_svc.delete_output(svc(), actor(), job_id, confirm), ok=True))


@api.post("/jobs/<int:job_id>/continue")
def job_continue(job_id: int):
    """A new job at job ``job_id``'s commit whose /output starts as a copy of its kept output."""
    new_id, message = continuing.continue_job(svc(), actor(), job_id)
    return jsonify({"ok": True, "job": new_id, "continue_of": job_id, "message": message}), 201


@api.post("/data/<team>/<name>/from-job")
def data_from_job(team: str, name: str):
    """A new version of T/N from job J's kept output: ``{"job": J}``."""
    readable(team, name)
    job = _body().get("job")
    if isinstance(job, str) and job.strip().isdigit():
        job = int(job.strip())
    if not isinstance(job, int) or isinstance(job, bool) or not 1 <= job < 2**63:
        raise ApiError(400, 'name the job whose output to keep as a version: {"job": 42}')
    version = outputs_svc.version_from_job(svc(), actor(), job, team, name)
    return jsonify({"ok": True, "version": version}), 201


# ------------------------------------------------------------------------ team storage

@api.get("/teams/<team>/storage")
def team_storage(team: str):
    return jsonify(dict(quota_svc.storage_usage(svc(), actor(), team), ok=True))


def quota_value(value) -> int | None:
    """``"100GB"`` / ``"none"`` / bytes / null → bytes or None (no quota)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise OpError("quota must be a size such as \"100GB\", a number of bytes, or null (none)")
    if isinstance(value, int):
        return quota_svc.parse_size(value)   # bounded: 0 … 2^60
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "unlimited", ""):
            return None
        return quota_svc.parse_size(text)
    raise OpError("quota must be a size such as \"100GB\", a number of bytes, or null (none)")


@api.put("/teams/<team>/storage")
def team_storage_quota(team: str):
    access.team_access(db(), actor(), team)   # 404 for outsiders before the body is judged
    body = _body()
    if "quota" not in body:
        raise ApiError(400, 'send {"quota": "100GB"} (or a number of bytes, or null for none)')
    d = quota_svc.set_quota(svc(), actor(), team, quota_value(body["quota"]))
    return jsonify(dict(d, ok=True))
