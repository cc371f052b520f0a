"""A job's /output: made before it starts, kept (sealed read-only) after it ends, listed,
downloaded, deleted, turned into a data version — the service layer.

States (``Job.output_state``): ``none`` (not made yet) → ``open`` (made; the job writes it, at
``<jobs_dir>/<id>/output``) → ``kept`` (sealed at ``datastore/outputs/<team_id>/<id>``:
root-owned, read-only, billed as storage) → ``deleted``. Keeping happens at the reconciler's
next tick after the job ended (``keep_ended``) or at once when somebody needs it (``ensure_kept``:
a continue, a download). One conditional UPDATE (open → keeping) decides who seals it.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from ..db import Job, Project
from ..jobs import states
from ..services import Services, log
from ..teams.access import ROLE_ADMIN, Actor, Forbidden, NotFound, OpError, job_access
from . import trees
from .present import output_dict

KEEPING = "keeping"


def _store(svc: Services):
    from .store import DataStore
    return DataStore.for_services(svc)


def live_dir(svc: Services, job_id: int) -> Path:
    return Path(svc.config.jobs_dir) / str(int(job_id)) / "output"


def kept_dir(svc: Services, team_id: int, job_id: int) -> Path:
    return _store(svc).outputs_root / str(int(team_id)) / str(int(job_id))


def _seal(svc: Services, job_id: int) -> bool:
    """Seal one ended job's output if this caller wins the claim (open → keeping → kept)."""
    from .gates import sync_team_outputs
    from .outputs_fs import seal_output
    with svc.db.transaction() as s:
        claimed = s.execute(update(Job).where(
            Job.id == job_id, Job.output_state == "open", Job.state.in_(states.TERMINAL))
            .values(output_state=KEEPING).execution_options(synchronize_session=False)).rowcount
        if claimed != 1:
            return False
        team_id = s.scalar(select(Project.team_id).join(Job, Job.project_id == Project.id)
                           .where(Job.id == job_id))
    store = _store(svc)
    try:
        size, count, skipped = seal_output(store, live_dir(svc, job_id),
                                           kept_dir(svc, team_id, job_id), store.chown)
    except OSError as exc:
        log.error("job %s: keeping its /output failed: %s", job_id, exc)
        with svc.db.transaction() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.output_state == KEEPING)
                      .values(output_state="open"))
        return False
    if skipped:
        log.info("job %s: /output kept without %d symlink(s)/special file(s): %s", job_id,
                 len(skipped), ", ".join(skipped[:5]))
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        job.output_state, job.output_bytes, job.output_files = "kept", size, count
        job.output_kept_at = svc.now()
    sync_team_outputs(svc, team_id)
    return True


def keep_ended(svc: Services, report=None, limit: int = 50) -> int:
    """The reconciler's step: seal the outputs of jobs that ended (a few per tick)."""
    with svc.db.session() as s:
        ids = list(s.scalars(select(Job.id).where(Job.output_state == "open",
                                                  Job.state.in_(states.TERMINAL))
                             .order_by(Job.id).limit(limit)))
    kept = 0
    for jid in ids:
        try:
            kept += _seal(svc, jid)
        except Exception as exc:  # noqa: BLE001 — one job's trouble never stops the tick
            if report is not None:
                report.errors.append(f"keeping the output of job {jid}: {exc}")
    return kept


def ensure_kept(svc: Services, job_id: int) -> str:
    """The job's output state after sealing it if it ended and is not kept yet."""
    _seal(svc, job_id)
    with svc.db.session() as s:
        return s.scalar(select(Job.output_state).where(Job.id == job_id)) or "none"


def _kept_job(svc: Services, actor: Actor, job_id: int) -> tuple[Job, Path]:
    with svc.db.session() as s:
        job, _project, team, _role = job_access(s, actor, job_id)
        team_id, state = team.id, job.output_state
    if state == "open":
        state = ensure_kept(svc, job_id)
    if state != "kept":
        raise OpError(_not_kept(job_id, state), 409 if state in ("open", KEEPING) else 404)
    with svc.db.session() as s:
        return s.get(Job, job_id), kept_dir(svc, team_id, job_id)


def _not_kept(job_id: int, state: str) -> str:
    return {"none": f"job {job_id} has no /output (it never started)",
            "open": f"job {job_id} is still running: its /output is kept when it ends",
            KEEPING: f"job {job_id}'s /output is being kept; try again in a few seconds",
            "deleted": f"job {job_id}'s /output was deleted"}.get(state, f"job {job_id} has no kept /output")


def output_listing(svc: Services, actor: Actor, job_id: int) -> dict:
    with svc.db.session() as s:
        job, _p, team, _r = job_access(s, actor, job_id)
        team_id, state = team.id, job.output_state
    if state == "open":
        state = ensure_kept(svc, job_id)
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        files = None
        if job.output_state == "kept":
            files = [{"path": p, "size": n} for p, n in trees.list_tree(kept_dir(svc, team_id, job_id))]
        return output_dict(job, files)


def output_file(svc: Services, actor: Actor, job_id: int, path: str) -> tuple[Path, int, str]:
    from .names import check_rel_path
    rel = check_rel_path(path)
    _job, top = _kept_job(svc, actor, job_id)
    try:
        p, size = trees.safe_file(top, rel)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise NotFound(f"job {job_id}'s /output has no file {rel}") from None
    return p, size, rel.rsplit("/", 1)[-1]


def output_archive(svc: Services, actor: Actor, job_id: int):
    _job, top = _kept_job(svc, actor, job_id)
    return f"job-{job_id}-output.tar", trees.tar_stream(top, f"job-{job_id}-output")


def delete_output(svc: Services, actor: Actor, job_id: int, confirm: str) -> dict:
    from . import storage
    from .repos import bound_by_active_job
    with svc.db.session() as s:
        job, _p, team, role = job_access(s, actor, job_id)
        if not (actor.is_cluster_admin or role in ROLE_ADMIN):
            raise Forbidden(f"{actor.name} may not delete job outputs in team {team.name} "
                            "(needs role: administrator or owner)")
        if str(confirm or "").strip() != str(job_id):
            raise OpError(f"type the job number ({job_id}) to confirm; deleting its /output is "
                          "irreversible")
        if job.output_state != "kept":
            raise OpError(_not_kept(job_id, job.output_state), 409)
        busy = bound_by_active_job(s, source_job_id=job_id)
        if busy is None:
            busy = s.scalar(select(Job.id).where(Job.continue_from == job_id,
                                                 Job.state.in_(states.ACTIVE), Job.output_state == "none"))
        if busy is not None:
            raise OpError(f"job {busy} binds job {job_id}'s /output and has not started or ended; "
                          "cancel it or wait", 409)
        final = storage.output_samples(s, [job_id])
        team_id = team.id
    storage.bill_final(svc, final)
    with svc.db.transaction() as s:
        n = s.execute(update(Job).where(Job.id == job_id, Job.output_state == "kept").values(
            output_state="deleted", output_deleted_at=svc.now())).rowcount
    if n != 1:
        raise OpError(f"job {job_id}'s /output changed meanwhile; look again", 409)
    trees.make_writable_and_remove(kept_dir(svc, team_id, job_id))
    return {"ok": True, "job": job_id, "deleted": True}


def version_from_job(svc: Services, actor: Actor, job_id: int, team: str, name: str) -> dict:
    """A new version of TEAM/NAME made of job ``job_id``'s kept /output (hard links: no copy)."""
    from . import quota
    from .access import owned_repo
    from .present import version_dict
    from .versions import add_version
    _job, top = _kept_job(svc, actor, job_id)
    with svc.db.session() as s:
        repo = owned_repo(s, actor, team, name, what="add versions")
        repo_id = repo.id
    store = _store(svc)
    store.ensure_repo(repo_id)
    files = store.import_tree(repo_id, top)
    if not files:
        raise OpError(f"job {job_id}'s /output is empty: there is nothing to make a version of")
    with svc.db.transaction() as s:
        repo = owned_repo(s, actor, team, name, what="add versions")
        known = set(quota_known_shas(s, repo.id))
        quota.check_room(s, repo.team, sum(n for _p, sha, n in {f[1]: f for f in files}.values()
                                           if sha not in known))
        v = add_version(s, svc, repo, files, actor.name, f"job {job_id}", job_id)
        return version_dict(v, repo, repo.team.name)


def quota_known_shas(s, repo_id: int) -> list[str]:
    from ..db import DataFile, DataVersion
    return list(s.scalars(select(DataFile.sha256).join(DataVersion, DataFile.version_id == DataVersion.id)
                          .where(DataVersion.repo_id == repo_id).distinct()))


def before_jobs_deleted(svc: Services, job_ids: list[int]) -> list[Path]:
    """Jobs about to be deleted (a job, a project): refused (409) while an active job binds
    or continues one of their outputs; their kept outputs are billed up to this minute. Returns
    the kept directories, to remove (``remove_kept``) once the rows are gone."""
    from . import storage
    from .repos import bound_by_active_job
    if not job_ids:
        return []
    with svc.db.session() as s:
        for jid in job_ids:
            busy = bound_by_active_job(s, source_job_id=jid) or s.scalar(
                select(Job.id).where(Job.continue_from == jid, Job.state.in_(states.ACTIVE),
                                     Job.id.not_in(job_ids)).limit(1))
            if busy is not None and busy not in job_ids:
                raise OpError(f"job {busy} binds job {jid}'s /output and has not ended; cancel "
                              "it or wait; nothing was deleted", 409)
        rows = s.execute(select(Job.id, Project.team_id).join(Project, Job.project_id == Project.id)
                         .where(Job.id.in_(job_ids), Job.output_state.in_(("kept", KEEPING)))).all()
        final = storage.output_samples(s, job_ids)
    storage.bill_final(svc, final)
    return [kept_dir(svc, team_id, jid) for jid, team_id in rows]


def remove_kept(dirs: list[Path]) -> None:
    for d in dirs:
        try:
            trees.make_writable_and_remove(d)
        except OSError as exc:
            log.warning("removing kept output %s failed: %s", d, exc)
