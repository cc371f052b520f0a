"""Install Slipway's git hooks into a bare repository.

The hooks are self-contained copies of ``hook_program.py`` (standard library only) with the
absolute path of the installing interpreter in the shebang, so they keep working whatever the
PATH of ``git http-backend`` is and never import Slipway. Re-running ``install`` refreshes them
(``repos.create_repo(..., exist_ok=True)`` does that for an existing repository).

The hook callback wire format is in docs/ARCHITECTURE.md; ``hook_program`` implements it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from . import hook_program
from .hook_program import UNAVAILABLE, build_payload, parse_updates, push_options  # noqa: F401

HOOK_NAMES = ("pre-receive", "post-receive")
MARKER = "# slipway-hook"


def hook_source(python: str | None = None) -> str:
    python = python or sys.executable
    if not os.path.isabs(python) or any(c.isspace() for c in python):
        raise ValueError(f"hook interpreter must be an absolute path without spaces: {python!r}")
    src = Path(hook_program.__file__).read_text(encoding="utf-8")
    # -I: isolated mode (ignore PYTHON* env vars and the user site); -S: no site import (fast).
    return f"#!{python} -IS\n{MARKER}\n{src}"


def install(hooks_dir: str | os.PathLike, python: str | None = None) -> list[Path]:
    """Write pre-receive and post-receive into ``hooks_dir`` (atomically, mode 0755)."""
    hooks_dir = Path(hooks_dir)
    hooks_dir.mkdir(parents=True, exist_ok=True)
    src = hook_source(python)
    written = []
    for name in HOOK_NAMES:
        target = hooks_dir / name
        tmp = hooks_dir / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(src, encoding="utf-8")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        written.append(target)
    return written


def installed(hooks_dir: str | os.PathLike) -> bool:
    hooks_dir = Path(hooks_dir)
    for name in HOOK_NAMES:
        p = hooks_dir / name
        try:
            head = p.read_text(encoding="utf-8")[:4096]
        except OSError:
            return False
        if MARKER not in head or not os.access(p, os.X_OK):
            return False
    return True
