"""The LDAP directory, seen through ldap3 (no Flask, no database).

* ``find_user(name)`` — one search with the service account; the login name is escaped with
  ``ldap3.utils.conv.escape_filter_chars`` before it replaces ``{username}`` in the filter, so
  ``*`` or ``alice)(uid=*`` match nothing;
* ``check_password(dn, password)`` — a real simple bind as the user's DN (the server checks the
  password; nothing is compared here). An empty password is refused before any bind: LDAP treats
  it as an anonymous bind that "succeeds";
* ``iter_users()`` / ``iter_groups()`` — paged searches (pages of ``PAGE_SIZE``).

Every connection has a connect timeout and a receive timeout; a server that cannot be reached,
or answers with an error, raises ``DirectoryUnavailable`` — never "wrong password".
"""
from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Iterator

import ldap3
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars

from .names import valid_unix_user

log = logging.getLogger("slipway.identity.ldap")

CONNECT_TIMEOUT = 5      # seconds to open the TCP (and TLS) connection
RECEIVE_TIMEOUT = 10     # seconds to wait for any answer
PAGE_SIZE = 500
GROUP_FILTER = "(objectClass=groupOfNames)"
INVALID_CREDENTIALS = 49
# Bind results that mean the server is not able to answer, not that the password is wrong.
_SERVER_TROUBLE = {1, 51, 52, 80}   # operationsError, busy, unavailable, other


class DirectoryUnavailable(Exception):
    """The LDAP server could not be reached or refused the service account / the search."""


@dataclass(frozen=True)
class LdapUser:
    dn: str
    name: str                 # ldap_uid_attr: the Slipway user name
    unix_user: str            # ldap_unix_attr (falls back to ``name``)
    email: str | None


@dataclass(frozen=True)
class LdapGroup:
    dn: str
    cn: str
    members: frozenset[str]   # member DNs as the server returned them
    owners: frozenset[str]    # groupOfNames ``owner`` DNs (they become team owners)


def _first(attrs: dict, name: str) -> str | None:
    for key, value in attrs.items():
        if key.lower() == name.lower():
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            return str(value) if value not in (None, "") else None
    return None


def _all(attrs: dict, name: str) -> list[str]:
    for key, value in attrs.items():
        if key.lower() == name.lower():
            if value is None:
                return []
            values = value if isinstance(value, (list, tuple)) else [value]
            return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values if v]
    return []


def _rdn_cn(dn: str) -> str | None:
    """The ``cn`` naming the entry (a group may hold several ``cn`` values; its RDN is one)."""
    from ldap3.utils.dn import parse_dn

    try:
        attr, value, _sep = parse_dn(dn)[0]
    except (lx.LDAPException, IndexError, ValueError):
        return None
    return value if attr.lower() == "cn" and value else None


class Directory:
    def __init__(self, url: str, *, bind_dn: str = "", bind_password: str = "", user_base: str,
                 group_base: str = "", user_filter: str = "(&(objectClass=inetOrgPerson)(uid={username}))",
                 uid_attr: str = "uid", unix_attr: str = "uid", page_size: int = PAGE_SIZE,
                 connect_timeout: float = CONNECT_TIMEOUT, receive_timeout: float = RECEIVE_TIMEOUT):
        self.url = url.strip().rstrip("/")   # ldap3 cannot parse ``ldap://host:389/``
        self.connect_timeout = connect_timeout
        self._server()   # a bad URL fails here, not at the first login
        self.bind_dn, self.bind_password = bind_dn, bind_password
        self.user_base, self.group_base = user_base, group_base
        self.user_filter = user_filter
        self.uid_attr, self.unix_attr = uid_attr, unix_attr
        self.page_size = page_size
        self.receive_timeout = receive_timeout

    @classmethod
    def from_config(cls, cfg) -> "Directory":
        return cls(cfg.ldap_url, bind_dn=cfg.ldap_bind_dn, bind_password=cfg.ldap_bind_password,
                   user_base=cfg.ldap_user_base, group_base=cfg.ldap_group_base,
                   user_filter=cfg.ldap_user_filter, uid_attr=cfg.ldap_uid_attr,
                   unix_attr=cfg.ldap_unix_attr)

    # ------------------------------------------------------------------------ connections
    def _server(self) -> ldap3.Server:
        """A fresh ``Server`` per connection: cheap (no schema read) and never shared between
        the web server's threads."""
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED) if self.url.lower().startswith("ldaps://") else None
        return ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=self.connect_timeout, tls=tls)

    def _service(self) -> ldap3.Connection:
        """A bound connection as the service account (anonymous when no bind DN is set)."""
        conn = ldap3.Connection(self._server(), user=self.bind_dn or None,
                                password=self.bind_password or None, auto_bind=ldap3.AUTO_BIND_NONE,
                                read_only=True, raise_exceptions=True, auto_referrals=False,
                                receive_timeout=self.receive_timeout)
        try:
            conn.open()
            conn.bind()
        except lx.LDAPInvalidCredentialsResult:
            conn.unbind()
            raise DirectoryUnavailable(f"LDAP service account {self.bind_dn!r} was refused by {self.url}") from None
        except lx.LDAPException as exc:
            conn.unbind()
            raise DirectoryUnavailable(f"LDAP server {self.url}: {exc}") from None
        return conn

    def _user_attrs(self) -> list[str]:
        return sorted({self.uid_attr, self.unix_attr, "mail"})

    def _to_user(self, dn: str, attrs: dict) -> LdapUser | None:
        name = _first(attrs, self.uid_attr)
        if not name:
            return None
        unix = _first(attrs, self.unix_attr) or name
        return LdapUser(dn=dn, name=name, unix_user=unix, email=_first(attrs, "mail"))

    def user_filter_for(self, username: str) -> str:
        return self.user_filter.replace("{username}", escape_filter_chars(username))

    # ------------------------------------------------------------------------------ login
    def find_user(self, username: str) -> LdapUser | None:
        """The one entry the filter finds for ``username``; None if none (or, refused, several)."""
        conn = self._service()
        try:
            conn.search(self.user_base, self.user_filter_for(username), ldap3.SUBTREE,
                        attributes=self._user_attrs(), size_limit=2)
            entries = [e for e in conn.response or () if e.get("type") == "searchResEntry"]
        except lx.LDAPNoSuchObjectResult:
            raise DirectoryUnavailable(f"LDAP user base {self.user_base!r} does not exist") from None
        except lx.LDAPException as exc:
            raise DirectoryUnavailable(f"LDAP search failed: {exc}") from None
        finally:
            conn.unbind()
        if len(entries) != 1:
            if entries:
                log.warning("LDAP: %d entries match login name %r; refusing", len(entries), username)
            return None
        return self._to_user(entries[0]["dn"], entries[0]["attributes"])

    def check_password(self, dn: str, password: str) -> bool:
        """A simple bind as ``dn``. True only when the server accepts the password."""
        if not password or not dn:
            return False  # empty password = unauthenticated bind: it would "succeed"
        conn = ldap3.Connection(self._server(), user=dn, password=password, auto_bind=ldap3.AUTO_BIND_NONE,
                                read_only=True, raise_exceptions=False, auto_referrals=False,
                                receive_timeout=self.receive_timeout, authentication=ldap3.SIMPLE)
        try:
            ok = conn.bind()
            code = (conn.result or {}).get("result")
        except lx.LDAPException as exc:
            raise DirectoryUnavailable(f"LDAP server {self.url}: {exc}") from None
        finally:
            try:
                conn.unbind()
            except lx.LDAPException:
                pass
        if ok and code == 0:
            return True
        if code in _SERVER_TROUBLE:
            raise DirectoryUnavailable(f"LDAP bind: server answered {conn.result.get('description')}")
        return False

    def spend_a_bind(self, password: str) -> None:
        """A bind that cannot succeed, so an unknown user costs what a wrong password costs."""
        try:
            self.check_password(f"cn=slipway-no-such-user,{self.user_base}", password or "x")
        except DirectoryUnavailable:
            pass

    # ------------------------------------------------------------------------------- sync
    def _paged(self, base: str, flt: str, attrs: list[str]) -> Iterator[tuple[str, dict]]:
        conn = self._service()
        try:
            for e in conn.extend.standard.paged_search(base, flt, ldap3.SUBTREE, attributes=attrs,
                                                       paged_size=self.page_size, generator=True):
                if e.get("type") == "searchResEntry":
                    yield e["dn"], e["attributes"]
        except lx.LDAPNoSuchObjectResult:
            raise DirectoryUnavailable(f"LDAP base {base!r} does not exist") from None
        except lx.LDAPException as exc:
            raise DirectoryUnavailable(f"LDAP search under {base!r} failed: {exc}") from None
        finally:
            conn.unbind()

    def iter_users(self) -> Iterator[LdapUser]:
        """Every user the filter admits (``{username}`` → ``*``), page by page."""
        flt = self.user_filter.replace("{username}", "*")
        for dn, attrs in self._paged(self.user_base, flt, self._user_attrs()):
            u = self._to_user(dn, attrs)
            if u is not None:
                yield u

    def iter_groups(self) -> Iterator[LdapGroup]:
        if not self.group_base:
            return
        for dn, attrs in self._paged(self.group_base, GROUP_FILTER, ["cn", "member", "owner"]):
            cn = _rdn_cn(dn) or _first(attrs, "cn")
            if cn:
                yield LdapGroup(dn=dn, cn=cn, members=frozenset(_all(attrs, "member")),
                                owners=frozenset(_all(attrs, "owner")))


__all__ = ["Directory", "DirectoryUnavailable", "LdapGroup", "LdapUser", "valid_unix_user"]
