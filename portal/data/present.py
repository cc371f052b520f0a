"""JSON shapes of the data domain (the API and the CLI print the same; pages use them too)."""
from __future__ import annotations

from ..db import DataRepo, DataVersion, Job


def _iso(t):
    return t.isoformat() if t else None


def version_dict(v: DataVersion, repo: DataRepo, team: str, *, files: bool = False) -> dict:
    d = {"team": team, "repo": repo.name, "kind": repo.kind, "number": v.number,
         "ref": f"{team}/{repo.name}:{v.number}", "size_bytes": v.size_bytes,
         "file_count": v.file_count, "created_by": v.created_by, "created_at": _iso(v.created_at),
         "source": v.source, "source_job": v.source_job_id}
    if files:
        d["files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in v.files]
    return d


def repo_dict(r: DataRepo, team: str, *, shared_with: list[str] | None = None,
              versions: list[DataVersion] | None = None, size_bytes: int | None = None) -> dict:
    vs = r.versions if versions is None else versions
    d = {"team": team, "name": r.name, "ref": f"{team}/{r.name}", "kind": r.kind,
         "public": bool(r.public), "description": r.description or "",
         "created_by": r.created_by, "created_at": _iso(r.created_at),
         "latest": vs[-1].number if vs else None,
         "versions": [version_dict(v, r, team) for v in vs]}
    if size_bytes is not None:
        d["size_bytes"] = size_bytes
    if shared_with is not None:
        d["shared_with"] = shared_with
    return d


def output_dict(job: Job, files: list[dict] | None) -> dict:
    """A job's /output: state ("none", "open", "kept", "deleted"), size, files [{path, size}]."""
    return {"job": job.id, "state": job.output_state, "size_bytes": job.output_bytes,
            "file_count": job.output_files, "kept_at": _iso(job.output_kept_at),
            "deleted_at": _iso(job.output_deleted_at), "continue_from": job.continue_from,
            "files": files if files is not None else []}
