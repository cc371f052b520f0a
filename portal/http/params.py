"""Bounded request parameters, so malformed input answers 4xx instead of 500.

* ``IdConverter`` replaces Flask's ``int`` URL converter app-wide (``install``): every
  ``<int:...>`` in a route, present or future, matches only 1 … 2^63-1 (SQLite's INTEGER); other
  numbers (2^63, 2^64, 0, -1, 20 digits) do not match, so the URL answers 404 instead of an
  OverflowError. ``<id:...>`` is the same converter under its own name.
* ``int_query(name, default, lo, hi)``: a query parameter as a bounded int, 400 with a message
  for anything else (``page=abc``, ``before=99999999999999999999``).
* ``json_body()``: the request's JSON through ``git_gateway.jsonbody`` (``integrations
  .loads_json_bounded``: size and nesting depth bounded, never RecursionError); 400 with the
  reason.
"""
from __future__ import annotations

import re
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

from .. import integrations as ig

MAX_ID = 2**63 - 1
JSON_MAX_BYTES = 1024 * 1024
_INT_RE = re.compile(r"-?[0-9]{1,20}")


class IdConverter(IntegerConverter):
    """``int`` limited to 1 … 2^63-1 unless the rule says otherwise (``<int(min=0):n>``)."""

    def __init__(self, map, fixed_digits: int = 0, min: int | None = 1, max: int | None = MAX_ID,
                 signed: bool = False) -> None:
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def install(app: Flask) -> None:
    """Register the converters; call before any blueprint is registered (rules bind their
    converter when they are added)."""
    app.url_map.converters["int"] = IdConverter
    app.url_map.converters["id"] = IdConverter


def int_query(name: str, default: int | None = None, *, lo: int = 0, hi: int = MAX_ID) -> int | None:
    """``request.args[name]`` as an int in ``lo … hi``; absent or empty: ``default``; anything
    else: 400 saying what is expected."""
    raw = request.args.get(name, "")
    if raw == "":
        return default
    value = int(raw) if _INT_RE.fullmatch(raw) else None
    if value is None or not lo <= value <= hi:
        raise BadRequest(f"query parameter {name!r} must be a whole number from {lo} to {hi}, "
                         f"got {raw[:40]!r}")
    return value


def json_body(*, max_bytes: int = JSON_MAX_BYTES) -> Any:
    """The request body parsed as JSON (bounded); 400 with the reason when it is not."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BadRequest(f"the JSON body is larger than {max_bytes} bytes")
    data = request.get_data(cache=True)
    try:
        return ig.loads_json_bounded(data, max_bytes=max_bytes)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
