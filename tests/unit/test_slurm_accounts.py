"""portal.teams.slurm_accounts.desired_state: teams -> Slurm accounts, active members -> associations."""
from sqlalchemy import select

from portal.db import Membership, Team, User
from portal.teams.slurm_accounts import desired_state
from tests.support.fakes import make_services
from slurm_bridge.sync import parse_current, plan


def _setup(tmp_path):
    svc = make_services(tmp_path, slurm_account_prefix="t-")
    now = svc.now()
    with svc.db.transaction() as s:
        users = {n: User(name=n, unix_user=f"sw-{n}", created_at=now) for n in ("alice", "bob", "carol")}
        users["nobody"] = User(name="nobody", unix_user="", created_at=now)   # no Unix user
        nlp = Team(name="nlp", personal=False, created_at=now)
        bob = Team(name="bob", personal=True, created_at=now)
        s.add_all([*users.values(), nlp, bob])
        s.flush()
        for n in ("alice", "bob", "carol", "nobody"):
            s.add(Membership(user_id=users[n].id, team_id=nlp.id, role="user", created_at=now))
        s.add(Membership(user_id=users["bob"].id, team_id=bob.id, role="owner", created_at=now))
    return svc


def _deactivate(svc, name):
    with svc.db.transaction() as s:
        s.scalar(select(User).where(User.name == name)).active = False


def test_desired_state_has_every_team_and_the_active_members(tmp_path):
    svc = _setup(tmp_path)
    d = desired_state(svc)
    assert [a.name for a in d.accounts] == ["t-bob", "t-nlp"]
    assert d.account_prefix == "t-"
    users = {u.name: u for u in d.users}
    assert sorted(users) == ["sw-alice", "sw-bob", "sw-carol"]
    assert users["sw-bob"].default_account == "t-bob"        # personal team first
    assert dict(users["sw-bob"].accounts) == {"t-bob": ("normal",), "t-nlp": ("normal",)}
    svc.db.dispose()


def test_inactive_users_are_left_out_and_their_associations_removed(tmp_path):
    svc = _setup(tmp_path)
    _deactivate(svc, "carol")       # gone from LDAP
    _deactivate(svc, "bob")         # switched off: his personal team's account stays, empty
    d = desired_state(svc, with_budget=False)   # the budget mirror: test_policy_sync.py
    assert [u.name for u in d.users] == ["sw-alice"]
    assert [a.name for a in d.accounts] == ["t-bob", "t-nlp"]

    # what Slurm has from before they were switched off: the convergence removes them
    cur = parse_current(
        "root||||1||normal|\n"
        "t-bob|||root|100||normal|\nt-bob|sw-bob|||1||normal|normal\n"
        "t-nlp|||root|100||normal|\nt-nlp|sw-alice|||1||normal|normal\n"
        "t-nlp|sw-bob|||1||normal|normal\nt-nlp|sw-carol|||1||normal|normal\n"
        "site|||root|1||normal|\nsite|sw-carol|||1||normal|normal\n",
        "sw-alice|t-nlp\nsw-bob|t-bob\nsw-carol|site\n",
        "normal|100||cluster\nemergency|1000|normal|requeue\n")
    assert [c.summary for c in plan(d, cur)] == ["remove user sw-bob", "remove sw-carol from t-nlp"]


def test_an_active_user_sharing_the_unix_user_keeps_the_association(tmp_path):
    svc = _setup(tmp_path)
    now = svc.now()
    with svc.db.transaction() as s:
        # a local account for carol's Unix user, still active, in nlp too
        local = User(name="carol-local", unix_user="sw-carol", created_at=now)
        s.add(local)
        s.flush()
        nlp = s.scalar(select(Team).where(Team.name == "nlp"))
        s.add(Membership(user_id=local.id, team_id=nlp.id, role="user", created_at=now))
    _deactivate(svc, "carol")
    users = {u.name: dict(u.accounts) for u in desired_state(svc).users}
    assert users["sw-carol"] == {"t-nlp": ("normal",)}


def test_reactivated_user_is_back(tmp_path):
    svc = _setup(tmp_path)
    _deactivate(svc, "carol")
    with svc.db.transaction() as s:
        s.scalar(select(User).where(User.name == "carol")).active = True
    assert "sw-carol" in {u.name for u in desired_state(svc).users}
