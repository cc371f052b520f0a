"""POSIX ACLs on gate directories (docs/DATA.md "On disk"), written as the
``system.posix_acl_access`` extended attribute directly (no ``setfacl`` binary needed).

A gate is root's directory, 0700, plus one ``user:<uid>:r-x`` entry per Unix user allowed in
(the mask r-x, group and other nothing), or plain 0755 when it is public. Everything below a
gate is readable by "other": the gate alone decides who gets in.

The attribute's layout (``linux/posix_acl_xattr.h``): a little-endian u32 version (2), then
entries of (u16 tag, u16 perm, u32 id), sorted by tag then id. A filesystem without ACLs
raises ``AclUnsupported``; the gate then stays 0700 (closed): fail closed, never open.
"""
from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

XATTR = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF
R_X, RWX = 5, 7
_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP}


class AclUnsupported(OSError):
    """The filesystem under a gate has no POSIX ACLs: the gate stays closed."""


def encode(entries: list[tuple[int, int, int]]) -> bytes:
    return struct.pack("<I", VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)


def decode(data: bytes) -> list[tuple[int, int, int]]:
    if len(data) < 4 or (len(data) - 4) % 8 or struct.unpack_from("<I", data)[0] != VERSION:
        raise ValueError("not a POSIX ACL (version 2) attribute")
    return [struct.unpack_from("<HHI", data, off) for off in range(4, len(data), 8)]


def gate_entries(uids) -> list[tuple[int, int, int]]:
    """The ACL of a gate letting ``uids`` read and traverse it (owner rwx, nobody else)."""
    entries = [(USER_OBJ, RWX, UNDEFINED_ID)]
    entries += [(USER, R_X, int(uid)) for uid in sorted(set(uids))]
    entries.append((GROUP_OBJ, 0, UNDEFINED_ID))
    entries.append((MASK, R_X, UNDEFINED_ID))
    entries.append((OTHER, 0, UNDEFINED_ID))
    return entries


def read_acl(path: Path) -> bytes | None:
    """The access ACL attribute of ``path`` (None: none, or no ACL support)."""
    try:
        return os.getxattr(path, XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENODATA or exc.errno in _UNSUPPORTED:
            return None
        raise


def _set_mode(path: Path, mode: int) -> bool:
    if stat.S_IMODE(os.lstat(path).st_mode) == mode:
        return False
    os.chmod(path, mode)
    return True


def _drop_acl(path: Path) -> bool:
    try:
        os.removexattr(path, XATTR, follow_symlinks=False)
        return True
    except OSError as exc:
        if exc.errno == errno.ENODATA or exc.errno in _UNSUPPORTED:
            return False
        raise


def set_gate(path: Path, uids: set[int] | None, *, public: bool = False) -> bool:
    """Make the gate directory ``path`` let exactly ``uids`` in (r-x), or everybody when
    ``public`` (0755, no ACL). No uids and not public: 0700, no ACL. Writes only what differs;
    True when something changed. A symlink at ``path`` is refused (it is never followed)."""
    path = Path(path)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "a gate must be a real directory", str(path))
    uids = {int(u) for u in (uids or ())}
    if public or not uids:
        changed = _drop_acl(path)   # dropping the ACL first: chmod then sets the plain mode
        return _set_mode(path, 0o755 if public else 0o700) or changed
    want = encode(gate_entries(uids))
    if read_acl(path) == want:
        return False
    try:
        os.setxattr(path, XATTR, want, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            _drop_acl(path)
            _set_mode(path, 0o700)
            raise AclUnsupported(exc.errno, f"{path}: the filesystem has no POSIX ACL support, "
                                 "so this gate stays closed (0700); mount it with ACLs") from None
        raise
    return True
