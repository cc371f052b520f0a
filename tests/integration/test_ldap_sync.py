"""LDAP groups → teams against a REAL slapd: create, converge both ways, re-run = no change,
paged search of many users."""
from __future__ import annotations

import os
import time

import ldap3
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.cli import Ctx, main
from portal.db import Membership, Project, ReconcilerState, Team, User
from portal.identity.ldap_directory import DirectoryUnavailable
from portal.identity.login import INVALID, authenticate, verify_credentials
from portal.identity.team_sync import SyncRefused, maybe_sync_ldap, sync_ldap
from tests.support.fakes import Clock, FakeBackend, make_services
from tests.ldap_server import (GROUPS, PASSWORDS, bulk_users_ldif, group_dn, ldap_config,  # noqa: F401
                               ldap_server, start_slapd, user_dn)


@pytest.fixture
def svc(tmp_path, ldap_server):  # noqa: F811
    s = make_services(tmp_path, backend=FakeBackend(), clock=Clock(), **ldap_config(ldap_server))
    yield s
    s.db.dispose()


def members(svc) -> dict[str, dict[str, str]]:
    """team -> {user: role} for every team."""
    with svc.db.session() as s:
        out: dict[str, dict[str, str]] = {t.name: {} for t in s.scalars(select(Team))}
        for m, t, u in s.execute(select(Membership, Team, User).join(Team).join(User)):
            out[t.name][u.name] = m.role
        return out


def active(svc) -> dict[str, bool]:
    with svc.db.session() as s:
        return {u.name: u.active for u in s.scalars(select(User))}


def test_sync_creates_users_and_teams_and_converges_both_ways(svc, ldap_server):  # noqa: F811
    rep = sync_ldap(svc)
    assert (rep.users_seen, rep.groups_seen, rep.users_created, rep.teams_created) == (3, 2, 3, 2)
    assert members(svc) == {
        "alice": {"alice": "owner"}, "bob": {"bob": "owner"}, "carol": {"carol": "owner"},
        "nlp": {"alice": "user", "bob": "user"}, "vision": {"carol": "user"},
    }
    with svc.db.session() as s:
        nlp = s.scalar(select(Team).where(Team.name == "nlp"))
        assert nlp.ldap_group == group_dn("nlp") and not nlp.personal
        carol = s.scalar(select(User).where(User.name == "carol"))
        assert (carol.unix_user, carol.ldap_dn, carol.email) == ("sw-carol", user_dn("carol"), "carol@example.org")
    again = sync_ldap(svc)
    assert again.changes == [] and not again.changed and again.warnings == []

    admin = ldap_server.admin()
    # bob leaves nlp
    admin.modify(group_dn("nlp"), {"member": [(ldap3.MODIFY_DELETE, [user_dn("bob")])]})
    rep = sync_ldap(svc)
    assert rep.changes == ["bob removed from team nlp"]
    assert members(svc)["nlp"] == {"alice": "user"}
    # carol is deleted from the directory (slapd keeps her DN in vision's member list)
    admin.delete(user_dn("carol"))
    rep = sync_ldap(svc)
    assert rep.users_deactivated == 1 and "carol removed from team vision" in rep.changes
    assert active(svc) == {"alice": True, "bob": True, "carol": False}
    assert members(svc)["vision"] == {} and members(svc)["carol"] == {"carol": "owner"}  # personal kept
    r = authenticate(svc, "carol", PASSWORDS["carol"])
    assert r.user is None and r.reason == INVALID
    assert sync_ldap(svc).changes == []


def test_roles_local_teams_and_lost_groups(svc, ldap_server):  # noqa: F811
    sync_ldap(svc)
    now = svc.now()
    with svc.db.transaction() as s:
        ids = {u.name: u.id for u in s.scalars(select(User))}
        teams = {t.name: t for t in s.scalars(select(Team))}
        # an admin raised alice in nlp; a hand-made team with bob; a local (non-LDAP) user in nlp
        s.scalar(select(Membership).where(Membership.user_id == ids["alice"],
                                          Membership.team_id == teams["nlp"].id)).role = "administrator"
        hand = Team(name="handmade", created_at=now)
        svc_user = User(name="robot", unix_user="robot", created_at=now)
        s.add_all([hand, svc_user])
        s.flush()
        s.add(Membership(user_id=ids["bob"], team_id=hand.id, role="owner"))
        s.add(Membership(user_id=svc_user.id, team_id=teams["nlp"].id, role="user"))
        s.add(Project(team_id=teams["vision"].id, name="seg", gpu_type="a4000", gpu_count=1,
                      image="python", created_at=now))
    assert sync_ldap(svc).changes == []       # higher roles and hand-made things are kept
    assert members(svc)["nlp"] == {"alice": "administrator", "bob": "user", "robot": "user"}

    admin = ldap_server.admin()
    # owner attribute → owner role; a new group whose name clashes with a Slipway team is skipped
    admin.modify(group_dn("nlp"), {"owner": [(ldap3.MODIFY_ADD, [user_dn("bob")])]})
    admin.add(group_dn("handmade"), "groupOfNames", {"cn": "handmade", "member": [user_dn("alice")]})
    admin.add(group_dn("Vision Lab"), "groupOfNames", {"cn": "Vision Lab", "member": [user_dn("alice")]})
    rep = sync_ldap(svc)
    assert "bob: user -> owner in team nlp" in rep.changes
    assert any("handmade" in w and "does not mirror it" in w for w in rep.warnings)
    m = members(svc)
    assert m["nlp"]["bob"] == "owner" and m["handmade"] == {"bob": "owner"}
    assert m["vision-lab"] == {"alice": "user"}

    # vision disappears: the team, its project and ldap_group stay; directory members go
    admin.delete(group_dn("vision"))
    rep = sync_ldap(svc)
    assert rep.changes == ["carol removed from team vision"]
    assert any("vision" in w and "is gone" in w for w in rep.warnings)
    with svc.db.session() as s:
        vision = s.scalar(select(Team).where(Team.name == "vision"))
        assert vision.ldap_group == group_dn("vision") and [p.name for p in vision.projects] == ["seg"]
    assert members(svc)["vision"] == {}
    assert sync_ldap(svc).changes == []
    # the group comes back: so do its members
    admin.add(group_dn("vision"), "groupOfNames", {"cn": "vision", "member": [user_dn("carol")]})
    assert sync_ldap(svc).changes == ["carol added to team vision (user)"]


def test_deleted_user_comes_back_active(svc, ldap_server):  # noqa: F811
    sync_ldap(svc)
    admin = ldap_server.admin()
    admin.delete(user_dn("bob"))
    sync_ldap(svc)
    assert active(svc)["bob"] is False
    admin.add(user_dn("bob"), ["inetOrgPerson", "posixAccount"], {
        "uid": "bob", "cn": "Bob", "sn": "bob", "description": "sw-bob", "uidNumber": 10002, "mail": "bob@example.org",
        "gidNumber": 5000, "homeDirectory": "/home/sw-bob", "userPassword": "bob-pw-new"})
    rep = sync_ldap(svc)
    assert "user bob: reactivated" in rep.changes and "bob added to team nlp (user)" in rep.changes
    assert verify_credentials(svc, "bob", "bob-pw-new") is not None


def test_empty_directory_answer_is_refused(svc):
    sync_ldap(svc)
    svc.config.ldap_user_filter = "(&(objectClass=device)(cn={username}))"   # a wrong filter
    with pytest.raises(SyncRefused):
        sync_ldap(svc)
    assert all(active(svc).values())
    rep = sync_ldap(svc, allow_empty=True)   # the operator insists
    assert rep.users_deactivated == 3


def test_group_base_checks(svc, ldap_server):  # noqa: F811
    sync_ldap(svc)
    admin = ldap_server.admin()
    admin.add(f"ou=empty,{ldap_server.base_dn}", "organizationalUnit", {"ou": "empty"})
    svc.config.ldap_group_base = f"ou=empty,{ldap_server.base_dn}"     # exists, holds no groups
    with pytest.raises(SyncRefused):
        sync_ldap(svc)
    svc.config.ldap_group_base = ""                                    # groups not synced at all
    assert sync_ldap(svc).changes == [] and members(svc)["nlp"] == {"alice": "user", "bob": "user"}
    svc.config.ldap_group_base = f"ou=nowhere,{ldap_server.base_dn}"   # does not exist
    with pytest.raises(DirectoryUnavailable):
        sync_ldap(svc)


def test_maybe_sync_respects_interval_and_reports_errors(svc, ldap_server):  # noqa: F811
    clock = svc.clock
    rep = maybe_sync_ldap(svc, clock())
    assert rep is not None and rep.users_created == 3
    assert maybe_sync_ldap(svc, clock.advance(seconds=299)) is None
    ldap_server.stop()
    rep = maybe_sync_ldap(svc, clock.advance(seconds=2))
    assert rep is not None and rep.errors and "ldap sync" in rep.errors[0]
    assert maybe_sync_ldap(svc, clock.advance(seconds=10)) is None   # no hammering a dead server
    with svc.db.session() as s:
        assert s.get(ReconcilerState, "ldap_synced_at") is not None
    assert all(active(svc).values())   # a dead server disables nobody


def test_cli_ldap_sync(svc):
    runner = CliRunner()
    r = runner.invoke(main, ["ldap", "sync"], obj=Ctx(services=svc), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "team nlp created" in r.output and "alice added to team nlp (user)" in r.output
    r = runner.invoke(main, ["ldap", "sync"], obj=Ctx(services=svc), catch_exceptions=False)
    assert r.exit_code == 0 and "nothing changed" in r.output, r.output
    r = runner.invoke(main, ["--as", "alice", "ldap", "sync"], obj=Ctx(services=svc))
    assert r.exit_code != 0 and "only cluster administrators" in r.output


def test_sync_calls_slurm_account_convergence(svc, ldap_server, monkeypatch):  # noqa: F811
    import portal.teams.slurm_accounts as sa

    calls = []

    class WithSacctmgr(FakeBackend):
        def run(self, *argv, **kw):   # a backend that can run sacctmgr
            raise AssertionError("not reached: sync_accounts is patched")

    svc.backend = WithSacctmgr()
    monkeypatch.setattr(sa, "sync_accounts", lambda s: calls.append(s) or ["add account team-nlp"])
    rep = sync_ldap(svc)
    assert calls == [svc] and rep.slurm_changes == ["add account team-nlp"]
    assert sync_ldap(svc).slurm_changes == [] and len(calls) == 1   # nothing changed: no sacctmgr

    def broken(s):
        raise RuntimeError("sacctmgr: connection refused")

    monkeypatch.setattr(sa, "sync_accounts", broken)
    ldap_server.admin().modify(group_dn("nlp"), {"member": [(ldap3.MODIFY_DELETE, [user_dn("bob")])]})
    rep = sync_ldap(svc)
    assert rep.changed and rep.errors and "reconciler will retry" in rep.errors[0]


def _assocs(cluster, prefix: str) -> set[tuple[str, str]]:
    """(account, user) of every association in this test's accounts; user "" for the account."""
    out = cluster.run("sacctmgr", "--parsable2", "--noheader", "show", "assoc",
                      "format=Account,User,Partition").stdout
    return {(a, u) for a, u, _ in (line.split("|") for line in out.splitlines() if line)
            if a.startswith(prefix)}


def _drop_accounts(cluster, prefix: str) -> None:
    names = sorted({a for a, _ in _assocs(cluster, prefix)})
    if names:
        cluster.run("sacctmgr", "-i", "delete", "account", "where", "name=" + ",".join(names),
                    check=False)


def test_ldap_groups_converge_to_live_slurm_associations(tmp_path, ldap_server, slurm_cluster):  # noqa: F811
    """LDAP group -> team -> Slurm account and associations on the live cluster (real slapd,
    real sacctmgr, nothing patched): a member who leaves the group, and one who leaves the
    directory, lose their associations; re-running changes nothing."""
    import secrets

    from portal.adapters.slurm import SacctmgrAccounts
    from portal.teams.slurm_accounts import sync_accounts
    from slurm_bridge.cli import CliBackend

    prefix = "l" + secrets.token_hex(3) + "-"          # this test's own accounts only
    backend = CliBackend(env={**slurm_cluster.env, "PATH": os.environ["PATH"]}, as_root=False)
    svc = make_services(tmp_path, backend=backend, accounts=SacctmgrAccounts(backend, "slipway"), clock=Clock(),
                        slurm_account_prefix=prefix, **ldap_config(ldap_server))
    site = _assocs(slurm_cluster, "slipway-test")       # the cluster's own account
    try:
        rep = sync_ldap(svc)
        assert rep.errors == [] and rep.teams_created == 2
        assert f"add account {prefix}nlp (fairshare 100)" in rep.slurm_changes
        assocs = _assocs(slurm_cluster, prefix)
        assert {(f"{prefix}nlp", ""), (f"{prefix}nlp", "sw-alice"), (f"{prefix}nlp", "sw-bob"),
                (f"{prefix}vision", "sw-carol"), (f"{prefix}bob", "sw-bob")} <= assocs
        assert sync_accounts(svc) == []                 # converged: nothing to do

        # bob leaves nlp in the directory
        ldap_server.admin().modify(group_dn("nlp"), {"member": [(ldap3.MODIFY_DELETE, [user_dn("bob")])]})
        rep = sync_ldap(svc)
        assert rep.changes == ["bob removed from team nlp"] and rep.errors == []
        assert rep.slurm_changes == [f"remove sw-bob from {prefix}nlp"]
        assocs = _assocs(slurm_cluster, prefix)
        assert (f"{prefix}nlp", "sw-bob") not in assocs
        assert {(f"{prefix}nlp", "sw-alice"), (f"{prefix}bob", "sw-bob")} <= assocs   # the rest stays
        assert sync_ldap(svc).changes == [] and sync_accounts(svc) == []
        assert _assocs(slurm_cluster, prefix) == assocs

        # carol leaves the directory: inactive, so no association of hers stays (her personal
        # team's account does, empty)
        ldap_server.admin().delete(user_dn("carol"))
        rep = sync_ldap(svc)
        assert rep.users_deactivated == 1 and rep.errors == []
        assert sorted(rep.slurm_changes) == [f"remove sw-carol from {prefix}carol",
                                             f"remove sw-carol from {prefix}vision"]
        assocs = _assocs(slurm_cluster, prefix)
        assert not any(u == "sw-carol" for _, u in assocs)
        assert (f"{prefix}carol", "") in assocs and (f"{prefix}vision", "") in assocs
        assert sync_accounts(svc) == [] and _assocs(slurm_cluster, prefix) == assocs
        # nothing outside this test's prefix was touched: sw-carol keeps the cluster's account
        assert _assocs(slurm_cluster, "slipway-test") == site and ("slipway-test", "sw-carol") in site
    finally:
        _drop_accounts(slurm_cluster, prefix)
        svc.db.dispose()
    assert _assocs(slurm_cluster, prefix) == set()


def test_paged_search_of_many_users(tmp_path):
    n = 1200
    t0 = time.perf_counter()
    srv = start_slapd(tmp_path / "slapd", extra_ldif=bulk_users_ldif(n, group="everyone"))
    started = time.perf_counter() - t0
    s = make_services(tmp_path, backend=FakeBackend(), **ldap_config(srv))
    try:
        from portal.identity.ldap_directory import Directory

        d = Directory.from_config(s.config)
        t0 = time.perf_counter()
        users = list(d.iter_users())
        search = time.perf_counter() - t0
        assert len(users) == n + 3
        # the service account is limited like any client: without paging the server stops at 500
        conn = d._service()
        conn.raise_exceptions = False
        conn.search(d.user_base, "(uid=*)", attributes=["uid"])
        unpaged = len(conn.entries)
        conn.unbind()
        assert unpaged == 500
        rep = sync_ldap(s)
        assert rep.users_created == n + 3 and rep.groups_seen == 3
        assert len(members(s)["everyone"]) == n
        t0 = time.perf_counter()
        again = sync_ldap(s)
        resync = time.perf_counter() - t0
        assert again.changes == []
        print(f"\n{n + 3} users: slapd+slapadd {started:.2f} s, paged search {search:.3f} s "
              f"(one unpaged search stops at {unpaged}), first sync {rep.elapsed_s:.2f} s "
              f"(search {rep.search_s:.3f} s), re-sync {resync:.2f} s")
    finally:
        s.db.dispose()
        srv.stop()
