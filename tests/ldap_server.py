"""A REAL OpenLDAP server for tests: Debian's ``slapd`` from its own ``slapd.conf`` in a temp dir.

``start_slapd(tmpdir, port=None, extra_ldif="") -> LdapServer`` writes the config (mdb backend,
core/cosine/inetorgperson/nis schemas, rootdn/rootpw, ACLs: users may bind and read themselves,
the service account reads everything), loads the base LDIF with ``slapadd`` (offline, fast), starts
``slapd -h ldap://127.0.0.1:PORT/ -d 0`` in the foreground as our child, and waits until it
answers. ``LdapServer.stop()`` ends exactly that process (by PID). About 0.1–0.3 s to start.

The directory (base ``dc=slipway,dc=test``):

* ``ou=people``: alice, bob, carol — ``inetOrgPerson`` + ``posixAccount``, ``uid: alice`` etc.,
  the Unix account in ``description`` (``sw-alice``; configure ``ldap_unix_attr=description``),
  passwords ``{SSHA}`` hashes made by ``slappasswd`` (``PASSWORDS``);
* ``ou=services``: ``cn=slipway`` — the service account (``SERVICE_DN`` / ``SERVICE_PASSWORD``);
* ``ou=groups``: ``groupOfNames`` ``nlp`` {alice, bob}, ``vision`` {carol}.

Fixtures (register in tests/conftest.py with ``from tests.ldap_server import ldap_server  # noqa``):
``ldap_server`` — a fresh server per test (tests change the directory), stopped afterwards.
``ldap_config(server)`` gives the Slipway config keys for it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SLAPPASSWD = shutil.which("slappasswd") or "/usr/sbin/slappasswd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

BASE_DN = "dc=slipway,dc=test"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "admin-secret"
SERVICE_DN = f"cn=slipway,ou=services,{BASE_DN}"
SERVICE_PASSWORD = "service-secret"
PEOPLE = f"ou=people,{BASE_DN}"
GROUPS = f"ou=groups,{BASE_DN}"
PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-333"}
UNIX = {"alice": "sw-alice", "bob": "sw-bob", "carol": "sw-carol"}


def user_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def group_dn(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


_hash_cache: dict[str, str] = {}


def ssha(password: str) -> str:
    """An ``{SSHA}`` hash made by slappasswd (cached per password within the test run)."""
    if password not in _hash_cache:
        _hash_cache[password] = subprocess.run(
            [SLAPPASSWD, "-h", "{SSHA}", "-s", password], check=True, capture_output=True, text=True,
            timeout=10).stdout.strip()
    return _hash_cache[password]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def user_ldif(uid: str, password: str, unix: str, number: int) -> str:
    return (f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
            f"uid: {uid}\ncn: {uid.capitalize()}\nsn: {uid}\nmail: {uid}@example.org\n"
            f"description: {unix}\nuidNumber: {number}\ngidNumber: 5000\n"
            f"homeDirectory: /home/{unix}\nuserPassword: {ssha(password)}\n\n")


def group_ldif(cn: str, members: list[str], owners: list[str] = ()) -> str:
    out = f"dn: {group_dn(cn)}\nobjectClass: groupOfNames\ncn: {cn}\n"
    out += "".join(f"member: {user_dn(m)}\n" for m in members)
    out += "".join(f"owner: {user_dn(o)}\n" for o in owners)
    return out + "\n"


def base_ldif() -> str:
    out = (f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: Slipway test\n"
           f"dc: slipway\n\n")
    for ou in ("people", "groups", "services"):
        out += f"dn: ou={ou},{BASE_DN}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
    out += (f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
            f"cn: slipway\nuserPassword: {ssha(SERVICE_PASSWORD)}\n\n")
    for n, (uid, pw) in enumerate(PASSWORDS.items()):
        out += user_ldif(uid, pw, UNIX[uid], 10001 + n)
    out += group_ldif("nlp", ["alice", "bob"])
    out += group_ldif("vision", ["carol"])
    return out


def bulk_users_ldif(n: int, *, password: str = "bulk-pw-1", prefix: str = "u", group: str | None = None) -> str:
    """``n`` more users (``u00000``…) and optionally one group holding all of them."""
    h = ssha(password)
    out = []
    for i in range(n):
        uid = f"{prefix}{i:05d}"
        out.append(f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
                   f"uid: {uid}\ncn: {uid}\nsn: {uid}\ndescription: sw-{uid}\nuidNumber: {20000 + i}\n"
                   f"gidNumber: 5000\nhomeDirectory: /home/{uid}\nuserPassword: {h}\n\n")
    if group:
        out.append(group_ldif(group, [f"{prefix}{i:05d}" for i in range(n)]))
    return "".join(out)


SLAPD_CONF = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {schema}/nis.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
modulepath {modules}
moduleload back_mdb
sizelimit 500
database mdb
maxsize 1073741824
suffix "{base}"
rootdn "{admin}"
rootpw {rootpw}
directory {dir}/data
index objectClass eq
index uid eq
index member eq
# like a real site: one plain search returns at most 500 entries; paged searches (pages up to
# 1000) may walk the whole directory
limits dn.exact="{service}" size.soft=500 size.hard=500 size.pr=1000 size.prtotal=unlimited
access to attrs=userPassword
  by self =xw
  by anonymous auth
  by * none
access to *
  by dn.exact="{service}" read
  by self read
  by * none
"""


@dataclass
class LdapServer:
    url: str
    base_dn: str
    admin_dn: str
    admin_password: str
    dir: Path
    port: int
    proc: subprocess.Popen | None = field(default=None, repr=False)
    start_s: float = 0.0

    def stop(self) -> None:
        """Stop our slapd (SIGTERM, then SIGKILL after 5 s); idempotent."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    def admin(self):
        """An ldap3 connection bound as the rootdn (to change the directory in tests)."""
        import ldap3

        return ldap3.Connection(ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=5),
                                self.admin_dn, self.admin_password, auto_bind=True,
                                raise_exceptions=True, receive_timeout=10)


def start_slapd(tmpdir: os.PathLike | str, port: int | None = None, *, extra_ldif: str = "",
                timeout: float = 15.0) -> LdapServer:
    t0 = time.monotonic()
    d = Path(tmpdir).absolute()
    (d / "data").mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = d / "slapd.conf"
    conf.write_text(SLAPD_CONF.format(schema=SCHEMA_DIR, dir=d, modules=MODULE_DIR, base=BASE_DN,
                                      admin=ADMIN_DN, rootpw=ssha(ADMIN_PASSWORD), service=SERVICE_DN))
    ldif = d / "data.ldif"
    ldif.write_text(base_ldif() + extra_ldif)
    r = subprocess.run([SLAPADD, "-q", "-f", str(conf), "-l", str(ldif)], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"slapadd failed: {r.stderr[-2000:]}")
    url = f"ldap://127.0.0.1:{port}"   # ldap3 refuses a trailing slash; slapd -h wants one
    log = open(d / "slapd.log", "wb")
    proc = subprocess.Popen([SLAPD, "-h", url + "/", "-f", str(conf), "-d", "0"], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    srv = LdapServer(url=url, base_dn=BASE_DN, admin_dn=ADMIN_DN, admin_password=ADMIN_PASSWORD,
                     dir=d, port=port, proc=proc)
    try:
        _wait_ready(srv, timeout)
    except BaseException:
        srv.stop()
        raise
    srv.start_s = time.monotonic() - t0
    return srv


def _wait_ready(srv: LdapServer, timeout: float) -> None:
    import ldap3
    from ldap3.core.exceptions import LDAPException

    deadline = time.monotonic() + timeout
    while True:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"slapd exited ({srv.proc.returncode}): "
                               f"{(srv.dir / 'slapd.log').read_text(errors='replace')[-2000:]}")
        try:
            srv.admin().unbind()
            return
        except LDAPException:
            if time.monotonic() > deadline:
                raise RuntimeError(f"slapd on {srv.url} did not answer within {timeout} s") from None
            time.sleep(0.05)


def ldap_config(srv: LdapServer) -> dict:
    """Slipway config keys pointing at ``srv`` (Unix account from ``description``)."""
    return dict(ldap_url=srv.url, ldap_bind_dn=SERVICE_DN, ldap_bind_password=SERVICE_PASSWORD,
                ldap_user_base=PEOPLE, ldap_group_base=GROUPS, ldap_unix_attr="description")


@pytest.fixture
def ldap_server(tmp_path_factory):
    """A fresh slapd with the base directory, per test; stopped afterwards."""
    if not Path(SLAPD).exists():
        pytest.skip("slapd is not installed")
    srv = start_slapd(tmp_path_factory.mktemp("slapd"))
    try:
        yield srv
    finally:
        srv.stop()
