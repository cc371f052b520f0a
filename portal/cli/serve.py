"""``slipway serve`` (the portal and the reconciler thread) and ``slipway reconcile``."""
from __future__ import annotations

import logging
import sys
import urllib.request

import click

from ..config import served_base_url
from ..jobs.reconciler import Reconciler
from ..private_files import closed_ancestor
from .context import Ctx, pass_ctx, require_cluster_admin
from .output import say, warn

# the largest request body read from a caller without valid credentials (a login form is ~200
# bytes; everything larger comes with a token or a portal login: portal/http/body_gate.py)
ANONYMOUS_BODY_MAX = 1024 * 1024


def _slipway_answers(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as r:
            return r.status == 200 and b'"ok"' in r.read(4096)
    except (OSError, ValueError):
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=16, show_default=True, type=click.IntRange(8, 256))
@click.option("--no-reconciler", is_flag=True, help="do not start the reconciler thread")
@click.option("--workspace-port", type=click.IntRange(0, 65535), default=None,
              help="port of the workspace gateway (JupyterLab through the portal); "
                   "default PORT+1, 0 = no gateway")
@pass_ctx
def serve(ctx: Ctx, host, port, threads, no_reconciler, workspace_port):
    """Run the portal (waitress), the workspace gateway and the reconciler thread."""
    # Flask, the pages and the WSGI server: heavy, and only `serve` needs them.
    import waitress

    from ..app import create_app

    if _slipway_answers(host, port):  # `make run` again while it runs: quick and harmless
        say(f"Slipway is already running on http://{host}:{port}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = ctx.svc.config
    if not cfg.base_url_is_set:  # git hooks and jobs call back where this server listens
        cfg.base_url = served_base_url(host, port)
    cfg.remember_served_url()  # the CLI and a separate reconciler use the same URL
    refreshed = ctx.svc.git.refresh_hooks()   # an upgrade's hooks in the existing repositories
    if refreshed:
        say(f"refreshed the git hooks of {refreshed} repositories")
    app = create_app(ctx.svc, start_reconciler=not no_reconciler)
    how = ("configured base_url" if cfg.base_url_is_set
           else "from --host/--port; set SLIPWAY_BASE_URL to change")
    say(f"Slipway on http://{host}:{port} (public URL {cfg.base_url}, {how}; data in {cfg.data_dir})")
    closed = closed_ancestor(cfg.jobs_dir)
    if closed is not None:
        warn(f"job users cannot reach {cfg.jobs_dir}: {closed} is not traversable by others "
             "(chmod o+x, or set SLIPWAY_DATA_DIR elsewhere)")
    gateway = None
    if workspace_port != 0:
        gateway = _start_workspace_gateway(ctx.svc, app, host, port + 1 if workspace_port is None
                                           else workspace_port, explicit=workspace_port is not None)
    # git-lfs objects stream through the app: allow large bodies. Waitress reads a request whole
    # before the app sees it: up to ``inbuf_overflow`` in memory, beyond that spooled to a temp
    # file. Data uploads send 16 MiB chunks (portal/cli/data_push.py), which stay in memory (no
    # second write to disk); the socket is read 256 KiB at a time, not waitress's 8 KiB. A body
    # over ANONYMOUS_BODY_MAX is read only from a caller with valid credentials (body_gate).
    try:
        waitress.serve(app, host=host, port=port, threads=threads, **waitress_options(ctx.svc, app))
    finally:
        if gateway is not None:
            gateway.stop()


def waitress_options(svc, app) -> dict:
    """How ``serve`` runs waitress (the browser tests serve the same way): large bodies allowed
    to callers with credentials only (``_server``: waitress's server behind the body gate)."""
    from ..http import body_gate
    from ..identity import request_credentials

    return dict(ident="slipway", max_request_body_size=64 * 1024**3, channel_timeout=300,
                recv_bytes=256 * 1024, inbuf_overflow=17 * 1024 * 1024,
                _server=body_gate.server_factory(request_credentials.make_checker(svc, app),
                                                 ANONYMOUS_BODY_MAX))


def _start_workspace_gateway(svc, app, host: str, port: int, *, explicit: bool):
    """The workspace gateway (portal/workspaces/gateway/) in a thread beside waitress: who may
    enter is the portal's session (decoded with ``app``'s serializer) checked by
    ``workspaces.service.gateway_target``; None when workspaces are not available."""
    try:
        from ..teams.access import NotFound
        from ..workspaces import service as workspaces
        from ..identity import web_sessions
        from ..workspaces.gateway.auth import session_login
        from ..workspaces.gateway.proxy import NotRunning, Target
        from ..workspaces.gateway.server import start_gateway
    except ImportError as exc:  # an older venv without aiohttp, or no workspace service yet
        logging.getLogger("slipway").warning("workspaces unavailable: %s", exc)
        warn(f"workspaces unavailable (no gateway): {exc}")
        return None

    def resolve(job_id: int, cookies) -> Target | None:
        login = session_login(app, cookies)
        if login is None:  # anonymous: "not found", without asking the database
            return None
        with svc.db.session() as s:   # logged out, expired or deactivated: "not found" too
            user = web_sessions.live_user(s, *login, now=svc.now(),
                                          lifetime_hours=svc.config.session_lifetime_hours)
        if user is None:
            return None
        try:
            t = workspaces.gateway_target(svc, user.id, job_id)
        except NotFound:
            return None
        except workspaces.NotRunning as exc:
            raise NotRunning(str(exc)) from None
        return t if isinstance(t, Target) else Target(str(t.host), int(t.port), str(t.token))

    def touch(job_id: int) -> None:
        workspaces.touch(svc, job_id)

    try:
        gateway = start_gateway(resolve, touch, host, port,
                                drop_cookies=(app.config["SESSION_COOKIE_NAME"], "remember_token",
                                              app.config.get("REMEMBER_COOKIE_NAME", "remember_token")))
    except (OSError, OverflowError) as exc:  # in use, not allowed; PORT+1 beyond 65535
        if explicit:
            raise click.ClickException(f"workspace gateway: cannot listen on {host}:{port}: {exc}")
        warn(f"workspace gateway not started: cannot listen on {host}:{port}: {exc} "
             "(choose one with --workspace-port; 0 = no gateway)")
        return None
    say(f"Workspaces (JupyterLab) through the gateway on {gateway.url}")
    return gateway


@click.command()
@click.option("--once", is_flag=True, help="run one tick and exit")
@click.option("--wait", type=click.FloatRange(0, 86400), default=30.0, show_default=True,
              help="with --once: how long to wait for the leader lease while another reconciler "
                   "(a server's) is active")
@pass_ctx
def reconcile(ctx: Ctx, once, wait):
    """Make the database follow Slurm, bill, cut off (one tick with --once).

    Exactly one reconciler of a Slipway is active at a time (a leader lease: docs/FAULTS.md §4).
    Without --once this process leads, or stands by and takes over when the active one stops;
    with --once it waits for the lease (--wait), runs one tick and lets the lease go."""
    import threading

    from ..jobs import leadership
    from ..jobs.reconciler.loop import NotLeader

    require_cluster_admin(ctx, "run the reconciler")
    r = Reconciler(ctx.svc)
    if once:
        if not r.lease.try_acquire():
            warn(f"waiting up to {wait:g} s for the leader lease: "
                 f"{leadership.describe(leadership.current(ctx.svc))}")
        try:
            rep = r.tick(wait=wait)
        except NotLeader as exc:
            raise click.ClickException(
                f"no tick run: {exc} and did not step down within {wait:g} s; it does the ticks "
                "(stop it first, or give --wait more seconds)") from None
        _print_report(rep)
        if not rep.polled:
            sys.exit(2)
        return
    stop = threading.Event()
    if not r.lead():
        say(f"standing by: {leadership.describe(leadership.current(ctx.svc))}; "
            "this process takes over when it stops")
    announced = [None]

    def on_report(rep) -> None:
        if r.leading_since != announced[0]:   # took (or took back) the lease
            announced[0] = r.leading_since
            say(f"active: this process runs the reconciler ({r.lease.description})")
        _print_report(rep)

    try:
        r.run(stop, on_report=on_report)
    except KeyboardInterrupt:
        stop.set()
    finally:
        r.step_down()


def _print_report(rep) -> None:
    for jid, old, new in rep.changes:
        say(f"job {jid}: {old} -> {new}")
    if rep.charges:
        say(f"{rep.charges} charge(s) written")
    for team in rep.cut_off:
        say(f"team {team}: balance exhausted, jobs cancelled")
    for err in rep.errors:
        warn(str(err))
