"""Install Slipway's git hooks into a bare repository.

``pre-receive`` and ``post-receive`` are copies of ``hook_script.sh`` (bash: ~2 ms to start, its
own ``/dev/tcp`` for the plain-http callback) with the absolute path of bash in the shebang;
beside them ``slipway-hook.py`` is a self-contained copy of ``hook_program.py`` (standard library
only, the installing interpreter's absolute path in the shebang), which the bash hook hands over
to for what it does not do itself (an https callback, an unreachable server, a push made without
the gateway). Where there is no bash, both hooks are the Python program, as before. None of them
ever imports Slipway, so they keep working whatever the PATH of ``git http-backend`` is.
Re-running ``install`` refreshes them (``repos.create_repo(..., exist_ok=True)`` does that for an
existing repository).

The hook callback wire format is in docs/ARCHITECTURE.md; ``hook_program`` (JSON) and
``hook_script.sh`` (text, read by ``hook_wire``) implement it.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from . import hook_native, hook_program
from .hook_program import UNAVAILABLE, build_payload, parse_updates, push_options  # noqa: F401

HOOK_NAMES = ("pre-receive", "post-receive")
PYTHON_HOOK = "slipway-hook.py"
MARKER = "# slipway-hook"
SCRIPT = Path(__file__).with_name("hook_script.sh")


def hook_source(python: str | None = None) -> str:
    """The Python hook program with ``python``'s absolute path in its shebang."""
    python = python or sys.executable
    _check_interpreter(python, "hook interpreter")
    src = Path(hook_program.__file__).read_text(encoding="utf-8")
    # -I: isolated mode (ignore PYTHON* env vars and the user site); -S: no site import (fast).
    return f"#!{python} -IS\n{MARKER}\n{src}"


def script_source(bash: str) -> str:
    """The bash hook with ``bash``'s absolute path in its shebang."""
    _check_interpreter(bash, "hook shell")
    return f"#!{bash}\n{MARKER}\n{SCRIPT.read_text(encoding='utf-8')}"


def find_bash() -> str | None:
    """An absolute path of bash 4+ with /dev/tcp, or None (then the hooks are Python)."""
    for candidate in (shutil.which("bash"), "/bin/bash", "/usr/bin/bash"):
        if candidate and os.path.isabs(candidate) and os.access(candidate, os.X_OK) \
                and not any(c.isspace() for c in candidate):
            return os.path.realpath(candidate)
    return None


def _check_interpreter(path: str, what: str) -> None:
    if not os.path.isabs(path) or any(c.isspace() for c in path):
        raise ValueError(f"{what} must be an absolute path without spaces: {path!r}")


def _write(target: Path, text: str, mode: int = 0o755) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def install(hooks_dir: str | os.PathLike, python: str | None = None,
            bash: str | None = "", native: bool = False) -> list[Path]:
    """Write pre-receive, post-receive (mode 0755) and slipway-hook.py (0700) into ``hooks_dir``
    (atomically); returns [pre-receive, post-receive]. ``bash=None``: Python hooks only; ``""`` (the
    default): the bash hooks where bash is found. ``native``: the compiled hook
    (``hook_native``) where it builds, else as without it."""
    hooks_dir = Path(hooks_dir)
    hooks_dir.mkdir(parents=True, exist_ok=True)
    program = hook_source(python)
    bash = find_bash() if bash == "" else bash
    src = script_source(bash) if bash else program
    _write(hooks_dir / PYTHON_HOOK, program, 0o700)   # run only by the server's own git
    written = [hooks_dir / name for name in HOOK_NAMES]
    if native and hook_native.build(written):
        return written
    for hook in written:
        _write(hook, src)
        hook.with_name(hook.name + hook_native.STAMP_SUFFIX).unlink(missing_ok=True)
    return written


def current(hooks_dir: str | os.PathLike, python: str | None = None, bash: str | None = "",
            only: tuple[str, ...] = HOOK_NAMES, native: bool = False) -> bool:
    """The hooks in ``hooks_dir`` (``only`` these) are exactly what :func:`install` would write
    now (same sources, same interpreters; ``native``: built from today's source by today's
    compiler, where there is one): False after an upgrade changed them, or when one is
    missing."""
    hooks_dir = Path(hooks_dir)
    program = hook_source(python)
    bash = find_bash() if bash == "" else bash
    src = script_source(bash) if bash else program
    if native and hook_native.compiler() is not None:
        if not all(hook_native.current(hooks_dir / name) for name in only):
            return False
        only = ()
    want = {PYTHON_HOOK: program, **{name: src for name in only}}
    for name, text in want.items():
        try:
            if (hooks_dir / name).read_text(encoding="utf-8") != text:
                return False
        except (OSError, UnicodeDecodeError):
            return False
    return True


def installed(hooks_dir: str | os.PathLike) -> bool:
    hooks_dir = Path(hooks_dir)
    for name in (*HOOK_NAMES, PYTHON_HOOK):
        p = hooks_dir / name
        try:
            data = p.read_bytes()
        except OSError:
            return False
        # a script says so in its first lines; the native hook holds the marker as a string
        found = MARKER.encode() in (data if data.startswith(b"\x7fELF") else data[:4096])
        if not found or not os.access(p, os.X_OK):
            return False
    return True
