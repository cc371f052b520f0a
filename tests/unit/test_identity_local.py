"""Local accounts (no LDAP): password hashes, ``verify_credentials``, the CLI, and name rules."""
from __future__ import annotations

import time

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.cli import Ctx, main
from portal.db import User
from portal.identity import passwords
from portal.identity.login import INACTIVE, INVALID, authenticate, verify_credentials
from portal.identity.names import norm_dn, personal_team_for, personal_team_name, team_name_for_group, valid_unix_user
from tests.support.fakes import FakeBackend, make_services


@pytest.fixture
def svc(tmp_path):
    s = make_services(tmp_path, backend=FakeBackend())
    yield s
    s.db.dispose()


def cli(svc, *args, input=None, ok=True, actor=None):
    argv = (["--as", actor] if actor else []) + list(args)
    r = CliRunner().invoke(main, argv, obj=Ctx(services=svc), input=input, catch_exceptions=False)
    assert (r.exit_code == 0) == ok, r.output
    return r.output


# ------------------------------------------------------------------------------- passwords

def test_hash_is_salted_scrypt_and_checks():
    h1, h2 = passwords.hash_password("correct horse"), passwords.hash_password("correct horse")
    assert h1 != h2 and h1.startswith(("scrypt:", "pbkdf2:")) and "correct horse" not in h1
    assert passwords.check_password(h1, "correct horse")
    assert not passwords.check_password(h1, "correct hors")
    assert not passwords.check_password(h1, "")
    assert not passwords.check_password(None, "correct horse")
    assert not passwords.check_password("garbage$hash", "correct horse")


@pytest.mark.parametrize("bad, why", [("", "empty"), ("short", "at least 8"), ("x" * 2000, "at most"),
                                      ("abcdefgh\x00", "NUL")])
def test_new_password_rules(bad, why):
    with pytest.raises(passwords.PasswordRejected, match=why):
        passwords.hash_password(bad)


# ------------------------------------------------------------------------- login (local)

def test_cli_user_add_with_password_stdin_then_login(svc):
    out = cli(svc, "user", "add", "jane.doe@example.com", "--unix-user", "jdoe", "--password-stdin",
              input="s3cret-pass\n")
    assert "personal team jane-doe-example-com" in out
    with svc.db.session() as s:
        u = s.scalar(select(User).where(User.name == "jane.doe@example.com"))
        assert u.password_hash and "s3cret-pass" not in u.password_hash
    user = verify_credentials(svc, "jane.doe@example.com", "s3cret-pass")
    assert user is not None and user.name == "jane.doe@example.com" and user.unix_user == "jdoe"
    for name, pw in [("jane.doe@example.com", "wrong-pass"), ("jane.doe@example.com", ""),
                     ("nobody", "s3cret-pass"), ("", "s3cret-pass"), ("*", "s3cret-pass"),
                     ("jane.doe@example.com\n", "s3cret-pass")]:
        assert verify_credentials(svc, name, pw) is None, (name, pw)


def test_cli_password_option_and_passwd(svc):
    cli(svc, "user", "add", "bob", "--password", "first-pass-1")
    assert verify_credentials(svc, "bob", "first-pass-1")
    assert "at least 8" in cli(svc, "user", "passwd", "bob", "--password-stdin", input="short\n", ok=False)
    cli(svc, "user", "passwd", "bob", "--password-stdin", input="second-pass-2\n")
    assert verify_credentials(svc, "bob", "first-pass-1") is None
    assert verify_credentials(svc, "bob", "second-pass-2")
    # prompt (twice) when no stdin flag
    cli(svc, "user", "passwd", "bob", input="third-pass-3\nthird-pass-3\n")
    assert verify_credentials(svc, "bob", "third-pass-3")
    # bob may set his own password; not carol's
    cli(svc, "user", "add", "carol", "--password", "carol-pass-1")
    assert "only cluster administrators" in cli(svc, "user", "passwd", "carol", "--password-stdin",
                                                input="hijacked-pw\n", actor="bob", ok=False)
    cli(svc, "user", "passwd", "bob", "--password-stdin", input="fourth-pass-4\n", actor="bob")
    assert "not both" in cli(svc, "user", "add", "dave", "--password", "x" * 9, "--password-stdin",
                             input="y" * 9 + "\n", ok=False)


def test_a_new_password_and_user_logout_end_portal_logins(svc):
    from portal.app import create_app
    from tests.support.web import csrf_token

    cli(svc, "user", "add", "bob", "--password", "first-pass-1")
    cli(svc, "user", "add", "carol", "--password", "carol-pass-1")
    app = create_app(svc)

    def browser(name, pw):
        c = app.test_client()
        r = c.post("/login", data={"username": name, "password": pw, "csrf_token": csrf_token(c)})
        assert r.status_code == 302
        assert c.get("/").status_code == 200
        return c

    laptop, phone = browser("bob", "first-pass-1"), browser("bob", "first-pass-1")
    carols = browser("carol", "carol-pass-1")
    assert "2 portal login(s) ended" in cli(svc, "user", "passwd", "bob", "--password-stdin",
                                            input="second-pass-2\n")
    assert laptop.get("/").status_code == 302 and phone.get("/").status_code == 302
    assert carols.get("/").status_code == 200          # nobody else's
    laptop = browser("bob", "second-pass-2")
    assert "only cluster administrators" in cli(svc, "user", "logout", "carol", actor="bob", ok=False)
    assert carols.get("/").status_code == 200
    assert "1 portal login(s) of bob ended" in cli(svc, "user", "logout", "bob", actor="bob")
    assert laptop.get("/").status_code == 302
    assert "there is no user" in cli(svc, "user", "logout", "nobody", ok=False)


def test_user_without_password_and_ldap_users_cannot_use_local_path(svc):
    cli(svc, "user", "add", "nopw")
    assert verify_credentials(svc, "nopw", "anything-1") is None
    with svc.db.transaction() as s:
        s.add(User(name="ldapuser", unix_user="ldapuser", ldap_dn="uid=ldapuser,ou=people,dc=x",
                   password_hash=passwords.hash_password("local-pass-1"), created_at=svc.now()))
    assert "lives in LDAP" in cli(svc, "user", "passwd", "ldapuser", "--password-stdin",
                                  input="new-pass-12\n", ok=False)


def test_inactive_user_refused_even_with_right_password(svc):
    cli(svc, "user", "add", "eve", "--password", "eve-pass-1")
    with svc.db.transaction() as s:
        s.scalar(select(User).where(User.name == "eve")).active = False
    r = authenticate(svc, "eve", "eve-pass-1")
    assert r.user is None and r.reason == INACTIVE
    assert authenticate(svc, "eve", "wrong-pass").reason == INVALID


def test_unknown_user_costs_a_hash_check(svc):
    cli(svc, "user", "add", "tim", "--password", "tim-pass-1")
    passwords.dummy_check("warm")  # build the dummy hash outside the measurement

    def best(name):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            verify_credentials(svc, name, "wrong-pass")
            times.append(time.perf_counter() - t0)
        return min(times)

    known, unknown = best("tim"), best("nobody-here")
    assert unknown > known * 0.5, (known, unknown)   # both pay one scrypt check


# ------------------------------------------------------------------------------ name rules

def test_personal_team_rule_is_the_cli_rule():
    for name in ["alice", "Jane.Doe@Example.com", "a.b@c.d"]:
        assert personal_team_for(name) == personal_team_name(name)
    assert personal_team_for("Jane.Doe@Example.com") == "jane-doe-example-com"
    assert personal_team_for("bad name!") is None


@pytest.mark.parametrize("cn, team", [("nlp", "nlp"), ("NLP Team", "nlp-team"), ("Vision.Lab", "vision-lab"),
                                      ("ml@corp", "ml-corp"), ("-x-", "x"), ("x.git", "x-git"),
                                      ("???", None), ("", None), ("a" * 80, "a" * 63)])
def test_group_team_names(cn, team):
    assert team_name_for_group(cn) == team


def test_unix_names_and_dns():
    assert valid_unix_user("sw-alice") and valid_unix_user("_svc")
    assert not valid_unix_user("") and not valid_unix_user("Alice") and not valid_unix_user("a b")
    assert not valid_unix_user("-rf") and not valid_unix_user("a" * 40)
    assert norm_dn("UID=Alice, ou=People ,dc=X") == norm_dn("uid=alice,ou=people,dc=x")
    assert norm_dn(r"cn=a\, b,dc=x") != norm_dn("cn=a,b,dc=x")
