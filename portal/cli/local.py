"""Local mode: the user-facing commands against the database (on the server), through the same
service-layer operations and the same access rule as the web and the API (``portal.teams.access``:
a non-member gets "not found", a member without the role "may not"). Both sources answer the
API's dictionaries (``portal.presenters``), so local and remote output are identical."""
from __future__ import annotations

from .. import presenters
from ..billing import funds
from ..billing import queries as billing_q
from ..identity import user_tokens
from ..jobs import actions as job_actions
from ..jobs import runner_spec, states
from ..jobs import queries as job_queries
from ..projects import service as projects_svc
from ..projects import settings as project_settings
from ..teams import access
from ..teams import service as teams_svc
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
        return presenters.job_dict(j, project, team, pusher=pusher, log=log)

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
            return self._job_dict(j, p.name, t.name, teams_svc.user_names(s, {j.pusher_id}).get(j.pusher_id))

    def log_chunk(self, job_id: int, offset: int) -> dict:
        me = self._me()
        with self.svc.db.session() as s:  # the state first: a terminal job's log is complete
            j, _p, _t, _role = call(access.job_access, s, me, job_id)
            state = j.state
        chunk = job_queries.job_log_chunk(self.svc, job_id, offset)
        chunk.update(state=state, terminal=state in states.TERMINAL)
        return chunk

    def cancel(self, job_id: int) -> str:
        return call(job_actions.cancel_job, self.svc, self._me(), job_id).message

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
            return [presenters.project_dict(p, tn, self.svc.config.repo_url(tn, p.name), st)
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
            return presenters.project_dict(p, p.team.name, self.svc.config.repo_url(p.team.name, p.name),
                                          projects_svc.project_stats(s, p.id))

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
