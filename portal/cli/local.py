"""Local mode: the user-facing commands against the database (on the server), through the same
service-layer operations and the same access rule as the web and the API (``portal.teams.access``:
a non-member gets "not found", a member without the role "may not"). Both sources answer the
API's dictionaries (``portal.presenters``), so local and remote output are identical."""
from __future__ import annotations

from .. import presenters
from ..billing import funds
from ..billing import queries as billing_q
from ..data import bindings
from ..data.bindings import project_defaults
from ..data import outputs as data_outputs
from ..data import quota as data_quota
from ..data import repos as data_repos
from ..data import uploads as data_uploads
from ..data import versions as data_versions
from ..identity import user_tokens
from ..jobs import actions as job_actions
from ..jobs import continuing
from ..jobs import part_queries, runner_spec, states
from ..jobs import queries as job_queries
from ..jobs.push_options import JobSettings
from ..projects import service as projects_svc
from ..projects import settings as project_settings
from ..teams import access
from ..teams import service as teams_svc
from ..workspaces import policy as ws_policy, queries as ws_queries, service as ws_service
from .context import Ctx, actor, call
from .output import fail
from .remote import RemoteSource


def source(ctx: Ctx) -> "LocalSource | RemoteSource":
    """Where the user-facing commands get their data: the API (remote) or the database."""
    return ctx.remote if ctx.remote is not None else LocalSource(ctx)


class LocalSource:
    """The user-facing commands against the database (``RemoteSource``'s methods, same answers)."""

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.svc = ctx.svc

    def _me(self) -> access.Actor:
        return actor(self.ctx)

    def _job_dict(self, j, project: str, team: str, pusher: str | None) -> dict:
        log = str(runner_spec.log_path(self.svc, j.id))
        return presenters.job_dict(j, project, team, pusher=pusher, log=log,
                                   shards_of=self.svc.config.shards_of)

    def jobs(self, team_name: str | None, state: str | None, limit: int) -> list[dict]:
        me = self._me()
        with self.svc.db.session() as s:
            team_ids = call(access.visible_team_ids, s, me, team_name)
            rows, _ = call(job_queries.list_jobs, s, limit=limit, team_ids=team_ids, state=state or None)
            names = teams_svc.user_names(s, {j.pusher_id for j, _p, _t in rows})
            return [self._job_dict(j, pn, tn, names.get(j.pusher_id)) for j, pn, tn in rows]

    def job(self, job_id: int) -> dict:
        me = self._me()
        with self.svc.db.session() as s:
            j, p, t, _role = call(access.job_access, s, me, job_id)
            d = self._job_dict(j, p.name, t.name, teams_svc.user_names(s, {j.pusher_id}).get(j.pusher_id))
            d["inputs"] = bindings.inputs_of(s, j.id)
            d.update(part_queries.detail_fields(self.svc, s, j))   # a sweep's tasks, nodes
            return d

    def log_chunk(self, job_id: int, offset: int, task: int | None = None) -> dict:
        me = self._me()
        with self.svc.db.session() as s:  # the state first: a terminal job's log is complete
            j, _p, _t, _role = call(access.job_access, s, me, job_id)
            if task is not None:   # one task of a sweep: its own log and state
                return call(part_queries.task_log_chunk, self.svc, s, j, task, offset)
            state = j.state
        chunk = job_queries.job_log_chunk(self.svc, job_id, offset)
        chunk.update(state=state, terminal=state in states.TERMINAL)
        return chunk

    def cancel(self, job_id: int, task: int | None = None) -> str:
        return call(job_actions.cancel_job, self.svc, self._me(), job_id, task=task).message

    def rerun(self, job_id: int) -> str:
        return call(job_actions.rerun_job, self.svc, self._me(), job_id)[1]

    def delete_job(self, job_id: int) -> str:
        return call(job_actions.delete_job, self.svc, self._me(), job_id, str(job_id)).message

    def tokens(self, user_name: str | None) -> list[dict]:
        me = self._me()
        if user_name is None and self.ctx.actor_name is None:
            fail("name the user whose tokens to list: slipway token list USER "
                 "(or act as one: slipway --as USER token list)")
        with self.svc.db.session() as s:
            return [presenters.token_dict(t) for t in call(user_tokens.list_tokens, s, me, user_name)]

    def revoke_token(self, token_id: int) -> None:
        call(user_tokens.revoke_token, self.svc, self._me(), token_id)

    def projects(self, team_name: str | None) -> list[dict]:
        me = self._me()
        with self.svc.db.session() as s:
            team_ids = call(access.visible_team_ids, s, me, team_name)
            return [dict(presenters.project_dict(p, tn, self.svc.config.repo_url(tn, p.name), st),
                         inputs=project_defaults(p))
                    for p, tn, st in projects_svc.projects_with_stats(s, team_ids)]

    def create_project(self, team_name: str, name: str, gpus: str, image: str | None,
                       time_text: str | None) -> dict:
        st, problems = project_settings.parse_settings(self.svc, gpus=gpus, image=image, time_text=time_text)
        if problems:
            fail("; ".join(problems))
        created = call(projects_svc.create_project, self.svc, self._me(), team_name, name, st)
        return self.project(team_name, created)

    def project(self, team_name: str, name: str) -> dict:
        me = self._me()
        with self.svc.db.session() as s:
            p, _ = call(access.project_access, s, me, team_name, name)
            return dict(presenters.project_dict(p, p.team.name, self.svc.config.repo_url(p.team.name, p.name),
                                                projects_svc.project_stats(s, p.id)),
                        inputs=project_defaults(p))

    def ledger(self, team_name: str) -> tuple[str, list[dict]]:
        me = self._me()
        with self.svc.db.session() as s:
            t, _ = call(access.team_access, s, me, team_name, access.ROLE_ADMIN, "see the ledger")
            entries = [presenters.entry_dict(e, billing_q.describe_entry(e))
                       for e in billing_q.all_entries(s, t.id)]
            return str(teams_svc.balances_for(s, [t.id])[t.id]), entries

    def add_funds(self, team_name: str, amount: str, note: str) -> tuple[str, str]:
        me = self._me()
        added = call(billing_q.add_funds, self.svc, me, team_name, amount, note)
        with self.svc.db.session() as s:
            t, _ = call(access.team_access, s, me, team_name)
            return str(added), str(teams_svc.balances_for(s, [t.id])[t.id])

    def request_funds(self, team_name: str, amount: str, note: str) -> dict:
        return call(funds.request_funds, self.svc, self._me(), team_name, amount, note).as_dict()

    def fund_requests(self, state: str | None, team_name: str | None) -> list[dict]:
        me = self._me()
        with self.svc.db.session() as s:
            rows = call(funds.list_requests, s, me, state=state, team_name=team_name, limit=1000)
            return [v.as_dict() for v in rows]

    def decide_fund_request(self, request_id: int, action: str, note: str) -> dict:
        me = self._me()
        if action == "cancel":
            return call(funds.cancel, self.svc, me, request_id).as_dict()
        fn = funds.approve if action == "approve" else funds.decline
        return call(fn, self.svc, me, request_id, note).as_dict()

    # ------------------------------------------------------------------------ data (issue 11)

    def data_list(self, team_name: str | None) -> list[dict]:
        return call(data_repos.list_repos, self.svc, self._me(), team_name)

    def data_create(self, team_name: str, name: str, kind: str, description: str) -> dict:
        return call(data_repos.create_repo, self.svc, self._me(), team_name, name, kind, description or "")

    def data_show(self, team_name: str, name: str) -> dict:
        return call(data_repos.show_repo, self.svc, self._me(), team_name, name)

    def data_version(self, team_name: str, name: str, version: int | None) -> dict:
        return call(data_versions.show_version, self.svc, self._me(), team_name, name, version)

    def data_delete(self, team_name: str, name: str, confirm: str) -> dict:
        return call(data_repos.delete_repo, self.svc, self._me(), team_name, name, confirm)

    def data_delete_version(self, team_name: str, name: str, number: int, confirm: str) -> dict:
        return call(data_versions.delete_version, self.svc, self._me(), team_name, name, number, confirm)

    def data_share(self, team_name: str, name: str, other: str) -> dict:
        return call(data_repos.share_repo, self.svc, self._me(), team_name, name, other)

    def data_unshare(self, team_name: str, name: str, other: str) -> dict:
        return call(data_repos.unshare_repo, self.svc, self._me(), team_name, name, other)

    def data_public(self, team_name: str, name: str, public: bool) -> dict:
        return call(data_repos.set_public, self.svc, self._me(), team_name, name, public)

    def data_from_job(self, job_id: int, team_name: str, name: str) -> dict:
        return call(data_outputs.version_from_job, self.svc, self._me(), job_id, team_name, name)

    def data_archive(self, team_name: str, name: str, version: int | None):
        return call(data_versions.version_archive, self.svc, self._me(), team_name, name, version)

    def data_file(self, team_name: str, name: str, version: int | None, path: str):
        found = call(data_versions.version_file, self.svc, self._me(), team_name, name, version, path)
        return found[2], _file_chunks(found[0])

    def upload_start(self, team_name: str, name: str, files: list[dict], source: str) -> dict:
        return call(data_uploads.start_upload, self.svc, self._me(), team_name, name, files, source=source)

    def upload_chunk(self, upload_id: str, sha256: str, offset: int, stream, length: int) -> dict:
        return call(data_uploads.receive_chunk, self.svc, self._me(), upload_id, sha256, offset,
                    stream, length)

    def upload_commit(self, upload_id: str) -> dict:
        return call(data_uploads.commit_upload, self.svc, self._me(), upload_id)

    def job_output(self, job_id: int) -> dict:
        return call(data_outputs.output_listing, self.svc, self._me(), job_id)

    def job_output_file(self, job_id: int, path: str):
        found = call(data_outputs.output_file, self.svc, self._me(), job_id, path)
        return found[2], _file_chunks(found[0])

    def job_output_archive(self, job_id: int):
        return call(data_outputs.output_archive, self.svc, self._me(), job_id)

    def delete_output(self, job_id: int) -> dict:
        return call(data_outputs.delete_output, self.svc, self._me(), job_id, str(job_id))

    def continue_job(self, job_id: int) -> tuple[int, str]:
        return call(continuing.continue_job, self.svc, self._me(), job_id)

    def storage(self, team_name: str) -> dict:
        return call(data_quota.storage_usage, self.svc, self._me(), team_name)

    def set_quota(self, team_name: str, quota: str | None) -> dict:
        size = None if quota is None else call(data_quota.parse_size, quota)
        return call(data_quota.set_quota, self.svc, self._me(), team_name, size)

    def update_project(self, team_name: str, name: str, gpus: str | None, image: str | None,
                       time_text: str | None, inputs: dict[str, str] | None, *,
                       compute_type: str | None = None) -> dict:
        me = self._me()
        with self.svc.db.session() as s:
            p, _ = call(access.project_access, s, me, team_name, name)
            base = JobSettings(p.gpu_type, p.gpu_count, p.time_limit_min, p.image)
        st, problems = project_settings.parse_settings(self.svc, gpus=gpus, image=image,
                                                       time_text=time_text, base=base)
        if problems:
            fail("; ".join(problems))
        kw = {} if inputs is None else {"inputs": inputs}
        if compute_type is not None:
            kw["compute_type"] = compute_type
        call(projects_svc.update_settings, self.svc, me, team_name, name, st, **kw)
        return self.project(team_name, name)


    # ------------------------------------------------------------------ workspaces (issue 12)

    def workspace_page(self, page: str) -> str:
        return self.svc.config.base_url.rstrip("/") + page

    def workspace_start(self, team_name: str, name: str, *, branch: str, gpus=None, cpus=None,
                        mem=None, image=None, time=None, inputs=None) -> tuple[dict, str]:
        me = self._me()
        job_id, message = call(ws_service.start_workspace, self.svc, me, team_name, name,
                               branch=branch, gpus=gpus, cpus=cpus, mem=mem, image=image,
                               time=time, inputs=inputs)
        return call(ws_queries.show_workspace, self.svc, me, job_id), message

    def workspaces(self, team_name: str | None, active_only: bool) -> list[dict]:
        return call(ws_queries.list_workspaces, self.svc, self._me(), team_name, active_only=active_only)

    def workspace(self, job_id: int) -> dict:
        return call(ws_queries.show_workspace, self.svc, self._me(), job_id)

    def workspace_stop(self, job_id: int) -> str:
        return call(ws_service.stop_workspace, self.svc, self._me(), job_id)

    def workspace_restart(self, job_id: int) -> tuple[dict, str]:
        me = self._me()
        new_id, message = call(ws_service.restart_workspace, self.svc, me, job_id)
        return call(ws_queries.show_workspace, self.svc, me, new_id), message

    def workspace_policy(self, team_name: str | None) -> dict:
        return call(ws_policy.show_policy, self.svc, self._me(), team_name)

    def set_workspace_policy(self, team_name: str | None, values: dict) -> dict:
        """``values``: the policy's fields (``idle_seconds`` may be "60m": the service reads it)."""
        return call(ws_policy.set_policy, self.svc, self._me(), team_name, values)


def _file_chunks(path, size: int = 1024 * 1024):
    """A file's bytes, 1 MiB at a time (a download in local mode)."""
    with open(path, "rb") as fh:
        while chunk := fh.read(size):
            yield chunk
