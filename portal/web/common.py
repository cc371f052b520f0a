"""Helpers every web blueprint uses: the services, a request-scoped read session, the acting
user (re-exported from ``portal.http.context``, shared with the API), op errors -> HTTP errors,
flash-and-redirect, row links, formatting filters."""
from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import quote, urlsplit

from flask import abort, current_app, flash, redirect, request, url_for

from ..http.context import (MAX_PAGE, WebUser, actor, close_db, db, fresh_db,  # noqa: F401
                            int_arg, svc)
from ..teams.access import OpError


def raise_http(exc: OpError):
    """OpError -> abort with its status; the message goes to the error page."""
    abort(exc.status, description=str(exc))


# ------------------------------------------------------------------------ links of table rows

_SEGMENT_SAFE = "!$&'()*+,/:;=@"  # what werkzeug's converters leave unquoted in a path segment
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_.~!$&'()*+,/:;=@-]*\Z")
_ID_SENTINEL = 987654321
_NAME_SENTINELS = ("slipway-sentinel-a", "slipway-sentinel-b")


def url_segment(value) -> str:
    """``value`` quoted as ``url_for`` quotes a path parameter (team and project names are plain:
    the fast path)."""
    s = str(value)
    return s if _PLAIN_SEGMENT.match(s) else quote(s, safe=_SEGMENT_SAFE)


class RowLinks:
    """The links of table rows (jobs, projects) by string joins: one ``url_for`` per endpoint
    when first used instead of one per row (``url_for`` costs ~15 µs; a team page has a hundred
    row links). The URLs are exactly ``url_for``'s."""

    def __init__(self):
        head, tail = url_for("jobs.show", job_id=_ID_SENTINEL).split(str(_ID_SENTINEL))
        self._job = (head, tail)
        if tail:  # job_prefix below relies on it
            raise RuntimeError(f"the job page URL no longer ends with the job id: {head}…{tail}")
        self.job_prefix = head  # job_prefix + str(job id) == job(job id)
        a, b = _NAME_SENTINELS
        head, rest = url_for("projects.show", team=a, project=b).split(a)
        mid, tail = rest.split(b)
        self._project = (head, mid, tail)

    def job(self, job_id: int) -> str:
        head, tail = self._job
        return f"{head}{int(job_id)}{tail}"

    def project(self, team: str, project: str) -> str:
        head, mid, tail = self._project
        return f"{head}{url_segment(team)}{mid}{url_segment(project)}{tail}"

    def project_prefix(self, team: str) -> str:
        """The projects of one team: ``project_prefix(team) + url_segment(project)`` is
        ``project(team, project)``."""
        head, mid, tail = self._project
        if tail:
            raise RuntimeError(f"the project page URL no longer ends with the project name: {head}…{tail}")
        return f"{head}{url_segment(team)}{mid}"


def row_links() -> RowLinks:
    """This app's RowLinks for the request's root path (cached: URLs depend on nothing else)."""
    cache = current_app.extensions.setdefault("slipway_row_links", {})
    root = request.script_root
    links = cache.get(root)
    if links is None:
        if len(cache) > 64:
            cache.clear()
        links = cache[root] = RowLinks()
    return links


def app_url(endpoint: str, **values) -> str:
    """``url_for`` for links that never change (navigation, static files), cached per app and
    root path — base.html asks for seven of them on every page."""
    cache = current_app.extensions.setdefault("slipway_app_urls", {})
    key = (request.script_root, endpoint, tuple(sorted(values.items())))
    url = cache.get(key)
    if url is None:
        if len(cache) > 256:
            cache.clear()
        url = cache[key] = url_for(endpoint, **values)
    return url


def safe_next(target: str | None, default: str = "/") -> str:
    """Only local paths: '/x?y'. Refuses '//host', '/\\host', 'http://…', control characters."""
    if not target or not isinstance(target, str):
        return default
    if not target.startswith("/") or target.startswith("//") or target.startswith("/\\"):
        return default
    if any(ord(c) < 32 or c == "\\" for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def back(endpoint: str, message: str | None = None, category: str = "ok", **values):
    if message:
        flash(message, category)
    return redirect(url_for(endpoint, **values))


def fmt_dt(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC") if t else ""


def fmt_usd_micros(micros: int | None) -> str:
    """Integer micro-dollars (a ``*_micros`` column) exactly as ``ig.format_usd(from_micros(micros))``
    shows them ("$1,234.50", "$0.025", "-$3.20"; tenths of a cent rounded half to even), in
    integer arithmetic: a job table formats one per row."""
    micros = int(micros or 0)
    mills, rest = divmod(abs(micros), 1_000)
    if rest > 500 or (rest == 500 and mills & 1):
        mills += 1
    sign = "-" if micros < 0 and mills else ""
    dollars, frac = divmod(mills, 1_000)
    decimals = f"{frac:03d}"
    return f"{sign}${dollars:,}.{decimals[:2] if decimals.endswith('0') else decimals}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    v = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if v < 1000 or unit == "TB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1000
    return f"{n} B"


def fmt_duration(start: datetime | None, end: datetime | None, now: datetime) -> str:
    if start is None:
        return ""
    secs = int(((end or now) - start).total_seconds())
    if secs < 0:
        return ""
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")
