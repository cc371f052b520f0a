"""``/settings/notifications``: the logged-in user turns each kind of notification mail on or
off, sets their address (local accounts; a directory user's comes from LDAP), and sees what was
sent to them lately and why something was not. Says so when mail is off on this Slipway."""
from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_login import login_required

from ..monitoring import notify_settings as settings
from ..teams import access
from .common import actor, back, raise_http, svc

bp = Blueprint("notifications", __name__)


def _page(*, error: str | None = None, status: int = 200):
    try:
        shown = settings.show(svc(), actor())
        recent = settings.recent(svc(), actor(), 20)
    except access.OpError as exc:
        raise_http(exc)
    return render_template("notifications.html", s=shown, recent=recent, error=error), status


@bp.get("/settings/notifications")
@login_required
def index():
    return _page()


@bp.post("/settings/notifications")
@login_required
def save():
    # every kind is on the form: a box not ticked is "off"
    wanted = {kind: kind in request.form for kind in settings.KINDS}
    try:
        settings.update(svc(), actor(), wanted)
    except access.OpError as exc:
        return _page(error=str(exc), status=exc.status)
    off = [k for k, on in wanted.items() if not on]
    return back("notifications.index", "Notification settings saved" + (
        f" (off: {', '.join(off)})." if off else " (all on)."))


@bp.post("/settings/notifications/email")
@login_required
def email():
    address = request.form.get("email", "")
    try:
        settings.set_email(svc(), actor(), address)
    except access.OpError as exc:
        return _page(error=str(exc), status=exc.status)
    return back("notifications.index", f"Mail now goes to {address.strip()}."
                if address.strip() else "Address removed: you get no mail.")
