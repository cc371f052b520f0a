"""``slipway`` — the command line (click). Shaped after sbatch/squeue/scancel/sacctmgr.

Two modes:

* **remote** — ``--url URL`` (or ``$SLIPWAY_URL``) and an access token (``$SLIPWAY_TOKEN`` or
  ``--token-file FILE``): the user-facing commands (``job list/show/log/cancel/rerun``, ``project
  list/create/show``, ``team ledger``, ``team add-funds``, ``team request-funds``, ``funds
  list/approve/decline/cancel``, ``job delete``, ``token list/revoke``) go through the JSON API under
  ``/api/`` with ``Authorization: Bearer <token>``; the token says who is acting. The API's
  refusals (403, 404, 400, 409) are printed with its message and the command exits non-zero.
* **local** (no URL) — on the server, reading Slipway's database directly: for cluster
  administrators. ``--as USER`` (or ``$SLIPWAY_USER``) names the Slipway user the command acts as
  and permissions are checked for that user; without it the caller is the operator running the
  command on the server, treated as a cluster administrator.

Both modes build the same dictionaries (``portal.api.serialize``) and print them with the same
code, so their output is identical; permission rules are the web's (the service layer, ``portal.teams.access``).
"""
from __future__ import annotations

import csv
import json
import sys
import time
from datetime import datetime
from decimal import Decimal

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from ..billing import ledger as billing
from .. import integrations as ig
from .. import shellquote
from ..identity.names import personal_team_name
from ..identity.tokens import create_token
from ..config import ConfigError, load_config, served_base_url
from ..db import LedgerEntry, Membership, Team, User, from_micros
from ..jobs import launch, states
from ..private_files import closed_ancestor, set_process_umask
from ..services import Services, build_services

OPERATOR = "root"
console = Console(highlight=False)


class Ctx:
    """Per-invocation state. Tests pass ``obj=Ctx(services=svc)`` to ``CliRunner.invoke``."""

    def __init__(self, actor: str | None = None, services: Services | None = None):
        self.actor_name = actor
        self._svc: Services | None = services
        self.remote: "RemoteSource | None" = None
        self.command = ""

    @property
    def source(self) -> "LocalSource | RemoteSource":
        """Where the user-facing commands get their data: the API (remote) or the database."""
        return self.remote if self.remote is not None else LocalSource(self)

    @property
    def svc(self) -> Services:
        if self.remote is not None:
            raise click.ClickException(
                f"`slipway {self.command}` works only on the Slipway server (local mode, reading its "
                f"database); in remote mode (--url / SLIPWAY_URL = {self.remote.url}) only job, "
                "project list/create/show, team ledger, team add-funds, team request-funds, funds "
                "and token list/revoke are available")
        if self._svc is None:
            try:
                self._svc = build_services(load_config())
            except ConfigError as exc:
                raise click.ClickException(f"configuration: {exc}") from None
        return self._svc

    @property
    def by(self) -> str:
        return self.actor_name or OPERATOR


pass_ctx = click.make_pass_decorator(Ctx)


def _fail(msg: str):
    raise click.ClickException(msg)


def _user(s, name: str) -> User:
    u = s.scalar(select(User).where(User.name == name))
    if u is None:
        _fail(f"there is no user {name!r}; create it with: "
              + shellquote.command(["slipway", "user", "add", name]))
    return u


def _team(s, name: str) -> Team:
    t = s.scalar(select(Team).where(Team.name == name))
    if t is None:
        _fail(f"there is no team {name!r}; see: slipway team list")
    return t


def _require(ctx: Ctx, s, team: Team, roles: tuple[str, ...], what: str) -> None:
    """Operator and cluster admins may do anything; others need one of ``roles`` in ``team``."""
    if ctx.actor_name is None:
        return
    actor = _user(s, ctx.actor_name)
    if actor.is_cluster_admin:
        return
    role = s.scalar(select(Membership.role).where(Membership.user_id == actor.id, Membership.team_id == team.id))
    if role not in roles:
        _fail(f"{actor.name} may not {what} in team {team.name} (needs role: {' or '.join(roles)})")


def _require_admin(ctx: Ctx, s, what: str) -> None:
    if ctx.actor_name is None:
        return
    if not _user(s, ctx.actor_name).is_cluster_admin:
        _fail(f"only cluster administrators may {what}")


def _name(value: str, what: str) -> str:
    try:
        return ig.validate_name(value, what)
    except ValueError as exc:
        _fail(str(exc))


def _sync_slurm(ctx: Ctx) -> None:
    """Converge Slurm's accounts with the teams just changed (the reconciler retries on failure)."""
    from ..teams.slurm_accounts import sync_accounts

    if not hasattr(ctx.svc.backend, "run"):
        return  # a backend without sacctmgr (tests' fake Slurm)
    try:
        sync_accounts(ctx.svc)
    except Exception as exc:  # noqa: BLE001 — the database change stands; Slurm catches up later
        console.print(f"[yellow]warning:[/] Slurm accounts not updated yet ({exc}); "
                      "the reconciler will retry")


def _table(title: str, *cols: str) -> Table:
    """A table whose values are never cut: on a terminal a long value folds onto more lines
    (``overflow="fold"``, no ellipsis); piped, ``_print_table`` prints it at its full width."""
    t = Table(title=title, title_justify="left")
    for c in cols:
        t.add_column(c, overflow="fold")
    return t


def _row(t: Table, *values) -> None:
    """Add a row of plain text: a value such as ``[red]x`` or ``:smile:`` is shown as it is,
    never read as rich markup."""
    from rich.text import Text

    t.add_row(*(v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in values))


def _print_table(t: Table) -> None:
    """On a terminal: the console's width (long values fold). Not on a terminal (a pipe, a
    file, a test): one line per row at the table's natural width, nothing wrapped or cut."""
    from rich.measure import Measurement

    if console.is_terminal:
        console.print(t)
        return
    width = Measurement.get(console, console.options.update_width(1 << 20), t).maximum
    Console(highlight=False, width=max(width, 20)).print(t)


def _print_json(value) -> None:
    """``--json``: full values, stable keys (the API's shapes where the API has the object)."""
    click.echo(json.dumps(value, indent=1, ensure_ascii=False))


@click.group()
@click.option("--as", "actor", envvar="SLIPWAY_USER", default=None,
              help="local mode: act as this Slipway user (default: the operator, a cluster administrator)")
@click.option("--url", envvar="SLIPWAY_URL", default=None,
              help="remote mode: the Slipway portal's URL (e.g. http://slipway.example:8000); "
                   "needs an access token in SLIPWAY_TOKEN or --token-file")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="remote mode: file holding the access token (else $SLIPWAY_TOKEN)")
@click.option("--allow-http", is_flag=True, envvar="SLIPWAY_ALLOW_HTTP",
              help="remote mode: send the token over plain http:// to a host other than this one")
@click.pass_context
def main(click_ctx, actor, url, token_file, allow_http):
    """Slipway: push a branch, get a GPU job, get the results back on the branch."""
    # The CLI, `serve` and `reconcile` create Slipway's private files (database, secrets,
    # repositories): private by default (portal/private_files.py).
    set_process_umask()
    if isinstance(click_ctx.obj, Ctx):
        click_ctx.obj.actor_name = actor
    else:
        click_ctx.obj = Ctx(actor)
    ctx = click_ctx.obj
    ctx.command = f"{click_ctx.invoked_subcommand} …" if click_ctx.invoked_subcommand else ""
    if url:
        from click.core import ParameterSource

        if actor and click_ctx.get_parameter_source("actor") == ParameterSource.COMMANDLINE:
            _fail("--as works only on the server (local mode); with --url the access token says "
                  "who you are")
        ctx.actor_name = None
        ctx.remote = RemoteSource(url, _read_token(token_file), allow_http=allow_http)


def _read_token(token_file: str | None) -> str:
    import os

    if token_file:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            _fail(f"cannot read the token file {token_file}: {exc.strerror or exc}")
        if not token:
            _fail(f"the token file {token_file} is empty")
        return token
    token = (os.environ.get("SLIPWAY_TOKEN") or "").strip()
    if not token:
        _fail("remote mode (--url / SLIPWAY_URL) needs an access token: set SLIPWAY_TOKEN or pass "
              "--token-file FILE (create one on the portal's Tokens page)")
    return token


# ------------------------------------------------------------------ where the data comes from

def _actor(ctx: Ctx, s):
    """The web layer's Actor for this invocation (the operator: a cluster administrator)."""
    from ..billing import queries as billing_q
    from ..identity import user_tokens
    from ..jobs import actions as job_actions
    from ..jobs import queries as job_queries
    from ..projects import service as projects_svc
    from ..projects import settings as project_settings
    from ..teams import access
    from ..teams import service as teams_svc

    if ctx.actor_name is None:
        return access.Actor(id=0, name=OPERATOR, is_cluster_admin=True)
    u = _user(s, ctx.actor_name)
    return access.Actor(id=u.id, name=u.name, is_cluster_admin=bool(u.is_cluster_admin))


def _split_ref(ref: str) -> tuple[str, str]:
    team_name, sep, name = ref.partition("/")
    if not sep or not team_name or not name:
        _fail(f"name the project as TEAM/PROJECT, not {ref!r}")
    return team_name, name


class LocalSource:
    """The user-facing commands against the database (on the server), through the same
    operations and permission rules as the web and the API (the service layer, ``portal.teams.access``)."""

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.svc = ctx.svc

    def _call(self, fn, *a, **kw):
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        try:
            return fn(*a, **kw)
        except access.OpError as exc:
            _fail(str(exc))

    def _job_dict(self, s, j, project: str, team: str, pusher: str | None) -> dict:
        from ..api import serialize

        return serialize.job_dict(j, project, team, pusher=pusher, log=str(launch.log_path(self.svc, j.id)))

    def jobs(self, team_name: str | None, state: str | None, limit: int) -> list[dict]:
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            team_ids = self._call(access.visible_team_ids, s, _actor(self.ctx, s), team_name)
            rows, _ = self._call(job_queries.list_jobs, s, limit=limit, team_ids=team_ids, state=state or None)
            names = teams_svc.user_names(s, {j.pusher_id for j, _p, _t in rows})
            return [self._job_dict(s, j, pn, tn, names.get(j.pusher_id)) for j, pn, tn in rows]

    def job(self, job_id: int) -> dict:
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            j, p, t, _role = self._call(access.job_access, s, _actor(self.ctx, s), job_id)
            return self._job_dict(s, j, p.name, t.name, teams_svc.user_names(s, {j.pusher_id}).get(j.pusher_id))

    def log_chunk(self, job_id: int, offset: int) -> dict:
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:  # the state first: a terminal job's log is complete
            j, _p, _t, _role = self._call(access.job_access, s, _actor(self.ctx, s), job_id)
            state = j.state
        chunk = job_queries.job_log_chunk(self.svc, job_id, offset)
        chunk.update(state=state, terminal=state in states.TERMINAL)
        return chunk

    def cancel(self, job_id: int) -> str:
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            me = _actor(self.ctx, s)
        return self._call(job_actions.cancel_job, self.svc, me, job_id).message

    def rerun(self, job_id: int) -> str:
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            me = _actor(self.ctx, s)
        return self._call(job_actions.rerun_job, self.svc, me, job_id)[1]

    def delete_job(self, job_id: int) -> str:
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            me = _actor(self.ctx, s)
        return self._call(job_actions.delete_job, self.svc, me, job_id, str(job_id)).message

    def tokens(self, user_name: str | None) -> list[dict]:
        from ..api import serialize
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            me = _actor(self.ctx, s)
            if user_name is None and self.ctx.actor_name is None:
                _fail("name the user whose tokens to list: slipway token list USER "
                      "(or act as one: slipway --as USER token list)")
            return [serialize.token_dict(t) for t in self._call(user_tokens.list_tokens, s, me, user_name)]

    def revoke_token(self, token_id: int) -> None:
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            me = _actor(self.ctx, s)
        self._call(user_tokens.revoke_token, self.svc, me, token_id)

    def projects(self, team_name: str | None) -> list[dict]:
        from ..api import serialize
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            team_ids = self._call(access.visible_team_ids, s, _actor(self.ctx, s), team_name)
            return [serialize.project_dict(p, tn, self.svc.config.repo_url(tn, p.name), st)
                    for p, tn, st in projects_svc.projects_with_stats(s, team_ids)]

    def create_project(self, team_name: str, name: str, gpus: str, image: str | None,
                       time_text: str | None) -> dict:
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        st, problems = project_settings.parse_settings(self.svc, gpus=gpus, image=image, time_text=time_text)
        if problems:
            _fail("; ".join(problems))
        with self.svc.db.session() as s:
            me = _actor(self.ctx, s)
        created = self._call(projects_svc.create_project, self.svc, me, team_name, name, st)
        return self.project(team_name, created)

    def project(self, team_name: str, name: str) -> dict:
        from ..api import serialize
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            p, _ = self._call(access.project_access, s, _actor(self.ctx, s), team_name, name)
            return serialize.project_dict(p, p.team.name, self.svc.config.repo_url(p.team.name, p.name),
                                          projects_svc.project_stats(s, p.id))

    def ledger(self, team_name: str) -> tuple[str, list[dict]]:
        from ..api import serialize
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            t, _ = self._call(access.team_access, s, _actor(self.ctx, s), team_name, access.ROLE_ADMIN,
                              "see the ledger")
            rows = s.scalars(select(LedgerEntry).where(LedgerEntry.team_id == t.id).order_by(LedgerEntry.id)
                             .execution_options(yield_per=1000))
            entries = [serialize.entry_dict(e, billing_q.describe_entry(e)) for e in rows]
            return str(teams_svc.balances_for(s, [t.id])[t.id]), entries

    def add_funds(self, team_name: str, amount: str, note: str) -> tuple[str, str]:
        from ..billing import queries as billing_q
        from ..identity import user_tokens
        from ..jobs import actions as job_actions
        from ..jobs import queries as job_queries
        from ..projects import service as projects_svc
        from ..projects import settings as project_settings
        from ..teams import access
        from ..teams import service as teams_svc

        with self.svc.db.session() as s:
            me = _actor(self.ctx, s)
        added = self._call(billing_q.add_funds, self.svc, me, team_name, amount, note)
        with self.svc.db.session() as s:
            t, _ = self._call(access.team_access, s, me, team_name)
            return str(added), str(teams_svc.balances_for(s, [t.id])[t.id])

    def request_funds(self, team_name: str, amount: str, note: str) -> dict:
        from ..billing import funds

        with self.svc.db.session() as s:
            me = _actor(self.ctx, s)
        return self._call(funds.request_funds, self.svc, me, team_name, amount, note).as_dict()

    def fund_requests(self, state: str | None, team_name: str | None) -> list[dict]:
        from ..billing import funds

        with self.svc.db.session() as s:
            rows = self._call(funds.list_requests, s, _actor(self.ctx, s), state=state,
                              team_name=team_name, limit=1000)
            return [v.as_dict() for v in rows]

    def decide_fund_request(self, request_id: int, action: str, note: str) -> dict:
        from ..billing import funds

        with self.svc.db.session() as s:
            me = _actor(self.ctx, s)
        if action == "cancel":
            return self._call(funds.cancel, self.svc, me, request_id).as_dict()
        fn = funds.approve if action == "approve" else funds.decline
        return self._call(fn, self.svc, me, request_id, note).as_dict()


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RemoteSource:
    """The same commands through the JSON API (``/api/``) with a Bearer access token."""

    def __init__(self, url: str, token: str, timeout: float = 30.0, *, allow_http: bool = False):
        from urllib.parse import urlsplit

        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            _fail(f"--url must start with http:// or https://, not {url!r}")
        host = urlsplit(url).hostname or ""
        if url.startswith("http://") and not allow_http and not _is_loopback(host):
            _fail(f"refusing to send your access token over plain http:// to {host}: use https://, "
                  "or --allow-http (SLIPWAY_ALLOW_HTTP=1) on a network you trust")
        self.url = url
        self.token = token
        self.timeout = timeout
        self._http = None

    def request(self, method: str, path: str, *, params: dict | None = None, body: dict | None = None) -> dict:
        import requests

        if self._http is None:
            self._http = requests.Session()
        params = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            r = self._http.request(method, self.url + path, params=params, json=body, timeout=self.timeout,
                                   allow_redirects=False,
                                   headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"})
        except requests.RequestException as exc:
            _fail(f"cannot reach Slipway at {self.url}: {exc}")
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            _fail(f"{self.url}{path} answered HTTP {r.status_code} without Slipway's JSON "
                  "(is --url the Slipway portal?)")
        if r.status_code >= 400 or data.get("ok") is False:
            _fail(str(data.get("error") or f"HTTP {r.status_code} from {self.url}{path}"))
        return data

    @staticmethod
    def _seg(value: str) -> str:
        from urllib.parse import quote

        return quote(str(value), safe="")

    def jobs(self, team_name, state, limit):
        return self.request("GET", "/api/jobs", params={"team": team_name, "state": state,
                                                        "limit": limit})["jobs"]

    def job(self, job_id):
        return self.request("GET", f"/api/jobs/{int(job_id)}")["job"]

    def log_chunk(self, job_id, offset):
        return self.request("GET", f"/api/jobs/{int(job_id)}/log", params={"offset": offset})

    def cancel(self, job_id):
        return self.request("POST", f"/api/jobs/{int(job_id)}/cancel", body={})["message"]

    def rerun(self, job_id):
        return self.request("POST", f"/api/jobs/{int(job_id)}/rerun", body={})["message"]

    def delete_job(self, job_id):
        return self.request("DELETE", f"/api/jobs/{int(job_id)}", body={"confirm": str(int(job_id))})["message"]

    def tokens(self, user_name):
        return self.request("GET", "/api/tokens", params={"user": user_name})["tokens"]

    def revoke_token(self, token_id):
        self.request("DELETE", f"/api/tokens/{int(token_id)}")

    def projects(self, team_name):
        return self.request("GET", "/api/projects", params={"team": team_name})["projects"]

    def create_project(self, team_name, name, gpus, image, time_text):
        body = {"name": name, "gpus": gpus, "image": image, "time": time_text}
        created = self.request("POST", f"/api/teams/{self._seg(team_name)}/projects",
                               body={k: v for k, v in body.items() if v is not None})["project"]
        return self.project(team_name, created["name"])

    def project(self, team_name, name):
        return self.request("GET", f"/api/projects/{self._seg(team_name)}/{self._seg(name)}")["project"]

    def ledger(self, team_name):
        entries, before, balance = [], None, None
        while True:
            d = self.request("GET", f"/api/teams/{self._seg(team_name)}/ledger",
                             params={"limit": 1000, "before": before})
            balance = balance if balance is not None else d["balance"]
            entries.extend(d["entries"])
            before = d.get("next_before")
            if not before:
                break
        entries.sort(key=lambda e: e["id"])
        return balance, entries

    def add_funds(self, team_name, amount, note):
        d = self.request("POST", f"/api/teams/{self._seg(team_name)}/funds", body={"amount": amount, "note": note})
        return d["added"], d["balance"]

    def request_funds(self, team_name, amount, note):
        return self._fund_request(self.request("POST", f"/api/teams/{self._seg(team_name)}/fund-requests",
                                               body={"amount": amount, "note": note})["fund_request"])

    @staticmethod
    def _fund_request(r: dict) -> dict:
        from ..billing.funds import JSON_KEYS  # the local mode's keys, in its order

        return {k: r.get(k) for k in JSON_KEYS}

    def fund_requests(self, state, team_name):
        rows = self.request("GET", "/api/fund-requests", params={"state": state or "all", "team": team_name,
                                                                  "limit": 1000})["fund_requests"]
        return [self._fund_request(r) for r in rows]

    def decide_fund_request(self, request_id, action, note):
        body = {} if action == "cancel" else {"note": note}
        r = self.request("POST", f"/api/fund-requests/{int(request_id)}/{action}", body=body)["fund_request"]
        return self._fund_request(r)


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _usd(value) -> str:
    return ig.format_usd(Decimal(str(value)))


# ------------------------------------------------------------------------------ serve etc.

def _slipway_answers(host: str, port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as r:
            return r.status == 200 and b'"ok"' in r.read(4096)
    except (OSError, ValueError):
        return False


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=16, show_default=True, type=click.IntRange(8, 256))
@click.option("--no-reconciler", is_flag=True, help="do not start the reconciler thread")
@pass_ctx
def serve(ctx: Ctx, host, port, threads, no_reconciler):
    """Run the portal (waitress) and the reconciler thread."""
    import logging

    import waitress

    from ..app import create_app

    if _slipway_answers(host, port):  # `make run` again while it runs: quick and harmless
        console.print(f"Slipway is already running on http://{host}:{port}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = ctx.svc.config
    if not cfg.base_url_is_set:  # git hooks and jobs call back where this server listens
        cfg.base_url = served_base_url(host, port)
    cfg.remember_served_url()  # the CLI and a separate reconciler use the same URL
    app = create_app(cfg, services_=ctx.svc, start_reconciler=not no_reconciler)
    how = ("configured base_url" if cfg.base_url_is_set
           else "from --host/--port; set SLIPWAY_BASE_URL to change")
    console.print(f"Slipway on http://{host}:{port} (public URL {cfg.base_url}, {how}; "
                  f"data in {cfg.data_dir})")
    closed = closed_ancestor(cfg.jobs_dir)
    if closed is not None:
        console.print(f"[yellow]warning:[/] job users cannot reach {cfg.jobs_dir}: {closed} is not "
                      "traversable by others (chmod o+x, or set SLIPWAY_DATA_DIR elsewhere)")
    # git-lfs objects stream through the app: allow large bodies (waitress spools them to disk).
    waitress.serve(app, host=host, port=port, threads=threads, ident="slipway",
                   max_request_body_size=64 * 1024**3, channel_timeout=300)


@main.command()
@click.option("--once", is_flag=True, help="run one tick and exit")
@pass_ctx
def reconcile(ctx: Ctx, once):
    """Make the database follow Slurm, bill, cut off (one tick with --once)."""
    from ..jobs.reconciler import Reconciler

    r = Reconciler(ctx.svc)
    while True:
        rep = r.tick()
        for jid, old, new in rep.changes:
            console.print(f"job {jid}: {old} -> {new}")
        if rep.charges:
            console.print(f"{rep.charges} charge(s) written")
        for team in rep.cut_off:
            console.print(f"team {team}: balance exhausted, jobs cancelled")
        for err in rep.errors:
            console.print(f"[yellow]warning:[/] {err}")
        if once:
            if not rep.polled:
                sys.exit(2)
            return
        cfg = ctx.svc.config
        time.sleep(min(cfg.reconcile_interval, cfg.reconcile_busy_interval) if rep.busy
                   else cfg.reconcile_interval)


# ----------------------------------------------------------------------------------- users

@main.group()
def user():
    """Users."""


@user.command("add")
@click.argument("name")
@click.option("--unix-user", help="Unix account jobs run as (default: NAME)")
@click.option("--admin", is_flag=True, help="cluster administrator")
@click.option("--password", "password", default=None,
              help="local login password (visible to other local users: prefer --password-stdin)")
@click.option("--password-stdin", is_flag=True, help="read the local login password from stdin")
@pass_ctx
def user_add(ctx: Ctx, name, unix_user, admin, password, password_stdin):
    """Add a user and their personal team (NAME with '@' and '.' replaced by '-')."""
    team_name = _name(personal_team_name(name), "personal team")
    password_hash = _new_password_hash(password, password_stdin, prompt=False)
    with ctx.svc.db.transaction() as s:
        _require_admin(ctx, s, "add users")
        if s.scalar(select(User.id).where(User.name == name)):
            _fail(f"user {name!r} exists already")
        if s.scalar(select(Team.id).where(Team.name == team_name)):
            _fail(f"team {team_name!r} exists already; cannot create {name}'s personal team")
        now = ctx.svc.now()
        u = User(name=name, unix_user=unix_user or name, is_cluster_admin=admin, created_at=now,
                 password_hash=password_hash)
        t = Team(name=team_name, personal=True, created_at=now)
        s.add_all([u, t])
        s.flush()
        s.add(Membership(user_id=u.id, team_id=t.id, role="owner", created_at=now))
    _sync_slurm(ctx)
    console.print(f"user {name} (unix {unix_user or name}{', cluster admin' if admin else ''}), "
                  f"personal team {team_name}")


def _new_password_hash(password, from_stdin: bool, *, prompt: bool) -> str | None:
    """Hash of the password given by --password / --password-stdin (or a prompt); None if none."""
    from ..identity.passwords import PasswordRejected, hash_password

    if password is not None and from_stdin:
        _fail("give either --password or --password-stdin, not both")
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is None and prompt:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    if password is None:
        return None
    try:
        return hash_password(password)
    except PasswordRejected as exc:
        _fail(str(exc))


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="read the new password from stdin (else prompt)")
@pass_ctx
def user_passwd(ctx: Ctx, name, password_stdin):
    """Set NAME's local login password (accounts without LDAP)."""
    with ctx.svc.db.session() as s:
        if ctx.actor_name != name:
            _require_admin(ctx, s, "set other users' passwords")
        u = _user(s, name)
        if u.ldap_dn:
            _fail(f"{name}'s password lives in LDAP ({u.ldap_dn}); change it there")
    password_hash = _new_password_hash(None, password_stdin, prompt=True)
    with ctx.svc.db.transaction() as s:
        _user(s, name).password_hash = password_hash
    console.print(f"password of {name} set")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (full values)")
@pass_ctx
def user_list(ctx: Ctx, as_json):
    t = _table("Users", "name", "unix user", "admin", "teams")
    users = []
    with ctx.svc.db.session() as s:
        for u in s.scalars(select(User).order_by(User.name)):
            memberships = sorted((m.team.name, m.role) for m in u.memberships)
            users.append({"name": u.name, "unix_user": u.unix_user, "is_cluster_admin": bool(u.is_cluster_admin),
                          "active": bool(u.active), "ldap_dn": u.ldap_dn,
                          "teams": [{"team": tn, "role": r} for tn, r in memberships]})
            _row(t, u.name, u.unix_user, "yes" if u.is_cluster_admin else "",
                 ", ".join(f"{tn} ({r})" for tn, r in memberships))
    if as_json:
        _print_json(users)
    else:
        _print_table(t)


@main.group()
def token():
    """Access tokens (git password)."""


@token.command("create")
@click.argument("username")
@click.option("--name", default="default", show_default=True)
@pass_ctx
def token_create(ctx: Ctx, username, name):
    """Create an access token; it is printed once and never stored in clear."""
    with ctx.svc.db.transaction() as s:
        u = _user(s, username)
        if ctx.actor_name is not None and ctx.actor_name != username:
            _require_admin(ctx, s, "create tokens for other users")
        tok = create_token(s, u, name, now=ctx.svc.now())
    click.echo(tok)
    click.echo(f"(token {name!r} for {username}; use it as the git password — it is not shown again)",
               err=True)


@token.command("list")
@click.argument("username", metavar="[USER]", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's token shape)")
@pass_ctx
def token_list(ctx: Ctx, username, as_json):
    """Your access tokens (cluster administrators: USER's): id, name, prefix, created, last used,
    revoked. Never the secret: it is shown once, at creation, and stored only as a hash."""
    tokens = ctx.source.tokens(username)
    if as_json:
        _print_json(tokens)
        return
    from rich.markup import escape

    t = _table(f"Tokens of {escape(username)}" if username else "Tokens", "id", "name", "prefix", "created",
               "last used", "revoked")

    def when(v):
        return _when(v).strftime("%Y-%m-%d %H:%M") if v else ""

    for k in tokens:
        _row(t, str(k["id"]), k["name"], k["prefix"], when(k["created_at"]), when(k["last_used_at"]),
             when(k["revoked_at"]))
    _print_table(t)


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@pass_ctx
def token_revoke(ctx: Ctx, token_id):
    """Revoke access token ID (see `slipway token list`): your own; a cluster administrator
    anyone's. Git and the API refuse it from now on."""
    ctx.source.revoke_token(token_id)
    click.echo(f"token {token_id} revoked")


# ----------------------------------------------------------------------------------- teams

@main.group()
def team():
    """Teams, members and money."""


@team.command("create")
@click.argument("name")
@click.option("--owner", help="user who owns the team")
@pass_ctx
def team_create(ctx: Ctx, name, owner):
    name = _name(name, "team")
    with ctx.svc.db.transaction() as s:
        if s.scalar(select(Team.id).where(Team.name == name)):
            _fail(f"team {name!r} exists already")
        owner = owner or ctx.actor_name
        now = ctx.svc.now()
        t = Team(name=name, personal=False, created_at=now)
        s.add(t)
        s.flush()
        if owner:
            s.add(Membership(user_id=_user(s, owner).id, team_id=t.id, role="owner", created_at=now))
    _sync_slurm(ctx)
    console.print(f"team {name} (Slurm account team-{name})" + (f", owner {owner}" if owner else ""))


@team.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (full values)")
@pass_ctx
def team_list(ctx: Ctx, as_json):
    _print_teams(ctx, as_json)


def _team_json(ctx: Ctx, tm: Team, balance) -> dict:
    """The API's team shape (``/api/teams``) plus the member count; no actor's role here."""
    return {"name": tm.name, "personal": tm.personal, "balance": str(balance),
            "slurm_account": ctx.svc.config.slurm_account(tm.name),
            "created_at": tm.created_at.isoformat() if tm.created_at else None,
            "members": len(tm.memberships)}


def _print_teams(ctx: Ctx, as_json: bool = False) -> None:
    t = _table("Teams", "team", "personal", "members", "balance")
    rows = []
    with ctx.svc.db.session() as s:
        bal = billing.balances(s)
        for tm in s.scalars(select(Team).order_by(Team.name)):
            b = bal.get(tm.id, from_micros(0))
            rows.append(_team_json(ctx, tm, b))
            _row(t, tm.name, "yes" if tm.personal else "", str(len(tm.memberships)), ig.format_usd(b))
    if as_json:
        _print_json(rows)
    else:
        _print_table(t)


@team.command("add-member")
@click.argument("team_name", metavar="TEAM")
@click.argument("username", metavar="USER")
@click.option("--role", type=click.Choice(["user", "administrator", "owner"]), default="user", show_default=True)
@pass_ctx
def team_add_member(ctx: Ctx, team_name, username, role):
    """Add USER to TEAM or change their role (the web's rules: administrators add and change
    members; granting owner or changing an owner's role needs an owner; the last owner stays)."""
    from ..billing import queries as billing_q
    from ..identity import user_tokens
    from ..jobs import actions as job_actions
    from ..jobs import queries as job_queries
    from ..projects import service as projects_svc
    from ..projects import settings as project_settings
    from ..teams import access
    from ..teams import service as teams_svc

    with ctx.svc.db.session() as s:
        actor = _actor(ctx, s)
    try:
        teams_svc.set_member(ctx.svc, actor, team_name, username, role)
    except access.OpError as exc:
        _fail(str(exc))
    _sync_slurm(ctx)
    console.print(f"{username} is {role} of team {team_name}")


@team.command("remove-member")
@click.argument("team_name", metavar="TEAM")
@click.argument("username", metavar="USER")
@pass_ctx
def team_remove_member(ctx: Ctx, team_name, username):
    """Remove USER from TEAM (an owner only by an owner; never the last owner)."""
    from ..billing import queries as billing_q
    from ..identity import user_tokens
    from ..jobs import actions as job_actions
    from ..jobs import queries as job_queries
    from ..projects import service as projects_svc
    from ..projects import settings as project_settings
    from ..teams import access
    from ..teams import service as teams_svc

    with ctx.svc.db.session() as s:
        actor = _actor(ctx, s)
    try:
        teams_svc.remove_member(ctx.svc, actor, team_name, username)
    except access.OpError as exc:
        _fail(str(exc))
    _sync_slurm(ctx)
    console.print(f"{username} removed from team {team_name}")


@team.command("add-funds")
@click.argument("team_name", metavar="TEAM")
@click.argument("amount")
@click.option("--note", default="", help="why (shown in the ledger)")
@pass_ctx
def team_add_funds(ctx: Ctx, team_name, amount, note):
    """Add AMOUNT dollars (e.g. 25.00) to TEAM's balance: cluster administrators (and the
    operator) only; team administrators and owners use `team request-funds`."""
    added, balance = ctx.source.add_funds(team_name, amount, note)
    console.print(f"added {_usd(added)} to team {team_name}; balance {_usd(balance)}")


@team.command("request-funds")
@click.argument("team_name", metavar="TEAM")
@click.argument("amount")
@click.option("--note", default="", help="why (the cluster administrators read it; 500 characters at most)")
@click.option("--json", "as_json", is_flag=True, help="the request as JSON (the API's shape)")
@pass_ctx
def team_request_funds(ctx: Ctx, team_name, amount, note, as_json):
    """Ask the cluster administrators for AMOUNT dollars (e.g. 25.00) for TEAM (its
    administrators and owners); see it with `slipway funds list --team TEAM`."""
    r = ctx.source.request_funds(team_name, amount, note)
    if as_json:
        _print_json(r)
        return
    click.echo(f"fund request {r['id']}: {_usd(r['amount'])} for team {r['team']} ({r['state']}); "
               "the cluster administrators approve or decline it")


# ------------------------------------------------------------------------------ fund requests

@main.group("funds")
def funds_group():
    """Fund requests: team administrators request, cluster administrators approve or decline."""


@funds_group.command("list")
@click.option("--state", type=click.Choice(["pending", "approved", "declined", "cancelled", "all"]),
              default="pending", show_default=True)
@click.option("--team", "team_name", help="one team's requests (its administrators and owners)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def funds_list(ctx: Ctx, state, team_name, as_json):
    """Fund requests, oldest first: every team's for cluster administrators (and the operator),
    else those of the teams you administer."""
    rows = ctx.source.fund_requests(None if state == "all" else state, team_name)
    if as_json:
        _print_json(rows)
        return
    t = _table(f"Fund requests ({state})", "id", "team", "amount", "requested", "note", "state", "decided")
    for r in rows:
        decided = (f"{r['decided_by']} {_when(r['decided_at']):%Y-%m-%d %H:%M}"
                   + (f": {r['decision_note']}" if r["decision_note"] else "")) if r["decided_by"] else ""
        _row(t, r["id"], r["team"], _usd(r["amount"]),
             f"{r['requested_by']} {_when(r['created_at']):%Y-%m-%d %H:%M}", r["note"], r["state"], decided)
    _print_table(t)


def _decided(r: dict) -> None:
    line = f"fund request {r['id']} of team {r['team']} ({_usd(r['amount'])}): {r['state']}"
    if r["state"] == "approved":
        line += f"; ledger entry {r['ledger_entry']}"
    click.echo(line)


@funds_group.command("approve")
@click.argument("request_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--note", default="", help="a note kept with the decision")
@pass_ctx
def funds_approve(ctx: Ctx, request_id, note):
    """Approve fund request ID: its amount is deposited in the team's ledger, once (cluster
    administrators and the operator)."""
    _decided(ctx.source.decide_fund_request(request_id, "approve", note))


@funds_group.command("decline")
@click.argument("request_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--note", required=True, help="the reason, shown to the team")
@pass_ctx
def funds_decline(ctx: Ctx, request_id, note):
    """Decline fund request ID, saying why (cluster administrators and the operator)."""
    _decided(ctx.source.decide_fund_request(request_id, "decline", note))


@funds_group.command("cancel")
@click.argument("request_id", metavar="ID", type=click.IntRange(min=1))
@pass_ctx
def funds_cancel(ctx: Ctx, request_id):
    """Withdraw your team's pending fund request ID (its administrators and owners)."""
    _decided(ctx.source.decide_fund_request(request_id, "cancel", ""))


@team.command("balance")
@click.argument("team_name", metavar="TEAM", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (full values)")
@pass_ctx
def team_balance(ctx: Ctx, team_name, as_json):
    with ctx.svc.db.session() as s:
        if team_name:
            t = _team(s, team_name)
            _require(ctx, s, t, ("user", "administrator", "owner"), "see the balance")
            b = billing.balance(s, t.id)
            if as_json:
                _print_json(_team_json(ctx, t, b))
            else:
                click.echo(f"{t.name}: {ig.format_usd(b)}")
            return
        _require_admin(ctx, s, "see every team's balance")
    _print_teams(ctx, as_json)


@team.command("ledger")
@click.argument("team_name", metavar="TEAM")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout (the API's ledger shape)")
@pass_ctx
def team_ledger(ctx: Ctx, team_name, as_csv, as_json):
    """Every entry of TEAM's ledger: deposits and charges (job, minutes, rate)."""
    balance, entries = ctx.source.ledger(team_name)
    if as_json:
        _print_json({"team": team_name, "balance": str(balance), "entries": entries})
        return

    if as_csv:  # the web export's columns and cells (formula-like text neutralised)
        from ..billing.ledger_csv import LEDGER_CSV_HEADER, ledger_csv_row

        w = csv.writer(sys.stdout)
        w.writerow(LEDGER_CSV_HEADER)
        for e in entries:
            w.writerow(ledger_csv_row(e))
        return
    t = _table(f"Ledger of {team_name} — balance {_usd(balance)}", "when", "kind", "amount", "what")
    for e in entries:
        if e["kind"] == "gpu":
            rate = _usd(e["rate"]) if e["rate"] is not None else "?"
            what = (f"job {e['job']} attempt {e['attempt']}: min {e['from_minute']}-{e['to_minute']}, "
                    f"{e['gpu_count']}x {e['gpu_type']} @ {rate}/h")
        elif e["kind"] == "storage":
            what = e["note"] or e["resource"] or ""
        else:
            what = f"{e['created_by']}: {e['note']}" if e["note"] else (e["created_by"] or "")
        _row(t, _when(e["created_at"]).strftime("%Y-%m-%d %H:%M"), e["kind"],
             str(Decimal(e["amount"]).quantize(Decimal("0.000001"))), what)
    _print_table(t)


# -------------------------------------------------------------------------------- projects

@main.group()
def project():
    """Projects (one git repository each)."""


@project.command("create")
@click.argument("team_name", metavar="TEAM")
@click.argument("name")
@click.option("--gpus", default="a4000:1", show_default=True, help="TYPE:COUNT, e.g. a4000:2")
@click.option("--image", default=None, help="image from the catalog (default: the config's)")
@click.option("--time", "time_", default=None, help="time limit: minutes, 30m, 2h")
@pass_ctx
def project_create(ctx: Ctx, team_name, name, gpus, image, time_):
    """Create a project and its git repository; print the remote URL (administrators and owners)."""
    p = ctx.source.create_project(team_name, name, gpus, image, time_)
    url = p["remote_url"]
    # plain echo, never rich: a console wraps long lines and a copied command would lose its end
    click.echo(f"project {p['team']}/{p['name']}: {p['gpu_type']} x{p['gpu_count']}, image {p['image']}, "
               f"{p['time_limit_min']} min")
    click.echo(f"remote: {url}\n\n  {shellquote.command(['git', 'remote', 'add', 'slipway', url])}\n"
               f"  # write slipway-entrypoint.sh at the repository root, then:\n"
               f"  git checkout -b exp-1 && git add -A && git commit -m run && git push slipway exp-1\n"
               f"  # git asks for your user name and an access token (slipway token create USER)")


@project.command("list")
@click.option("--team", "team_name")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's project shape)")
@pass_ctx
def project_list(ctx: Ctx, team_name, as_json):
    """Projects of your teams (the operator and cluster admins: every team), or of --team."""
    projects = ctx.source.projects(team_name)
    if as_json:
        _print_json(projects)
        return
    t = _table("Projects", "project", "gpus", "image", "time", "jobs")
    for p in projects:
        _row(t, f"{p['team']}/{p['name']}", f"{p['gpu_type']} x{p['gpu_count']}", p["image"],
             f"{p['time_limit_min']} min", str(p["jobs"]))
    _print_table(t)


@project.command("show")
@click.argument("ref", metavar="TEAM/PROJECT")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (the API's project shape)")
@pass_ctx
def project_show(ctx: Ctx, ref, as_json):
    p = ctx.source.project(*_split_ref(ref))
    if as_json:  # the project shape of /api/projects (remote mode's extras left out: same output)
        _print_json({k: v for k, v in p.items() if k not in ("storage_bytes", "recent_jobs")})
        return
    click.echo(f"project {p['team']}/{p['name']}\n  gpus   {p['gpu_type']} x{p['gpu_count']}\n"
               f"  image  {p['image']}\n  time   {p['time_limit_min']} min\n  remote {p['remote_url']}\n"
               f"  jobs   {p['jobs']} ({p['active_jobs']} active)")


@project.command("delete")
@click.argument("ref", metavar="TEAM/PROJECT")
@click.option("--confirm", required=True, help="type TEAM/PROJECT again: deletion is irrecoverable")
@pass_ctx
def project_delete(ctx: Ctx, ref, confirm):
    """Delete a project, its repository, LFS objects and jobs — irrecoverably."""
    from ..billing import queries as billing_q
    from ..identity import user_tokens
    from ..jobs import actions as job_actions
    from ..jobs import queries as job_queries
    from ..projects import service as projects_svc
    from ..projects import settings as project_settings
    from ..teams import access
    from ..teams import service as teams_svc  # the one implementation, shared with the web page and the API

    if confirm != ref:
        _fail(f"--confirm must be exactly {ref!r}; nothing was deleted")
    team_name, name = _split_ref(ref)
    with ctx.svc.db.session() as s:
        actor = _actor(ctx, s)
    try:
        n = projects_svc.delete_project(ctx.svc, actor, team_name, name, confirm)
    except access.OpError as exc:
        _fail(str(exc))
    console.print(f"project {ref} deleted ({n} job(s))")


# ------------------------------------------------------------------------------------ jobs

@main.group()
def job():
    """Jobs (squeue/scancel-like)."""


def _cli_job_json(d: dict) -> dict:
    """The ``--json`` shape of a job (``project`` is TEAM/PROJECT), from the API's job dict."""
    keys = ("id", "project", "branch", "commit", "pusher", "state", "previous_state", "reason", "gpu_type",
            "gpu_count", "image", "time_limit_min", "slurm_job_id", "node", "port", "exit_code",
            "submitted_at", "started_at", "ended_at", "cost", "cancel_requested", "cancel_reason",
            "results_ref", "results_sha", "branch_updated", "log")
    return {k: (f"{d['team']}/{d['project']}" if k == "project" else d.get(k)) for k in keys}


@job.command("list")
@click.option("--team", "team_name", help="one team (default: your teams; the operator: every team)")
@click.option("--state", help="a state, or 'active'")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def job_list(ctx: Ctx, team_name, state, limit, as_json):
    rows = ctx.source.jobs(team_name, state, limit)
    if as_json:
        click.echo(json.dumps([_cli_job_json(j) for j in rows], indent=1))
        return
    t = _table("Jobs", "job", "project", "branch", "state", "gpus", "slurm", "node", "cost", "reason")
    for j in rows:
        _row(t, str(j["id"]), f"{j['team']}/{j['project']}", j["branch"], j["state"],
             f"{j['gpu_type']} x{j['gpu_count']}", str(j["slurm_job_id"] or ""), j["node"] or "",
             _usd(j["cost"]), (j["reason"] or "").replace("\n", " "))
    _print_table(t)


@job.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def job_show(ctx: Ctx, job_id, as_json):
    j = ctx.source.job(job_id)
    if as_json:
        click.echo(json.dumps(_cli_job_json(j), indent=1))
        return

    def when(key):
        t = _when(j[key])
        return str(t) if t else ""

    results = f"{j['results_ref'] or ''} {j['results_sha'] or ''}".strip()
    fields = [
        ("project", f"{j['team']}/{j['project']}"), ("branch", j["branch"]), ("commit", j["commit"]),
        ("pusher", j["pusher"] or ""),
        ("state", j["state"] + (f" (was {j['previous_state']})" if j["previous_state"] else "")),
        ("reason", j["reason"] or ""), ("gpus", f"{j['gpu_type']} x{j['gpu_count']}"), ("image", j["image"]),
        ("time limit", f"{j['time_limit_min']} min"), ("slurm job", str(j["slurm_job_id"] or "")),
        ("node", j["node"] or ""), ("port", str(j["port"] or "")),
        ("exit code", "" if j["exit_code"] is None else str(j["exit_code"])),
        ("submitted", when("submitted_at")), ("started", when("started_at")), ("ended", when("ended_at")),
        ("cost", _usd(j["cost"])), ("cancel", j["cancel_reason"] or ""), ("results", results),
        ("branch updated", "" if j["branch_updated"] is None else ("yes" if j["branch_updated"] else "no")),
        ("log", j["log"] or ""),
    ]
    t = Table(show_header=False, title=f"Job {job_id}", title_justify="left")
    t.add_column("field", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    for k, v in fields:
        _row(t, k, v)
    _print_table(t)


@job.command("log")
@click.argument("job_id", type=int)
@click.option("--follow/--no-follow", "-f/-F", default=True, show_default=True,
              help="keep printing the live log until the job ends (--no-follow: what is there now)")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.05, 60),
              help="seconds between polls while following")
@pass_ctx
def job_log(ctx: Ctx, job_id, follow, interval):
    """Print job JOB_ID's log; by default follow it until the job has ended."""
    source = ctx.source
    pos = 0
    while True:
        chunk = source.log_chunk(job_id, pos)
        if chunk["data"]:
            sys.stdout.write(chunk["data"])
            sys.stdout.flush()
        pos = chunk["next_offset"]
        more = pos < chunk["size"]  # a big log comes in pieces: fetch the rest at once
        if more:
            continue
        if not chunk["exists"]:
            if not follow:
                _fail(f"job {job_id} has no log yet ({chunk['state']})")
            if chunk["terminal"]:
                _fail(f"job {job_id} ended ({chunk['state']}) without a log")
        if not follow or chunk["terminal"]:
            return
        time.sleep(interval)


@job.command("cancel")
@click.argument("job_id", type=int)
@pass_ctx
def job_cancel(ctx: Ctx, job_id):
    """Cancel a job of one of your teams (a running job still pushes its files)."""
    console.print(ctx.source.cancel(job_id))


@job.command("rerun")
@click.argument("job_id", type=int)
@pass_ctx
def job_rerun(ctx: Ctx, job_id):
    """Run a job again (no empty commit needed): same branch at its current tip, same GPUs,
    time limit and image; the same rules as a push."""
    click.echo(ctx.source.rerun(job_id))


@job.command("delete")
@click.argument("job_id", type=int)
@click.option("--yes", is_flag=True, help="confirm: deletion is irrecoverable")
@pass_ctx
def job_delete(ctx: Ctx, job_id, yes):
    """Delete an ENDED job: its results ref (results/BRANCH/JOB_ID), log and files, and its row;
    its charges stay in the ledger (team administrators and owners; cluster administrators)."""
    if not yes:
        _fail(f"deleting job {job_id} is irrecoverable: run again with --yes to confirm; "
              "nothing was deleted")
    click.echo(ctx.source.delete_job(job_id))


# ------------------------------------------------------------------------------------ LDAP

@main.group()
def ldap():
    """LDAP: directory users become users, groups become teams."""


@ldap.command("sync")
@click.option("--allow-empty", is_flag=True, help="apply even if the directory returns no users")
@pass_ctx
def ldap_sync(ctx: Ctx, allow_empty):
    """Converge users and teams with the directory now (the reconciler also does it periodically)."""
    from ..identity.ldap_directory import DirectoryUnavailable
    from ..identity.team_sync import SyncRefused, sync_ldap

    with ctx.svc.db.session() as s:
        _require_admin(ctx, s, "sync LDAP")
    try:
        rep = sync_ldap(ctx.svc, allow_empty=allow_empty)
    except (DirectoryUnavailable, SyncRefused) as exc:
        _fail(str(exc))
    from rich.markup import escape  # names and DNs come from the directory: no markup

    for change in rep.changes:
        console.print(escape(change))
    for change in rep.slurm_changes:
        console.print(f"slurm: {escape(change)}")
    for w in rep.warnings + rep.errors:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    console.print(rep.summary() if rep.changed else
                  f"{rep.users_seen} LDAP users, {rep.groups_seen} groups: in step, nothing changed")


if __name__ == "__main__":  # pragma: no cover
    main()
