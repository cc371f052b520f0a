"""``slipway`` — the command line (click). Shaped after sbatch/squeue/scancel/sacctmgr.

Who is calling: ``--as USER`` (or ``$SLIPWAY_USER``) names the Slipway user the command acts as
and permissions are checked for that user; without it the caller is the operator running the
command on the server (it can read the database), treated as a cluster administrator.
"""
from __future__ import annotations

import csv
import json
import sys
import time

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from . import billing
from . import integrations as ig
from .auth import create_token
from .config import ConfigError, load_config
from .db import Job, LedgerEntry, Membership, Project, Team, User, from_micros
from .jobs import launch, service, states
from .services import Services, build_services

OPERATOR = "root"
console = Console(highlight=False)


class Ctx:
    """Per-invocation state. Tests pass ``obj=Ctx(services=svc)`` to ``CliRunner.invoke``."""

    def __init__(self, actor: str | None = None, services: Services | None = None):
        self.actor_name = actor
        self._svc: Services | None = services

    @property
    def svc(self) -> Services:
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
        _fail(f"there is no user {name!r}; create it with: slipway user add {name}")
    return u


def _team(s, name: str) -> Team:
    t = s.scalar(select(Team).where(Team.name == name))
    if t is None:
        _fail(f"there is no team {name!r}; see: slipway team list")
    return t


def _project(s, ref: str) -> Project:
    team_name, sep, name = ref.partition("/")
    if not sep:
        _fail(f"name the project as TEAM/PROJECT, not {ref!r}")
    p = launch.find_project(s, ref)
    if p is None:
        _fail(f"there is no project {ref!r}; see: slipway project list")
    return p


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


def personal_team_name(user_name: str) -> str:
    return user_name.lower().replace("@", "-").replace(".", "-")


def _sync_slurm(ctx: Ctx) -> None:
    """Converge Slurm's accounts with the teams just changed (the reconciler retries on failure)."""
    from .slurm_accounts import sync_accounts

    if not hasattr(ctx.svc.backend, "run"):
        return  # a backend without sacctmgr (tests' fake Slurm)
    try:
        sync_accounts(ctx.svc)
    except Exception as exc:  # noqa: BLE001 — the database change stands; Slurm catches up later
        console.print(f"[yellow]warning:[/] Slurm accounts not updated yet ({exc}); "
                      "the reconciler will retry")


def _table(title: str, *cols: str) -> Table:
    t = Table(title=title, title_justify="left")
    for c in cols:
        t.add_column(c)
    return t


@click.group()
@click.option("--as", "actor", envvar="SLIPWAY_USER", default=None,
              help="act as this Slipway user (default: the operator, a cluster administrator)")
@click.pass_context
def main(click_ctx, actor):
    """Slipway: push a branch, get a GPU job, get the results back on the branch."""
    if isinstance(click_ctx.obj, Ctx):
        click_ctx.obj.actor_name = actor
    else:
        click_ctx.obj = Ctx(actor)


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

    from .app import create_app

    if _slipway_answers(host, port):  # `make run` again while it runs: quick and harmless
        console.print(f"Slipway is already running on http://{host}:{port}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(ctx.svc.config, services_=ctx.svc, start_reconciler=not no_reconciler)
    console.print(f"Slipway on http://{host}:{port} (public {ctx.svc.config.base_url})")
    # git-lfs objects stream through the app: allow large bodies (waitress spools them to disk).
    waitress.serve(app, host=host, port=port, threads=threads, ident="slipway",
                   max_request_body_size=64 * 1024**3, channel_timeout=300)


@main.command()
@click.option("--once", is_flag=True, help="run one tick and exit")
@pass_ctx
def reconcile(ctx: Ctx, once):
    """Make the database follow Slurm, bill, cut off (one tick with --once)."""
    from .reconciler import Reconciler

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
        time.sleep(ctx.svc.config.reconcile_interval)


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
    from .identity.passwords import PasswordRejected, hash_password

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
@pass_ctx
def user_list(ctx: Ctx):
    t = _table("Users", "name", "unix user", "admin", "teams")
    with ctx.svc.db.session() as s:
        for u in s.scalars(select(User).order_by(User.name)):
            teams = ", ".join(f"{m.team.name} ({m.role})" for m in u.memberships)
            t.add_row(u.name, u.unix_user, "yes" if u.is_cluster_admin else "", teams)
    console.print(t)


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
@pass_ctx
def team_list(ctx: Ctx):
    _print_teams(ctx)


def _print_teams(ctx: Ctx) -> None:
    t = _table("Teams", "team", "personal", "members", "balance")
    with ctx.svc.db.session() as s:
        bal = billing.balances(s)
        for tm in s.scalars(select(Team).order_by(Team.name)):
            t.add_row(tm.name, "yes" if tm.personal else "", str(len(tm.memberships)),
                      ig.format_usd(bal.get(tm.id, from_micros(0))))
    console.print(t)


@team.command("add-member")
@click.argument("team_name", metavar="TEAM")
@click.argument("username", metavar="USER")
@click.option("--role", type=click.Choice(["user", "administrator", "owner"]), default="user", show_default=True)
@pass_ctx
def team_add_member(ctx: Ctx, team_name, username, role):
    with ctx.svc.db.transaction() as s:
        t = _team(s, team_name)
        _require(ctx, s, t, ("administrator", "owner") if role != "owner" else ("owner",), "add members")
        u = _user(s, username)
        m = s.scalar(select(Membership).where(Membership.user_id == u.id, Membership.team_id == t.id))
        if m is None:
            s.add(Membership(user_id=u.id, team_id=t.id, role=role, created_at=ctx.svc.now()))
        else:
            m.role = role
    _sync_slurm(ctx)
    console.print(f"{username} is {role} of team {team_name}")


@team.command("remove-member")
@click.argument("team_name", metavar="TEAM")
@click.argument("username", metavar="USER")
@pass_ctx
def team_remove_member(ctx: Ctx, team_name, username):
    with ctx.svc.db.transaction() as s:
        t = _team(s, team_name)
        _require(ctx, s, t, ("administrator", "owner"), "remove members")
        u = _user(s, username)
        m = s.scalar(select(Membership).where(Membership.user_id == u.id, Membership.team_id == t.id))
        if m is None:
            _fail(f"{username} is not a member of team {team_name}")
        s.delete(m)
    _sync_slurm(ctx)
    console.print(f"{username} removed from team {team_name}")


@team.command("add-funds")
@click.argument("team_name", metavar="TEAM")
@click.argument("amount")
@click.option("--note", default="", help="why (shown in the ledger)")
@pass_ctx
def team_add_funds(ctx: Ctx, team_name, amount, note):
    """Add AMOUNT dollars (e.g. 25.00) to TEAM's balance."""
    with ctx.svc.db.session() as s:
        t = _team(s, team_name)
        _require(ctx, s, t, ("administrator", "owner"), "add funds")
    try:
        dep = billing.add_funds(ctx.svc.db, team_name, amount, by=ctx.by, note=note, now=ctx.svc.now())
    except ig.MoneyError as exc:
        _fail(str(exc))
    with ctx.svc.db.session() as s:
        bal = billing.balance(s, _team(s, team_name).id)
    console.print(f"added {ig.format_usd(dep.amount)} to team {team_name}; balance {ig.format_usd(bal)}")


@team.command("balance")
@click.argument("team_name", metavar="TEAM", required=False)
@pass_ctx
def team_balance(ctx: Ctx, team_name):
    with ctx.svc.db.session() as s:
        if team_name:
            t = _team(s, team_name)
            _require(ctx, s, t, ("user", "administrator", "owner"), "see the balance")
            console.print(f"{t.name}: {ig.format_usd(billing.balance(s, t.id))}")
            return
        _require_admin(ctx, s, "see every team's balance")
    _print_teams(ctx)


@team.command("ledger")
@click.argument("team_name", metavar="TEAM")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout")
@pass_ctx
def team_ledger(ctx: Ctx, team_name, as_csv):
    """Every entry of TEAM's ledger: deposits and charges (job, minutes, rate)."""
    with ctx.svc.db.session() as s:
        t = _team(s, team_name)
        _require(ctx, s, t, ("administrator", "owner"), "see the ledger")
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.team_id == t.id).order_by(LedgerEntry.id)))
        bal = billing.balance(s, t.id)
    if as_csv:
        w = csv.writer(sys.stdout)
        w.writerow(["id", "created_at", "kind", "amount", "job", "attempt", "from_minute", "to_minute",
                    "gpu_type", "gpu_count", "rate", "resource", "bytes", "created_by", "note", "key"])
        for e in rows:
            w.writerow([e.id, e.created_at.isoformat(), e.kind, str(e.amount), e.job_id or "", e.attempt
                        if e.attempt is not None else "", e.from_minute if e.from_minute is not None else "",
                        e.to_minute if e.to_minute is not None else "", e.gpu_type or "", e.gpu_count or "",
                        str(e.rate) if e.rate is not None else "", e.resource or "", e.bytes or "",
                        e.created_by or "", e.note or "", e.idempotency_key])
        return
    t = _table(f"Ledger of {team_name} — balance {ig.format_usd(bal)}", "when", "kind", "amount", "what")
    for e in rows:
        if e.kind == "gpu":
            what = (f"job {e.job_id} attempt {e.attempt}: min {e.from_minute}-{e.to_minute}, "
                    f"{e.gpu_count}x {e.gpu_type} @ {ig.format_usd(e.rate)}/h")
        elif e.kind == "storage":
            what = e.note or e.resource or ""
        else:
            what = f"{e.created_by}: {e.note}" if e.note else (e.created_by or "")
        t.add_row(e.created_at.strftime("%Y-%m-%d %H:%M"), e.kind, str(e.amount.quantize(billing.Decimal("0.000001"))), what)
    console.print(t)


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
    """Create a project and its git repository; print the remote URL."""
    svc = ctx.svc
    name = _name(name, "project")
    try:
        gpu_type, gpu_count = ig.parse_gpus(gpus)
        minutes = launch.parse_time(time_) if time_ else svc.config.default_time_limit
    except (ig.InvalidRequest, ValueError) as exc:
        _fail(str(exc))
    settings = launch.JobSettings(gpu_type, gpu_count, minutes, image or svc.config.default_image)
    problems = launch.settings_problems(svc, settings)
    if problems:
        _fail("; ".join(p.removeprefix("slipway: ") for p in problems))
    with svc.db.transaction() as s:
        t = _team(s, team_name)
        _require(ctx, s, t, ("user", "administrator", "owner"), "create projects")
        if s.scalar(select(Project.id).where(Project.team_id == t.id, Project.name == name)):
            _fail(f"project {team_name}/{name} exists already")
        s.add(Project(team_id=t.id, name=name, gpu_type=gpu_type, gpu_count=gpu_count,
                      image=settings.image, time_limit_min=minutes, created_at=svc.now()))
        ig.create_repo(svc.config, team_name, name)
    url = svc.config.repo_url(team_name, name)
    console.print(f"project {team_name}/{name}: {gpu_type} x{gpu_count}, image {settings.image}, {minutes} min")
    console.print(f"remote: {url}\n\n  git remote add slipway {url}\n"
                  f"  # write slipway-entrypoint.sh at the repository root, then:\n"
                  f"  git checkout -b exp-1 && git add -A && git commit -m run && git push slipway exp-1\n"
                  f"  # git asks for your user name and an access token (slipway token create USER)")


@project.command("list")
@click.option("--team", "team_name")
@pass_ctx
def project_list(ctx: Ctx, team_name):
    t = _table("Projects", "project", "gpus", "image", "time", "jobs")
    with ctx.svc.db.session() as s:
        q = select(Project).join(Team).order_by(Team.name, Project.name)
        if team_name:
            q = q.where(Team.name == team_name)
        for p in s.scalars(q):
            t.add_row(p.repo_key, f"{p.gpu_type} x{p.gpu_count}", p.image, f"{p.time_limit_min} min", str(len(p.jobs)))
    console.print(t)


@project.command("show")
@click.argument("ref", metavar="TEAM/PROJECT")
@pass_ctx
def project_show(ctx: Ctx, ref):
    with ctx.svc.db.session() as s:
        p = _project(s, ref)
        console.print(f"project {p.repo_key}\n  gpus   {p.gpu_type} x{p.gpu_count}\n  image  {p.image}\n"
                      f"  time   {p.time_limit_min} min\n  remote {ctx.svc.config.repo_url(p.team.name, p.name)}\n"
                      f"  jobs   {len(p.jobs)} ({sum(j.state in states.ACTIVE for j in p.jobs)} active)")


@project.command("delete")
@click.argument("ref", metavar="TEAM/PROJECT")
@click.option("--confirm", required=True, help="type TEAM/PROJECT again: deletion is irrecoverable")
@pass_ctx
def project_delete(ctx: Ctx, ref, confirm):
    """Delete a project, its repository, LFS objects and jobs — irrecoverably."""
    from .web import ops  # the one implementation, shared with the web page and the API

    if confirm != ref:
        _fail(f"--confirm must be exactly {ref!r}; nothing was deleted")
    team_name, sep, name = ref.partition("/")
    if not sep:
        _fail(f"name the project as TEAM/PROJECT, not {ref!r}")
    with ctx.svc.db.session() as s:
        if ctx.actor_name is None:
            actor = ops.Actor(id=0, name=ctx.by, is_cluster_admin=True)
        else:
            u = _user(s, ctx.actor_name)
            actor = ops.Actor(id=u.id, name=u.name, is_cluster_admin=u.is_cluster_admin)
    try:
        n = ops.delete_project(ctx.svc, actor, team_name, name, confirm)
    except ops.OpError as exc:
        _fail(str(exc))
    console.print(f"project {ref} deleted ({n} job(s))")


# ------------------------------------------------------------------------------------ jobs

@main.group()
def job():
    """Jobs (squeue/scancel-like)."""


def _short(text: str | None, n: int = 48) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def _can_see(ctx: Ctx, s, j: Job) -> None:
    _require(ctx, s, j.project.team, ("user", "administrator", "owner"), f"see job {j.id}")


@job.command("list")
@click.option("--team", "team_name")
@click.option("--state", help="a state, or 'active'")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def job_list(ctx: Ctx, team_name, state, limit, as_json):
    t = _table("Jobs", "job", "project", "branch", "state", "gpus", "slurm", "node", "cost", "reason")
    with ctx.svc.db.session() as s:
        if ctx.actor_name and not team_name:
            me = _user(s, ctx.actor_name)
            if not me.is_cluster_admin:
                _fail("name a team: slipway job list --team TEAM")
        if team_name:
            _require(ctx, s, _team(s, team_name), ("user", "administrator", "owner"), "list jobs")
        try:
            rows = service.list_jobs(s, team=team_name, state=state, limit=limit)
        except service.JobError as exc:
            _fail(str(exc))
        if as_json:
            click.echo(json.dumps([_job_json(ctx, j) for j in rows], indent=1))
            return
        for j in rows:
            t.add_row(str(j.id), j.project.repo_key, j.branch, j.state, f"{j.gpu_type} x{j.gpu_count}",
                      str(j.slurm_job_id or ""), j.node or "", ig.format_usd(j.cost), _short(j.reason))
    console.print(t)


@job.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def job_show(ctx: Ctx, job_id, as_json):
    with ctx.svc.db.session() as s:
        try:
            j = service.get_job(s, job_id)
        except service.JobError as exc:
            _fail(str(exc))
        _can_see(ctx, s, j)
        if as_json:
            click.echo(json.dumps(_job_json(ctx, j), indent=1))
            return
        fields = [
            ("project", j.project.repo_key), ("branch", j.branch), ("commit", j.commit_sha),
            ("pusher", j.pusher.name if j.pusher else ""), ("state", j.state + (f" (was {j.previous_state})" if j.previous_state else "")),
            ("reason", j.reason or ""), ("gpus", f"{j.gpu_type} x{j.gpu_count}"), ("image", j.image),
            ("time limit", f"{j.time_limit_min} min"), ("slurm job", str(j.slurm_job_id or "")),
            ("node", j.node or ""), ("port", str(j.port or "")), ("exit code", "" if j.exit_code is None else str(j.exit_code)),
            ("submitted", str(j.submitted_at or "")), ("started", str(j.started_at or "")), ("ended", str(j.ended_at or "")),
            ("cost", ig.format_usd(j.cost)), ("cancel", j.cancel_reason or ""),
            ("results", f"{j.results_ref or ''} {j.results_sha or ''}".strip()),
            ("branch updated", "" if j.branch_updated is None else ("yes" if j.branch_updated else "no")),
            ("log", str(launch.log_path(ctx.svc, j.id))),
        ]
    t = Table(show_header=False, title=f"Job {job_id}", title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value")
    for k, v in fields:
        t.add_row(k, v)
    console.print(t)


def _job_json(ctx: Ctx, j: Job) -> dict:
    def iso(t):
        return t.isoformat() if t else None

    return {
        "id": j.id, "project": j.project.repo_key, "branch": j.branch, "commit": j.commit_sha,
        "pusher": j.pusher.name if j.pusher else None, "state": j.state,
        "previous_state": j.previous_state, "reason": j.reason, "gpu_type": j.gpu_type,
        "gpu_count": j.gpu_count, "image": j.image, "time_limit_min": j.time_limit_min,
        "slurm_job_id": j.slurm_job_id, "node": j.node, "port": j.port, "exit_code": j.exit_code,
        "submitted_at": iso(j.submitted_at), "started_at": iso(j.started_at),
        "ended_at": iso(j.ended_at), "cost": str(j.cost), "cancel_requested": j.cancel_requested,
        "cancel_reason": j.cancel_reason, "results_ref": j.results_ref,
        "results_sha": j.results_sha, "branch_updated": j.branch_updated,
        "log": str(launch.log_path(ctx.svc, j.id)),
    }


@job.command("log")
@click.argument("job_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
@pass_ctx
def job_log(ctx: Ctx, job_id, follow):
    svc = ctx.svc
    with svc.db.session() as s:
        try:
            _can_see(ctx, s, service.get_job(s, job_id))
        except service.JobError as exc:
            _fail(str(exc))
    path = service.log_path(svc, job_id)
    pos = 0
    while True:
        if path.exists():
            with path.open("rb") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos += len(chunk)
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
        elif not follow:
            _fail(f"job {job_id} has no log yet ({path})")
        if not follow:
            return
        with svc.db.session() as s:
            if s.get(Job, job_id).state in states.TERMINAL:
                if not path.exists() or path.stat().st_size <= pos:
                    return
        time.sleep(1)


@job.command("cancel")
@click.argument("job_id", type=int)
@pass_ctx
def job_cancel(ctx: Ctx, job_id):
    with ctx.svc.db.session() as s:
        try:
            j = service.get_job(s, job_id)
        except service.JobError as exc:
            _fail(str(exc))
        if ctx.actor_name is not None:
            me = _user(s, ctx.actor_name)
            if not (me.is_cluster_admin or j.pusher_id == me.id):
                _require(ctx, s, j.project.team, ("administrator", "owner"), f"cancel job {job_id}")
    try:
        r = service.request_cancel(ctx.svc, job_id, by=ctx.by)
    except service.JobError as exc:
        _fail(str(exc))
    console.print(r.message)


# ------------------------------------------------------------------------------------ LDAP

@main.group()
def ldap():
    """LDAP: directory users become users, groups become teams."""


@ldap.command("sync")
@click.option("--allow-empty", is_flag=True, help="apply even if the directory returns no users")
@pass_ctx
def ldap_sync(ctx: Ctx, allow_empty):
    """Converge users and teams with the directory now (the reconciler also does it periodically)."""
    from .identity.ldap_directory import DirectoryUnavailable
    from .identity.team_sync import SyncRefused, sync_ldap

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
