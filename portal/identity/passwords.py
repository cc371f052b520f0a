"""Local account passwords (used when no LDAP server is configured, and for break-glass local
accounts beside LDAP): salted scrypt hashes from werkzeug, never the password itself.

``check_password`` is constant-time in the hash comparison; callers that find no user still call
``dummy_check`` so that "unknown user" and "wrong password" take the same time.
"""
from __future__ import annotations

from functools import lru_cache

from werkzeug.security import check_password_hash, generate_password_hash

METHOD = "scrypt"            # werkzeug: scrypt:32768:8:1 (falls back to pbkdf2 where scrypt is missing)
MIN_LENGTH = 8
MAX_LENGTH = 1024            # refuse megabyte "passwords" before hashing them


class PasswordRejected(ValueError):
    """A new password that does not meet the rules (message says which)."""


def _method() -> str:
    import hashlib

    return METHOD if hasattr(hashlib, "scrypt") else "pbkdf2:sha256:600000"


def validate_new_password(password: str) -> str:
    if not isinstance(password, str) or password == "":
        raise PasswordRejected("the password is empty")
    if len(password) < MIN_LENGTH:
        raise PasswordRejected(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"the password may have at most {MAX_LENGTH} characters")
    if "\x00" in password:
        raise PasswordRejected("the password may not contain NUL characters")
    return password


def hash_password(password: str) -> str:
    """Salted hash of a new password (validated first)."""
    return generate_password_hash(validate_new_password(password), method=_method())


def check_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches ``password_hash``; False for empty/absent either side (a
    dummy hash is still checked so the time taken does not tell which)."""
    if not password_hash or not password or len(password) > MAX_LENGTH:
        dummy_check(password or "x")
        return False
    try:
        return check_password_hash(password_hash, password)
    except (ValueError, TypeError):  # a malformed stored hash never logs anyone in
        dummy_check(password)
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return generate_password_hash("slipway-dummy-password", method=_method())


def dummy_check(password: str) -> None:
    """Spend the time of one real hash check (for unknown users)."""
    check_password_hash(_dummy_hash(), (password or "x")[:MAX_LENGTH])
