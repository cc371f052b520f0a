"""Data pages: the repositories a user may read (/data), one repository (versions, upload,
sharing, public, delete), one version (files, downloads, delete). Parse, call
``portal.data.{repos, versions}``, present; the uploads' JSON endpoints are in ``data_upload``."""
from __future__ import annotations

from flask import Blueprint, render_template, request, url_for
from flask_login import login_required

from ..data import repos as repos_svc
from ..data import versions as versions_svc
from ..data.access import readable_repo
from ..teams import access
from .common import actor, back, db, raise_http, svc
from ..http.downloads import send_archive, send_path

bp = Blueprint("data", __name__)

KINDS = ("dataset", "model")




def _fail(exc: access.OpError, endpoint: str, **values):
    """403/404: the error page (nothing is revealed); anything else: a flash on ``endpoint``."""
    if exc.status in (403, 404):
        raise_http(exc)
    return back(endpoint, str(exc), "error", **values)


def _readable(team: str, name: str) -> None:
    """The error page (404) unless the actor may read TEAM/NAME: a form sent by somebody who
    cannot see the repository learns nothing, not even whether its confirmation was right."""
    try:
        readable_repo(db(), actor(), team, name)
    except access.OpError as exc:
        raise_http(exc)


@bp.get("/data")
@login_required
def index():
    me = actor()
    try:
        repos = repos_svc.list_repos(svc(), me)
    except access.OpError as exc:
        raise_http(exc)
    mine = access.my_team_names(db(), me)
    mine_set = set(mine)
    groups = {"mine": [], "shared": [], "public": [], "other": []}
    for r in repos:
        if r["team"] in mine_set:
            groups["mine"].append(r)
        elif r["public"]:
            groups["public"].append(r)
        elif "shared_with" in r and not mine_set.intersection(r["shared_with"]):
            groups["other"].append(r)   # a cluster administrator sees every repository
        else:
            groups["shared"].append(r)
    return render_template("data_list.html", groups=groups, teams=mine, kinds=KINDS,
                           form=request.args)


@bp.post("/data")
@login_required
def create():
    f = request.form
    try:
        r = repos_svc.create_repo(svc(), actor(), f.get("team", "").strip(), f.get("name", ""),
                                  f.get("kind", ""), f.get("description", ""))
    except access.OpError as exc:
        if exc.status == 404:
            raise_http(exc)
        return back("data.index", f"Repository not created: {exc}", "error")
    return back("data.repo", f"Data repository {r['ref']} created ({r['kind']}). Upload files "
                "to make version 1.", team=r["team"], name=r["name"])


@bp.get("/data/<team>/<name>")
@login_required
def repo(team: str, name: str):
    me = actor()
    try:
        r = repos_svc.show_repo(svc(), me, team, name)
    except access.OpError as exc:
        raise_http(exc)
    member = me.is_cluster_admin or team in access.my_team_names(db(), me)
    return render_template(
        "data_repo.html", repo=r, versions=list(reversed(r["versions"])),
        can_upload=member, can_admin="shared_with" in r, is_cluster_admin=me.is_cluster_admin,
        start_url=url_for("data_upload.start", team=team, name=name))


@bp.post("/data/<team>/<name>/shares")
@login_required
def share(team: str, name: str):
    _readable(team, name)
    other = request.form.get("team", "").strip()
    try:
        repos_svc.share_repo(svc(), actor(), team, name, other)
    except access.OpError as exc:
        if exc.status == 404 and other and "no team" in str(exc):
            return back("data.repo", str(exc), "error", team=team, name=name)
        return _fail(exc, "data.repo", team=team, name=name)
    return back("data.repo", f"{team}/{name} is shared with team {other} (read-only).",
                team=team, name=name)


@bp.post("/data/<team>/<name>/shares/<other>/delete")
@login_required
def unshare(team: str, name: str, other: str):
    _readable(team, name)
    try:
        repos_svc.unshare_repo(svc(), actor(), team, name, other)
    except access.OpError as exc:
        return _fail(exc, "data.repo", team=team, name=name)
    return back("data.repo", f"{team}/{name} is no longer shared with team {other}.",
                team=team, name=name)


@bp.post("/data/<team>/<name>/public")
@login_required
def public(team: str, name: str):
    _readable(team, name)
    value = request.form.get("public", "")
    if value not in ("true", "false"):
        return back("data.repo", "public must be true or false", "error", team=team, name=name)
    try:
        repos_svc.set_public(svc(), actor(), team, name, value == "true")
    except access.OpError as exc:
        return _fail(exc, "data.repo", team=team, name=name)
    what = "public: everybody may read and bind it" if value == "true" else "private"
    return back("data.repo", f"{team}/{name} is now {what}.", team=team, name=name)


@bp.post("/data/<team>/<name>/delete")
@login_required
def delete(team: str, name: str):
    _readable(team, name)
    try:
        r = repos_svc.delete_repo(svc(), actor(), team, name, request.form.get("confirm", ""))
    except access.OpError as exc:
        return _fail(exc, "data.repo", team=team, name=name)
    n = len(r.get("versions") or [])
    return back("data.index", f"Data repository {team}/{name} deleted with {n} version(s).")


@bp.get("/data/<team>/<name>/<int:version>")
@login_required
def version(team: str, name: str, version: int):
    me = actor()
    try:
        v = versions_svc.show_version(svc(), me, team, name, version)
        r = repos_svc.show_repo(svc(), me, team, name)
    except access.OpError as exc:
        raise_http(exc)
    return render_template("data_version.html", v=v, repo=r, can_admin="shared_with" in r)


@bp.get("/data/<team>/<name>/<int:version>/files/<path:path>")
@login_required
def file(team: str, name: str, version: int, path: str):
    try:
        p, size, filename = versions_svc.version_file(svc(), actor(), team, name, version, path)
    except access.OpError as exc:
        raise_http(exc)
    return send_path(p, size, filename)


@bp.get("/data/<team>/<name>/<int:version>/archive")
@login_required
def archive(team: str, name: str, version: int):
    try:
        filename, chunks = versions_svc.version_archive(svc(), actor(), team, name, version)
    except access.OpError as exc:
        raise_http(exc)
    return send_archive(filename, chunks)


@bp.post("/data/<team>/<name>/<int:version>/delete")
@login_required
def delete_version(team: str, name: str, version: int):
    _readable(team, name)
    try:
        versions_svc.delete_version(svc(), actor(), team, name, version,
                                    request.form.get("confirm", ""))
    except access.OpError as exc:
        return _fail(exc, "data.version", team=team, name=name, version=version)
    return back("data.repo", f"Version {version} of {team}/{name} deleted; its number is not "
                "used again.", team=team, name=name)
