"""The native pre-receive hook: ``hook_native.c``, ``hook_script.sh`` in C, compiled where the
machine has a C compiler (Debian's ``gcc``/``cc``) into the hooks directory the gateway's own
``receive-pack`` runs with (``post_receive.pre_receive_only``).

Why: the pre-receive hook is a process started on every push, inside the push's critical path.
bash takes ~1.9 ms to start and answer; this program 0.75 ms (bench/RESULTS.md, issue 17). It
speaks the same text callback, says the same messages and hands what it does not do itself to
``slipway-hook.py`` as the bash hook does (the same tests run against both:
``tests/unit/test_hook_script.py``). Without a compiler, or when the build fails, the hooks are
the bash ones, as before: nothing depends on it.

A build writes ``<hook>.slipway-source`` beside the binary with the sha256 of the source and the
compiler's path: a hook built from another source (an upgrade) or by another compiler is built
again (``current``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("hook_native.c")
STAMP_SUFFIX = ".slipway-source"
BUILD_TIMEOUT_S = 120
# a plain environment for the compiler: nothing of the server's (CFLAGS, CPATH, ...) reaches it
BUILD_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def compiler() -> str | None:
    """The C compiler's absolute path (``cc``, else ``gcc``), or None."""
    for name in ("cc", "gcc"):
        found = shutil.which(name, path=BUILD_ENV["PATH"])
        if found and os.path.isabs(found):
            return os.path.realpath(found)
    return None


def stamp(cc: str) -> str:
    return f"{hashlib.sha256(SOURCE.read_bytes()).hexdigest()} {cc}\n"


def current(hook: Path) -> bool:
    """``hook`` is this source's build by today's compiler."""
    cc = compiler()
    if cc is None or not os.access(hook, os.X_OK):
        return False
    try:
        return hook.with_name(hook.name + STAMP_SUFFIX).read_text(encoding="utf-8") == stamp(cc)
    except OSError:
        return False


def build(hooks: list[Path]) -> bool:
    """Compile the hook once and put it at each of ``hooks`` (atomically, mode 0755, each with
    its stamp). False, with the compiler's complaint in the log, when there is no compiler or
    the build fails: the caller then writes the bash hooks."""
    cc = compiler()
    if cc is None or not hooks:
        return False
    first = hooks[0]
    tmp = first.with_name(f".{first.name}.build-{os.getpid()}")
    try:
        r = subprocess.run([cc, "-O2", "-o", str(tmp), str(SOURCE)], env=BUILD_ENV,
                           capture_output=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("native git hook not built (%s); the bash hook is used", exc)
        tmp.unlink(missing_ok=True)
        return False
    if r.returncode != 0 or not tmp.is_file():
        log.warning("native git hook not built (%s exited %s: %s); the bash hook is used", cc,
                    r.returncode, r.stderr.decode("utf-8", "replace").strip()[-500:])
        tmp.unlink(missing_ok=True)
        return False
    text = stamp(cc)
    for hook in hooks:
        copy = hook.with_name(f".{hook.name}.tmp-{os.getpid()}")
        shutil.copyfile(tmp, copy)
        os.chmod(copy, 0o755)
        os.replace(copy, hook)
        hook.with_name(hook.name + STAMP_SUFFIX).write_text(text, encoding="utf-8")
    tmp.unlink(missing_ok=True)
    return True
