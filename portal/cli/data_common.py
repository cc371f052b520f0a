"""What the data commands share (``data``, ``data push``, ``job output``): references
``TEAM/NAME[:V]``, sizes, ``--json`` in the API's key order, downloads written safely."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..data import names
from .context import call
from .output import fail, print_json


def parse_ref(text: str) -> tuple[str, str, int | None]:
    """``TEAM/NAME[:V]`` → (team, name, version or None for the newest)."""
    ref, sep, ver = (text or "").partition(":")
    team, name = call(names.split_ref, ref)
    return team, name, call(names.parse_version, ver) if sep else None


def repo_ref(text: str) -> tuple[str, str]:
    team, name, version = parse_ref(text)
    if version is not None:
        fail(f"name the repository without a version: {team}/{name}")
    return team, name


def print_sorted_json(value) -> None:
    """``--json`` of the data commands: keys sorted at every level, as the API sends them, so
    local and remote mode print the same."""
    print_json(json.loads(json.dumps(value, sort_keys=True)))


def nbytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def short_date(value: str | None) -> str:
    return (value or "")[:16].replace("T", " ")


def save_stream(found, dest: str | None, what: str) -> Path:
    """Write ``(filename, chunks)`` to DEST (a file, or a folder to put ``filename`` in;
    default: ``filename`` here) through ``DEST.part``, renamed when complete."""
    filename, chunks = found
    filename = os.path.basename(filename) or "download"
    target = Path(dest) if dest else Path(filename)
    if target.is_dir():
        target = target / filename
    part = target.with_name(target.name + ".part")
    try:
        with open(part, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        os.replace(part, target)
    except OSError as exc:
        part.unlink(missing_ok=True)
        fail(f"cannot write {what} to {target}: {exc.strerror or exc}")
    return target
