"""Read-only inputs for ch-run: ``python3 -I .../readonly.py SRC... -- ARGV...``.

Charliecloud's ch-run (0.31) has no read-only bind, so for a charliecloud job with
``readonly_paths`` the runner starts the container through this small wrapper (a separate
program, so the runner's process model stays one Popen and ``ps`` shows what happened). It

    1. enters a new user + mount namespace with the caller's uid/gid mapped to themselves (root:
       a new mount namespace only), so nothing changes for the files the job writes;
    2. makes the whole mount tree private (nothing propagates back to the host);
    3. bind-mounts each SRC onto itself and remounts it read-only (its mounts below too), keeping
       the flags the kernel locks in a user namespace (nosuid, nodev, noexec, atime);
    4. execs ARGV (ch-run, which nests its own user namespace and binds SRC at /inputN: the
       bind keeps the read-only flag, so writes there fail with "Read-only file system").

Where user namespaces or the mounts are not allowed, it warns on stderr ("inputs are not
read-only mounts on this node: <reason>; they stay protected by file permissions") and execs
ARGV anyway: inputs are root-owned 0444 files in 0555 directories, so writes still fail
(EACCES). Standard library only; no imports from this package (it runs as a script).
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
# statvfs f_flag bits (ST_*) -> the mount flags to keep on a remount (locked in a user ns)
_KEEP_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
               (os.ST_RELATIME, MS_RELATIME))
WARNING = ("slipway: warning: inputs are not read-only mounts on this node: {reason}; "
           "they stay protected by file permissions")


class NamespaceUnavailable(OSError):
    """Nothing was changed: the namespace could not be entered (ARGV may run as it is)."""


class MountFailed(OSError):
    """The namespace exists but a mount failed (ARGV may still run: the ids are unchanged)."""


_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                ctypes.c_ulong, ctypes.c_void_p)
        _libc.unshare.argtypes = (ctypes.c_int,)
    return _libc


def _unshare(flags: int) -> None:
    if _lib().unshare(flags) != 0:
        e = ctypes.get_errno()
        raise NamespaceUnavailable(e, f"unshare: {os.strerror(e)}")


def _mount(src: str | None, target: str, flags: int) -> None:
    rc = _lib().mount(src.encode() if src is not None else None, target.encode(), None,
                      flags, None)
    if rc != 0:
        e = ctypes.get_errno()
        raise MountFailed(e, f"mount {target}: {os.strerror(e)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_namespace() -> None:
    """A new mount namespace (and, unless root, a user namespace mapping us to ourselves)."""
    if os.geteuid() == 0:
        _unshare(CLONE_NEWNS)
        return
    uid, gid = os.geteuid(), os.getegid()
    _unshare(CLONE_NEWUSER | CLONE_NEWNS)
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as e:  # we are nobody in the new namespace: running ARGV would be wrong
        raise RuntimeError(f"cannot map uid {uid}/gid {gid} into the new user namespace: "
                           f"{e.strerror or e}") from None


def _unescape(field: str) -> str:
    """/proc/self/mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_below(path: str) -> list[str]:
    """Mount points strictly below ``path`` (in mount order)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            points = [_unescape(line.split()[4]) for line in f if line.strip()]
    except OSError:
        return []
    prefix = path.rstrip("/") + "/"
    return [p for p in dict.fromkeys(points) if p.startswith(prefix)]


def _remount_readonly(target: str) -> None:
    keep = 0
    flags = os.statvfs(target).f_flag
    for st_flag, ms_flag in _KEEP_FLAGS:
        if flags & st_flag:
            keep |= ms_flag
    _mount(None, target, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


def make_readonly(paths) -> None:
    """In the new mount namespace: every path (and the mounts below it) read-only."""
    _mount(None, "/", MS_REC | MS_PRIVATE)
    for src in dict.fromkeys(paths):
        _mount(src, src, MS_BIND | MS_REC)
        for target in (src, *mounts_below(src)):
            _remount_readonly(target)


def parse_args(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        raise ValueError("usage: readonly.py SRC... -- PROGRAM [ARG...]")
    cut = argv.index("--")
    paths, command = argv[:cut], argv[cut + 1:]
    if not command:
        raise ValueError("no program to run after '--'")
    for p in paths:
        if not p.startswith("/") or "\0" in p:
            raise ValueError(f"read-only path {p!r} must be absolute")
    return paths, command


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        paths, command = parse_args(argv)
    except ValueError as e:
        print(f"slipway: {e}", file=sys.stderr)
        return 2
    if paths:
        try:
            enter_namespace()
            make_readonly(paths)
        except OSError as e:   # NamespaceUnavailable, MountFailed, statvfs
            reason = e.strerror if isinstance(e, (NamespaceUnavailable, MountFailed)) else e
            print(WARNING.format(reason=reason), file=sys.stderr, flush=True)
        except RuntimeError as e:
            print(f"slipway: could not set up read-only inputs: {e}", file=sys.stderr)
            return 126
    try:
        os.execvp(command[0], command)
    except OSError as e:
        print(f"slipway: cannot run {command[0]}: {e.strerror or e}", file=sys.stderr)
        return 127 if e.errno == errno.ENOENT else 126


def wrapper_argv(paths, argv, python: str | None = None) -> list[str]:
    """The argv that runs ``argv`` with ``paths`` read-only: this file as a script, in isolated
    mode (-I: no PYTHON* variables, no script directory on sys.path)."""
    return [python or sys.executable or "python3", "-I", os.path.abspath(__file__), *paths,
            "--", *argv]


if __name__ == "__main__":
    sys.exit(main())
