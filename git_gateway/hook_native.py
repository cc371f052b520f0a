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
again (``current``). Builds are kept in the user's cache (``cached``: 0700, keyed by that stamp),
so a server start copies the binary instead of compiling it again.
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
    """Put the compiled hook at each of ``hooks`` (atomically, mode 0755, each with its stamp),
    from this user's build cache (``cached``) or compiled here. False, with the compiler's
    complaint in the log, when there is no compiler or the build fails: the caller then writes
    the bash hooks."""
    cc = compiler()
    if cc is None or not hooks:
        return False
    text = stamp(cc)
    built = cached(cc, text)
    if built is False:            # the compiler refused this source (logged): bash hooks
        return False
    first = hooks[0]
    tmp = first.with_name(f".{first.name}.build-{os.getpid()}")
    if built is None:
        if not _compile(cc, tmp):
            return False
        built = tmp
    for hook in hooks:
        copy = hook.with_name(f".{hook.name}.tmp-{os.getpid()}")
        shutil.copyfile(built, copy)
        os.chmod(copy, 0o755)
        os.replace(copy, hook)
        hook.with_name(hook.name + STAMP_SUFFIX).write_text(text, encoding="utf-8")
    tmp.unlink(missing_ok=True)
    return True


def _compile(cc: str, out: Path) -> bool:
    try:
        r = subprocess.run([cc, "-O2", "-o", str(out), str(SOURCE)], env=BUILD_ENV,
                           capture_output=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("native git hook not built (%s); the bash hook is used", exc)
        out.unlink(missing_ok=True)
        return False
    if r.returncode != 0 or not out.is_file():
        log.warning("native git hook not built (%s exited %s: %s); the bash hook is used", cc,
                    r.returncode, r.stderr.decode("utf-8", "replace").strip()[-500:])
        out.unlink(missing_ok=True)
        return False
    return True


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "slipway" / "native-hook"


def _private(path: Path) -> bool:
    """Owned by this user and writable by nobody else (a binary taken from there runs on
    every push)."""
    st = os.lstat(path)
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def cached(cc: str, text: str) -> Path | None | bool:
    """This source's build by ``cc`` in the user's cache (``~/.cache/slipway/native-hook``,
    0700), compiled into it when missing: every server start and every test server then copies
    instead of compiling (~0.3 s each). None when the cache cannot be used (compile in place);
    False when the compiler refused the source."""
    root = cache_root()
    binary = root / hashlib.sha256(text.encode()).hexdigest()[:32]
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(root):
            return None
        if binary.is_file() and _private(binary):
            return binary
        tmp = root / f".build-{os.getpid()}-{os.urandom(4).hex()}"
        if not _compile(cc, tmp):
            return False
        os.replace(tmp, binary)
        return binary
    except OSError:
        return None
