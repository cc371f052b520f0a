"""The sacctmgr convergence plan is pure: given desired and current state, which changes.

Current state comes from real ``sacctmgr`` outputs recorded from the local cluster
(tests/fixtures/slurm/sacctmgr_*.txt, ``record.sh sacctmgr``): accounts team-test (sw-alice,
sw-bob) and team-old (sw-carol, prof; GrpTRESMins on two TRES), the site's physics account
with a sub-account and a per-partition association of prof, the cluster's own slipway-test
account (every sw-* user, their default), QOS normal, emergency, slipway-old and site-qos.
``*_after`` is the same cluster after ``sync(desired())`` ran against it, and
``sacctmgr_sync_applied.txt`` the changes that sync made. Inputs real output cannot show are
built from these by hand and say so.
"""
from pathlib import Path

import pytest

from slurm_bridge.errors import InvalidRequest, SlurmRejected
from slurm_bridge.runner import FakeRunner, result
from slurm_bridge.cli import CliBackend
from slurm_bridge.sync import (ASSOC_FORMAT, QOS_FORMAT, USER_FORMAT, AccountSpec, Change,
                               CurrentAccount, CurrentAssoc, CurrentState, DesiredState, Limits, QosSpec, UserSpec, apply,
                               parse_current, plan, read_current, sync)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def recorded_stdout(name: str):
    """A recorded stdout fixture (its last line is ``rc=N``) as a CommandResult."""
    body, _, rc = fixture(name).rpartition("rc=")
    return result(body, "", rc=int(rc))


def recorded_stderr(name: str):
    body, _, rc = fixture(name).rpartition("rc=")
    return result("", body, rc=int(rc))


# `sacctmgr --parsable2 --noheader show assoc where cluster=slipway <ASSOC_FORMAT>` and so on
ASSOC = fixture("sacctmgr_assoc.txt")
USERS = fixture("sacctmgr_user.txt")
QOS = fixture("sacctmgr_qos.txt")
AFTER = (fixture("sacctmgr_assoc_after.txt"), fixture("sacctmgr_user_after.txt"),
         fixture("sacctmgr_qos_after.txt"))
APPLIED = fixture("sacctmgr_sync_applied.txt").splitlines()

EMERGENCY = QosSpec("emergency", priority=1000, preempt=("normal",), preempt_mode="requeue")
NORMAL = QosSpec("normal")


def current():
    return parse_current(ASSOC, USERS, QOS)


def summaries(changes):
    return [c.summary for c in changes]


def test_parse_current_of_recorded_output():
    cur = current()
    assert set(cur.accounts) == {"root", "physics", "physics-hep", "slipway-test", "team-old", "team-test"}
    assert cur.accounts["team-test"] == CurrentAccount("team-test", "root", "100", ())
    assert cur.accounts["team-old"].grp_tres_mins == (("billing", 100), ("gres/gpu:a4000", 50))
    assert cur.accounts["physics-hep"].parent == "physics"
    assert cur.assocs[("sw-alice", "team-test")] == CurrentAssoc("sw-alice", "team-test",
                                                                ("emergency", "normal"), "normal")
    # prof's per-partition association in physics is not Slipway's: only the plain one is read
    assert cur.assocs[("prof", "physics")] == CurrentAssoc("prof", "physics", ("normal",), "normal")
    assert sorted(a for u, a in cur.assocs if u == "prof") == ["physics", "team-old"]
    assert cur.assocs[("root", "root")].qos == ("normal",)
    assert cur.default_accounts == {"prof": "physics", "root": "root", "sw-alice": "slipway-test",
                                    "sw-bob": "slipway-test", "sw-carol": "team-old"}
    assert cur.qos == {"normal": NORMAL, "emergency": EMERGENCY,
                       "slipway-old": QosSpec("slipway-old", 5),
                       "site-qos": QosSpec("site-qos", 1, ("normal", "slipway-old"), "cancel")}


def test_parse_skips_per_partition_rows_wherever_they_come():
    # hand-made: the recorded partition row comes before the plain one; put it after as well
    partition_row = "physics|prof|gpu||1||emergency|\n"
    cur = parse_current(ASSOC + partition_row, USERS, QOS)
    assert cur.assocs[("prof", "physics")].qos == ("normal",)


def test_read_current_runs_the_recorded_commands():
    runner = FakeRunner({("sacctmgr", "--parsable2", "--noheader", "show", "assoc"): result(ASSOC),
                         ("sacctmgr", "--parsable2", "--noheader", "show", "user"): result(USERS),
                         ("sacctmgr", "--parsable2", "--noheader", "show", "qos"): result(QOS)})
    cur = read_current(CliBackend(runner, env={}, as_root=False), cluster="slipway")
    assert [c["argv"] for c in runner.calls] == [
        ("sacctmgr", "--parsable2", "--noheader", "show", "assoc", "where", "cluster=slipway", ASSOC_FORMAT),
        ("sacctmgr", "--parsable2", "--noheader", "show", "user", USER_FORMAT),
        ("sacctmgr", "--parsable2", "--noheader", "show", "qos", QOS_FORMAT),
    ]
    assert cur == current()
    # record.sh runs these same formats
    script = fixture("record.sh")
    for fmt in (ASSOC_FORMAT, USER_FORMAT, QOS_FORMAT):
        assert fmt in script


def desired(**kw):
    # record.sh applies this same desired state to the live cluster (sacctmgr_*_after.txt)
    base = dict(
        accounts=(AccountSpec("team-test", fairshare=100),),
        users=(UserSpec("sw-alice", "team-test", {"team-test": ("normal", "emergency")}),
               UserSpec("sw-bob", "team-test", {"team-test": ("normal", "emergency")})),
        qos=(NORMAL, EMERGENCY),
        account_prefix="team-",
    )
    base.update(kw)
    return DesiredState(**base)


def test_converged_state_plans_nothing_but_removals_of_unwanted_managed_things():
    changes = plan(desired(), current())
    # team-old is managed by prefix and not desired: its associations go, then the account.
    # prof keeps his site physics association; carol keeps slipway-test, which becomes her
    # default before her default account's association is deleted.
    assert summaries(changes) == [
        "remove prof from team-old",
        "set default account of sw-carol to slipway-test",
        "remove sw-carol from team-old",
        "remove account team-old",
    ]
    # exactly what sync ran against the live cluster when the fixtures were recorded
    assert [" ".join(c.args) for c in changes] == APPLIED


def test_removing_a_user_with_only_managed_associations_removes_the_user():
    d = desired(users=(desired().users[0],))            # sw-bob leaves team-test
    assert "remove sw-bob from team-test" in summaries(plan(d, current()))   # keeps slipway-test
    d = desired(managed_accounts={"physics"})         # prof: physics and team-old, both managed
    changes = plan(d, current())
    assert "remove user prof" in summaries(changes)
    assert ("delete", "user", "where", "name=prof") in [c.args for c in changes]


def test_never_touches_unmanaged_accounts_or_root():
    changes = plan(desired(account_prefix=None), current())
    assert changes == []
    for c in plan(desired(), current()):
        assert "physics" not in " ".join(c.args) and "name=root" not in c.args
        assert not {"name=slipway-test", "account=slipway-test"} & set(c.args)


def test_add_user_and_account():
    d = desired(accounts=(AccountSpec("team-test", fairshare=100),
                          AccountSpec("team-nlp", fairshare=10, grp_tres_mins={"billing": 6000}),
                          AccountSpec("team-old", fairshare=5, grp_tres_mins={"billing": 100})),
                users=desired().users + (
                    UserSpec("sw-carol", "team-nlp", {"team-nlp": ("normal",), "team-old": ("normal",)}),
                    UserSpec("dave", "team-nlp", {"team-nlp": ("normal", "emergency")})),
                managed_accounts={"physics"}, account_prefix=None)
    changes = plan(d, current())
    assert summaries(changes) == [
        "add account team-nlp (fairshare 10)",
        "update account team-old (fairshare 5, GrpTRESMins billing=100)",   # gres/gpu:a4000 cleared
        "add user sw-carol to team-nlp (normal)",
        "set default account of sw-carol to team-nlp",
        "add user dave to team-nlp (normal, emergency)",
        "remove user prof",          # every association of prof is managed here
        # physics stays: deleting it would delete the site's sub-account physics-hep too
    ]
    assert changes[0].args == ("add", "account", "team-nlp", "Parent=root", "Fairshare=10",
                               "Description=slipway", "Organization=slipway", "GrpTRESMins=billing=6000")
    assert changes[1].args[-2:] == ("Fairshare=5", "GrpTRESMins=billing=100,gres/gpu:a4000=-1")
    # an existing user gets no DefaultAccount= on add (it is set separately); a new one does
    assert not any(a.startswith("DefaultAccount") for a in changes[2].args)
    assert changes[4].args == ("add", "user", "dave", "Account=team-nlp", "QOS=emergency,normal",
                               "DefaultQOS=normal", "DefaultAccount=team-nlp")


def test_modify_qos_of_association_and_account_limits():
    d = desired(accounts=(AccountSpec("team-test", fairshare=50, grp_tres_mins={"billing": 10}),
                          AccountSpec("team-old", fairshare=5)),
                users=(UserSpec("sw-alice", "team-test", {"team-test": ("normal",)}),
                       UserSpec("sw-bob", "team-test", {"team-test": ("normal", "emergency")}),
                       UserSpec("sw-carol", "team-old", {"team-old": ("normal",)})),
                account_prefix=None)
    changes = plan(d, current())
    by = {c.summary: c.args for c in changes}
    assert by["update account team-test (fairshare 50, GrpTRESMins billing=10)"][-2:] == (
        "Fairshare=50", "GrpTRESMins=billing=10")
    # both recorded limits of team-old are cleared
    assert by["update account team-old (fairshare 5, GrpTRESMins none)"][-1] == (
        "GrpTRESMins=billing=-1,gres/gpu:a4000=-1")
    assert by["set QOS of sw-alice in team-test to normal"] == (
        "modify", "user", "where", "name=sw-alice", "account=team-test", "set", "QOS=normal",
        "DefaultQOS=normal")
    # team-old is listed: prof's membership there goes, his physics one stays
    assert "remove prof from team-old" in by
    assert not any("physics" in " ".join(a) for a in by.values())


def test_qos_definitions_added_updated_and_only_prefixed_removed():
    cur = current()     # recorded: slipway-old and site-qos exist besides normal and emergency
    d = desired(qos=(NORMAL, QosSpec("emergency", 2000, ("normal",), "requeue"),
                     QosSpec("slipway-new", 10)), qos_prefix="slipway-", account_prefix=None)
    assert summaries(plan(d, cur)) == ["update QOS emergency", "add QOS slipway-new",
                                       "remove QOS slipway-old"]
    assert plan(d, cur)[0].args[-3:] == ("Priority=2000", "Preempt=normal", "PreemptMode=requeue")


# --------------------------------------------------------------- sacctmgr, as a model
def _settings(args):
    return dict(a.split("=", 1) for a in args if "=" in a)


def _where_set(args):
    i = args.index("set") if "set" in args else len(args)
    return _settings(args[args.index("where") + 1:i]), _settings(args[i + 1:])


def _tres(text, have=()):
    out = dict(have)
    for k, v in (item.split("=") for item in text.split(",") if item):
        if v == "-1":
            out.pop(k, None)
        else:
            out[k] = int(v)
    return tuple(sorted(out.items()))


def _limits(s, have=Limits()):
    """GrpTRES / GrpJobs settings applied to ``have`` (-1 clears), as sacctmgr does."""
    tres = dict(_tres(s["GrpTRES"], have.grp_tres.items())) if "GrpTRES" in s else dict(have.grp_tres)
    jobs = have.grp_jobs
    if "GrpJobs" in s:
        jobs = None if s["GrpJobs"] == "-1" else int(s["GrpJobs"])
    return Limits(tres, jobs)


def apply_to_model(state: CurrentState, changes) -> CurrentState:
    """What ``sacctmgr -i ARGS`` does to the state, as measured on the local cluster (22.05):
    the first add of a user sets its default account; deleting the default account's
    association while others remain leaves the default empty (sacctmgr_delete_default_assoc.txt);
    deleting a user's last association deletes the user; deleting an account deletes its
    sub-accounts. A change Slurm would refuse (unknown account, missing association, an
    account still holding users) fails the test."""
    accounts, assocs = dict(state.accounts), dict(state.assocs)
    defaults, qos = dict(state.default_accounts), dict(state.qos)
    for c in changes:
        verb, kind, *rest = c.args
        if kind == "qos":
            if verb == "add":
                s, name = _settings(rest[1:]), rest[0]
                assert name not in qos, c
            elif verb == "modify":
                w, s = _where_set(c.args)
                name = w["name"]
                assert name in qos, c
            else:
                del qos[_where_set(c.args)[0]["name"]]
                continue
            old = qos.get(name, QosSpec(name))
            qos[name] = QosSpec(name, int(s.get("Priority", old.priority)),
                                tuple(p for p in s.get("Preempt", ",".join(old.preempt)).split(",") if p),
                                s.get("PreemptMode", old.preempt_mode))
        elif kind == "account":
            if verb == "add":
                s = _settings(rest[1:])
                assert rest[0] not in accounts and s["Parent"] in accounts, c
                accounts[rest[0]] = CurrentAccount(rest[0], s["Parent"], s["Fairshare"],
                                                   _tres(s.get("GrpTRESMins", "")), _limits(s))
            elif verb == "modify":
                w, s = _where_set(c.args)
                a = accounts[w["name"]]
                accounts[a.name] = CurrentAccount(a.name, s.get("Parent", a.parent),
                                                  s.get("Fairshare", a.fairshare),
                                                  _tres(s.get("GrpTRESMins", ""), a.grp_tres_mins),
                                                  _limits(s, a.limits))
            else:
                gone = {_where_set(c.args)[0]["name"]}
                while True:
                    more = {a.name for a in accounts.values() if a.parent in gone} - gone
                    if not more:
                        break
                    gone |= more
                assert not any(a in gone for _, a in assocs), f"{c}: users still in it"
                for a in gone:
                    del accounts[a]
        elif kind == "user":
            if verb == "add":
                s = _settings(rest[1:])
                user, acct = rest[0], s["Account"]
                assert acct in accounts and (user, acct) not in assocs, c
                assocs[(user, acct)] = CurrentAssoc(user, acct, tuple(sorted(s["QOS"].split(","))),
                                                    s["DefaultQOS"], _limits(s))
                defaults.setdefault(user, s.get("DefaultAccount", acct))
            elif verb == "modify":
                w, s = _where_set(c.args)
                user = w["name"]
                if "account" in w:
                    a = assocs[(user, w["account"])]
                    qos_list = tuple(sorted(s["QOS"].split(","))) if "QOS" in s else a.qos
                    assocs[a.user, a.account] = CurrentAssoc(
                        a.user, a.account, qos_list, s.get("DefaultQOS", a.default_qos),
                        _limits(s, a.limits))
                else:
                    assert (user, s["DefaultAccount"]) in assocs, f"{c}: no such association"
                    defaults[user] = s["DefaultAccount"]
            else:
                w = _where_set(c.args)[0]
                user = w["name"]
                mine = [k for k in assocs if k[0] == user and w.get("account", k[1]) == k[1]]
                assert mine, f"{c}: nothing to delete"
                for k in mine:
                    del assocs[k]
                if not any(u == user for u, _ in assocs):
                    defaults.pop(user, None)
                elif defaults.get(user) == w.get("account"):
                    defaults[user] = ""
        else:
            raise AssertionError(f"the model does not know {c.args}")
    return CurrentState(accounts, assocs, defaults, qos)


def test_model_applies_the_plan_as_the_live_cluster_did():
    # sync(desired()) ran on the recorded cluster; the model's result equals what it read after
    changes = plan(desired(), current())
    after = parse_current(*AFTER)
    assert apply_to_model(current(), changes) == after
    assert plan(desired(), after) == []


def test_model_deletes_the_default_accounts_association_as_recorded():
    # recorded: with another association left, the default is left empty (not refused)
    text = fixture("sacctmgr_delete_default_assoc.txt")
    assert "rc=0" in text and text.strip().endswith("sw-carol|")
    cur = apply_to_model(current(), [Change(("delete", "user", "where", "name=sw-carol",
                                             "account=team-old"), "")])
    assert cur.default_accounts["sw-carol"] == ""


@pytest.mark.parametrize("make_desired", [
    desired,
    lambda: desired(users=(desired().users[0],), managed_accounts={"physics"}),
    lambda: desired(accounts=(AccountSpec("team-test", fairshare=100),
                              AccountSpec("team-nlp", fairshare=10, grp_tres_mins={"billing": 6000}),
                              AccountSpec("team-old", fairshare=5, grp_tres_mins={"billing": 100})),
                    users=desired().users + (
                        UserSpec("sw-carol", "team-nlp", {"team-nlp": ("normal",), "team-old": ("normal",)}),
                        UserSpec("dave", "team-nlp", {"team-nlp": ("normal", "emergency")})),
                    managed_accounts={"physics"}, account_prefix=None),
    lambda: desired(accounts=(AccountSpec("team-test", fairshare=50, grp_tres_mins={"billing": 10}),
                              AccountSpec("team-old", fairshare=5)),
                    users=(UserSpec("sw-alice", "team-test", {"team-test": ("normal",)}),
                           UserSpec("sw-carol", "team-old", {"team-old": ("normal",)}),
                           UserSpec("prof", "team-test", {"team-test": ("normal",)})),
                    qos=(NORMAL, QosSpec("emergency", 2000, ("normal",), "requeue"),
                         QosSpec("slipway-new", 10)), qos_prefix="slipway-"),
    lambda: desired(accounts=(), users=()),   # every team gone
], ids=["recorded", "leave-and-site-account", "add", "modify", "all-gone"])
def test_idempotent_after_applying_plan_to_model(make_desired):
    d = make_desired()
    changes = plan(d, current())
    assert changes, "each case has something to change"
    converged = apply_to_model(current(), changes)
    assert plan(d, converged) == []
    # ... and the model holds what was asked, and no managed association beyond it
    for u in d.users:
        assert converged.default_accounts[u.name]
        for acct, qs in u.accounts:
            assert converged.assocs[(u.name, acct)].qos == tuple(sorted(qs))
    for a in d.accounts:
        assert converged.accounts[a.name].fairshare == str(a.fairshare)
    wanted = {(u.name, acct) for u in d.users for acct, _ in u.accounts}
    assert {k for k in converged.assocs if d.manages_account(k[1])} == wanted
    assert converged.assocs[("root", "root")] == current().assocs[("root", "root")]
    # a managed account nobody wants is gone, unless a sub-account that stays holds it
    unwanted = {a for a in converged.accounts if d.manages_account(a)} - {a.name for a in d.accounts}
    assert all(any(c.parent == a and c.name not in unwanted for c in converged.accounts.values())
               for a in unwanted)


@pytest.mark.parametrize("make", [
    lambda: AccountSpec("root"),
    lambda: AccountSpec("Team X"),
    lambda: AccountSpec("t", fairshare=0),
    lambda: AccountSpec("t", grp_tres_mins={"billing": -5}),
    lambda: UserSpec("root", "a", {"a": ("normal",)}),
    lambda: UserSpec("u", "b", {"a": ("normal",)}),
    lambda: UserSpec("u", "a", {"a": ()}),
    lambda: UserSpec("u;x", "a", {"a": ("normal",)}),
    lambda: QosSpec("q", preempt_mode="explode"),
    lambda: DesiredState(users=(UserSpec("u", "other", {"other": ("normal",)}),)),
])
def test_bad_specs_refused(make):
    with pytest.raises(InvalidRequest):
        make()


def test_sync_reads_plans_and_applies_with_sacctmgr_i():
    runner = FakeRunner({
        ("sacctmgr", "--parsable2", "--noheader", "show", "assoc"): result(ASSOC),
        ("sacctmgr", "--parsable2", "--noheader", "show", "user"): result(USERS),
        ("sacctmgr", "--parsable2", "--noheader", "show", "qos"): result(QOS),
        ("sacctmgr", "-i"): result(" Deleting user associations...\n"),
    })
    backend = CliBackend(runner, env={"SLURM_CONF": "/x"}, as_root=False)
    done = sync(backend, desired(), cluster="slipway")
    applied = [c["argv"] for c in runner.calls if c["argv"][1] == "-i"]
    assert applied == [("sacctmgr", "-i", *c.args) for c in done]
    assert [" ".join(c.args) for c in done] == APPLIED


def test_apply_stops_with_slurms_text():
    runner = FakeRunner({"sacctmgr": recorded_stderr("stderr_sacctmgr_bad.txt")})
    backend = CliBackend(runner, env={}, as_root=False)
    with pytest.raises(SlurmRejected, match="doesn't exist"):
        apply(backend, plan(desired(), current()))
    assert len(runner.calls) == 1


@pytest.mark.parametrize("name", ["stdout_sacctmgr_nothing_added.txt",
                                  "stdout_sacctmgr_nothing_modified.txt",
                                  "stdout_sacctmgr_nothing_deleted.txt"])
def test_nothing_to_do_is_not_an_error(name):
    answer = recorded_stdout(name)
    assert answer.rc == 1
    runner = FakeRunner({"sacctmgr": answer})
    backend = CliBackend(runner, env={}, as_root=False)
    assert len(apply(backend, plan(desired(), current()))) == 4


def test_read_current_scopes_to_cluster():
    runner = FakeRunner({"sacctmgr": result("")})
    read_current(CliBackend(runner, env={}, as_root=False), cluster="slipway")
    assert "cluster=slipway" in runner.calls[0]["argv"]
    assert isinstance(read_current(CliBackend(runner, env={}, as_root=False)), CurrentState)


def test_removing_the_default_accounts_association_moves_the_default_first():
    # recorded (sacctmgr_delete_default_assoc.txt): deleting the association of a user's
    # default account leaves DefaultAccount empty. Recorded: carol's default is team-old.
    assert summaries(plan(desired(), current()))[1:3] == [
        "set default account of sw-carol to slipway-test", "remove sw-carol from team-old"]
    # hand-made from the recording: prof's default is team-old, his other account physics
    cur = parse_current(ASSOC, USERS.replace("prof|physics", "prof|team-old"), QOS)
    changes = plan(desired(), cur)
    assert summaries(changes)[:2] == ["set default account of prof to physics",
                                      "remove prof from team-old"]
    assert changes[0].args == ("modify", "user", "where", "name=prof", "set",
                               "DefaultAccount=physics")


def test_an_empty_default_account_is_set():
    # as Slurm leaves it after deleting the default's association (recorded: "sw-carol|")
    cur = parse_current(ASSOC, USERS.replace("sw-carol|team-old", "sw-carol|"), QOS)
    assert cur.default_accounts["sw-carol"] == ""
    d = desired(users=desired().users + (UserSpec("sw-carol", "team-test", {"team-test": ("normal",)}),))
    changes = plan(d, cur)
    assert "set default account of sw-carol to team-test" in summaries(changes)
    assert not any(a.startswith("DefaultAccount") for c in changes if c.args[0] == "add" for a in c.args)


def test_a_valid_default_account_set_by_someone_else_is_left_alone():
    # prof's default is the site's physics account: adding him to a Slipway team keeps it
    d = desired(accounts=(AccountSpec("team-test", fairshare=100),),
                users=(UserSpec("prof", "team-test", {"team-test": ("normal",)}),))
    assert not any("default account of prof" in s for s in summaries(plan(d, current())))
    # ... but a default that is this Slipway's own (team-old, being left) is moved
    d = desired(users=(UserSpec("sw-carol", "team-test", {"team-test": ("normal",)}),))
    assert "set default account of sw-carol to team-test" in summaries(plan(d, current()))
    # ... and so is one pointing at an account the user has no association with any more
    # (hand-made from the recording)
    gone = parse_current(ASSOC, USERS.replace("prof|physics", "prof|deleted-elsewhere"), QOS)
    d = desired(users=(UserSpec("prof", "team-test", {"team-test": ("normal",)}),))
    assert "set default account of prof to team-test" in summaries(plan(d, gone))


def test_another_prefix_is_not_ours_to_remove():
    d = desired(account_prefix="lab-")  # team-* belong to another Slipway now
    assert not any("team-old" in s for s in summaries(plan(d, current())))
    assert plan(d, current()) == []


def test_an_account_with_a_sub_account_that_stays_is_not_deleted():
    # recorded: the site's physics has the sub-account physics-hep (Slurm deletes sub-accounts
    # with their parent, measured): managing physics removes prof from it, but not the account
    changes = plan(desired(managed_accounts={"physics"}), current())
    assert "remove account physics" not in summaries(changes)
    assert "remove user prof" in summaries(changes)
    # both managed: both go
    changes = plan(desired(managed_accounts={"physics", "physics-hep"}), current())
    assert {"remove account physics", "remove account physics-hep"} <= set(summaries(changes))
