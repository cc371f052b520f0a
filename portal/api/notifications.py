"""``/api/notifications``: the caller's notification settings (docs/MONITORING.md).

``GET`` answers every kind with on/off, the address mail goes to and whether mail is on at all,
and the latest notifications (``?recent=N``, default 20). ``PUT`` takes kinds to turn on or off
(``{"job_ended": false, "low_balance": true}``; also ``"on"``/``"off"``) and, for a local
account, ``"email"`` (an address, or null/"" to clear it); it answers like ``GET``."""
from __future__ import annotations

from flask import jsonify

from ..http.context import actor, int_arg, svc
from ..monitoring import notify_settings as settings
from .core import ApiError, _body, api


def _answer(shown: dict, recent: int):
    return jsonify({"ok": True, **shown,
                    "recent": settings.recent(svc(), actor(), recent) if recent else []})


@api.get("/notifications")
def notifications():
    return _answer(settings.show(svc(), actor()), int_arg("recent", 20, lo=0, hi=200))


@api.put("/notifications")
def update_notifications():
    body = _body()
    if not body:
        raise ApiError(400, "send a JSON object of kinds to turn on or off, e.g. "
                            '{"job_ended": false}; the kinds are: ' + ", ".join(settings.KINDS))
    shown = None
    if "email" in body:
        email = body.pop("email")
        if email is not None and not isinstance(email, str):
            raise ApiError(400, "email must be a JSON string (or null to clear it)")
        if body:   # check the kinds first: nothing changes when any of them is wrong
            for kind, value in body.items():
                settings.check_kind(kind)
                settings.parse_switch(value, kind)
        shown = settings.set_email(svc(), actor(), email)
    if body:
        shown = settings.update(svc(), actor(), body)
    return _answer(shown, 20)
