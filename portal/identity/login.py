"""Who may log in: THE check the web login and the JSON API call.

``verify_credentials(svc, username, password) -> User | None``; ``authenticate`` returns the same
with a reason (for messages and logs). Order of checks:

1. empty password or unusable login name → refused (an empty password would be an anonymous LDAP
   bind that "succeeds");
2. LDAP configured (``ldap_url``): search the user with the service account (escaped filter),
   bind as their DN with the password (the server decides). On success the local ``User`` row is
   created/updated (name = uid, Unix user from ``ldap_unix_attr``, DN, e-mail) and their personal
   team ensured (owner). The login never calls Slurm (it runs inside POST /login, a page view):
   the new team's Slurm account is converged by the reconciler's account sync (every
   ``account_sync_interval``) — and must exist before the team's first job is submitted. A user LDAP does not know may still be a *local* account (no DN, with a
   password hash): break-glass administrators keep working, even while LDAP is down;
3. no LDAP: local accounts (``slipway user add NAME --password-stdin`` / ``user passwd``), salted
   scrypt hashes; unknown users cost one dummy hash check, so timing does not tell them apart.

Inactive users (LDAP no longer lists them) are refused even with a right password.
The returned ``User`` is detached: read its columns, not its relationships.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..db import User
from ..services import Services
from . import passwords
from .accounts import Index, upsert_ldap_user
from .ldap_directory import Directory, DirectoryUnavailable
from .names import norm_dn, valid_login_name

log = logging.getLogger("slipway.identity.login")

OK = "ok"
INVALID = "invalid"            # unknown user or wrong password (never tell which)
INACTIVE = "inactive"          # right password, account disabled (LDAP no longer lists it)
UNAVAILABLE = "unavailable"    # the directory could not be asked
ACCOUNT_ERROR = "account_error"  # LDAP entry unusable (e.g. bad Unix account name)


@dataclass
class LoginResult:
    user: User | None
    reason: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.user is not None


def verify_credentials(svc: Services, username: str, password: str) -> User | None:
    """The active user these credentials prove, or None."""
    return authenticate(svc, username, password).user


def directory_for(svc: Services) -> Directory | None:
    cfg = svc.config
    if not cfg.ldap_url:
        return None
    key = (cfg.ldap_url, cfg.ldap_bind_dn, cfg.ldap_bind_password, cfg.ldap_user_base,
           cfg.ldap_group_base, cfg.ldap_user_filter, cfg.ldap_uid_attr, cfg.ldap_unix_attr)
    cached = svc.cache.ldap_directory
    if cached is None or cached[0] != key:
        cached = (key, Directory.from_config(cfg))
        svc.cache.ldap_directory = cached
    return cached[1]


def authenticate(svc: Services, username: str, password: str) -> LoginResult:
    if not isinstance(password, str) or password == "" or len(password) > passwords.MAX_LENGTH:
        return LoginResult(None, INVALID, "empty password")
    if not valid_login_name(username):
        passwords.dummy_check(password)
        return LoginResult(None, INVALID, "unusable login name")
    directory = directory_for(svc)
    if directory is None:
        return _local(svc, username, password)
    try:
        lu = directory.find_user(username)
    except DirectoryUnavailable as exc:
        log.warning("login %r: %s", username, exc)
        res = _local(svc, username, password, only_unlinked=True)
        return res if res.ok else LoginResult(None, UNAVAILABLE, str(exc))
    if lu is None:
        # not in the directory: maybe a local (break-glass) account; else spend a bind's time
        res = _local(svc, username, password, only_unlinked=True, spend=False)
        if res.reason == INVALID and res.detail == "unknown user":
            directory.spend_a_bind(password)
        return res
    try:
        if not directory.check_password(lu.dn, password):
            return LoginResult(None, INVALID, "wrong password")
    except DirectoryUnavailable as exc:
        log.warning("login %r: %s", username, exc)
        return LoginResult(None, UNAVAILABLE, str(exc))
    return _ldap_login(svc, lu)


def _ldap_login(svc: Services, lu) -> LoginResult:
    now = svc.now()
    for attempt in (1, 2):   # a concurrent first login of the same user may win the insert
        try:
            with svc.db.transaction() as s:
                ix = Index.for_login(s, lu)
                existing = ix.users_by_dn.get(norm_dn(lu.dn)) or ix.users_by_name.get(lu.name)
                if existing is not None and not existing.active:
                    return LoginResult(None, INACTIVE, f"{existing.name} is inactive")
                out = upsert_ldap_user(s, ix, lu, now, reactivate=False)
                for w in out.warnings:
                    log.warning("login %s: %s", lu.name, w)
                if out.user is None:
                    return LoginResult(None, ACCOUNT_ERROR, "; ".join(out.warnings))
                user, changed = out.user, bool(out.changes)
            break
        except IntegrityError:
            if attempt == 2:
                raise
    if changed:
        log.info("login %s: %s", user.name, "; ".join(out.changes))
    return LoginResult(user, OK)


def _local(svc: Services, username: str, password: str, *, only_unlinked: bool = False,
           spend: bool = True) -> LoginResult:
    with svc.db.session() as s:
        user = s.scalar(select(User).where(User.name == username))
        if user is not None and only_unlinked and user.ldap_dn:
            user = None  # a directory user: only the directory may vouch for them
        if user is None or not user.password_hash:
            if spend:
                passwords.dummy_check(password)
            return LoginResult(None, INVALID, "unknown user")
        if not passwords.check_password(user.password_hash, password):
            return LoginResult(None, INVALID, "wrong password")
        if not user.active:
            return LoginResult(None, INACTIVE, f"{user.name} is inactive")
        s.expunge(user)
        return LoginResult(user, OK)
