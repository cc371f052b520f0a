"""The sacctmgr convergence plan is pure: given desired and current state, which changes."""
import pytest

from slurm_bridge.errors import InvalidRequest, SlurmRejected
from slurm_bridge.runner import FakeRunner, result
from slurm_bridge.cli import CliBackend
from slurm_bridge.sync import (AccountSpec, CurrentState, DesiredState, QosSpec, UserSpec,
                               apply, parse_current, plan, read_current, sync)

# Shaped like `sacctmgr -P -n show assoc format=Account,User,Partition,ParentName,Share,GrpTRESMins,QOS,DefaultQOS`
ASSOC = """root|||||||
root|root||||1||normal|
team-test|||root|100||normal|
team-test|sw-alice|||1||emergency,normal|normal
team-test|sw-bob|||1||emergency,normal|normal
team-old|||root|5|billing=100||
team-old|sw-carol|||1||normal|normal
physics|||root|1||normal|
physics|prof|||1||normal|normal
team-old|prof|||1||normal|normal
"""
USERS = "root|root\nsw-alice|team-test\nsw-bob|team-test\nsw-carol|team-old\nprof|physics\n"
QOS = "normal|0||cluster\nemergency|1000|normal|requeue\n"

EMERGENCY = QosSpec("emergency", priority=1000, preempt=("normal",), preempt_mode="requeue")
NORMAL = QosSpec("normal")


def current():
    return parse_current(ASSOC, USERS, QOS)


def summaries(changes):
    return [c.summary for c in changes]


def test_parse_current():
    cur = current()
    assert cur.accounts["team-test"].fairshare == "100"
    assert cur.accounts["team-old"].grp_tres_mins == (("billing", 100),)
    assert cur.assocs[("sw-alice", "team-test")].qos == ("emergency", "normal")
    assert cur.default_accounts["sw-carol"] == "team-old"
    assert cur.qos["emergency"] == EMERGENCY
    assert ("root", "root") not in cur.assocs or cur.assocs[("root", "root")].account == "root"


def desired(**kw):
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
    # team-old is managed by prefix and not desired: carol goes, the account goes;
    # prof keeps his unmanaged physics association, so only his team-old membership goes.
    assert summaries(changes) == [
        "remove prof from team-old",
        "remove user sw-carol",
        "remove account team-old",
    ]
    assert changes[1].args == ("delete", "user", "where", "name=sw-carol")


def test_never_touches_unmanaged_accounts_or_root():
    changes = plan(desired(account_prefix=None), current())
    assert changes == []
    for c in plan(desired(), current()):
        assert "physics" not in " ".join(c.args) and "name=root" not in c.args


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
        "add user sw-carol to team-nlp (normal)",
        "set default account of sw-carol to team-nlp",
        "add user dave to team-nlp (normal, emergency)",
        "remove user prof",          # every association of prof is managed here
        "remove account physics",
    ]
    assert changes[0].args == ("add", "account", "team-nlp", "Parent=root", "Fairshare=10",
                               "Description=slipway", "Organization=slipway", "GrpTRESMins=billing=6000")
    # an existing user gets no DefaultAccount= on add (it is set separately); a new one does
    assert not any(a.startswith("DefaultAccount") for a in changes[1].args)
    assert changes[3].args == ("add", "user", "dave", "Account=team-nlp", "QOS=emergency,normal",
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
    assert by["update account team-old (fairshare 5, GrpTRESMins none)"][-1] == "GrpTRESMins=billing=-1"
    assert by["set QOS of sw-alice in team-test to normal"] == (
        "modify", "user", "where", "name=sw-alice", "account=team-test", "set", "QOS=normal",
        "DefaultQOS=normal")
    # team-old is listed: prof's membership there goes, his physics one stays
    assert "remove prof from team-old" in by


def test_qos_definitions_added_updated_and_only_prefixed_removed():
    cur = parse_current(ASSOC, USERS, QOS + "slipway-old|5||cluster\nsite-qos|1||cluster\n")
    d = desired(qos=(NORMAL, QosSpec("emergency", 2000, ("normal",), "requeue"),
                     QosSpec("slipway-new", 10)), qos_prefix="slipway-", account_prefix=None)
    assert summaries(plan(d, cur)) == ["update QOS emergency", "add QOS slipway-new",
                                       "remove QOS slipway-old"]
    assert plan(d, cur)[0].args[-3:] == ("Priority=2000", "Preempt=normal", "PreemptMode=requeue")


def test_idempotent_after_applying_plan_to_model():
    # current state that already equals the desired one plans nothing
    cur = parse_current(
        "team-test|||root|100||normal|\nteam-test|sw-alice|||1||emergency,normal|normal\n",
        "sw-alice|team-test\n", QOS)
    d = desired(users=(UserSpec("sw-alice", "team-test", {"team-test": ("normal", "emergency")}),))
    assert plan(d, cur) == []


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
        ("sacctmgr", "-i"): result(" Deleting users...\n"),
    })
    backend = CliBackend(runner, env={"SLURM_CONF": "/x"}, as_root=False)
    done = sync(backend, desired())
    applied = [c["argv"] for c in runner.calls if c["argv"][1] == "-i"]
    assert applied == [("sacctmgr", "-i", *c.args) for c in done]
    assert len(done) == 3


def test_apply_stops_with_slurms_text():
    runner = FakeRunner({"sacctmgr": result(
        "", " Unknown option: x\n sacctmgr: error: There was a problem with your request\n", rc=1)})
    backend = CliBackend(runner, env={}, as_root=False)
    with pytest.raises(SlurmRejected, match="There was a problem"):
        apply(backend, plan(desired(), current()))
    assert len(runner.calls) == 1


def test_nothing_modified_is_not_an_error():
    runner = FakeRunner({"sacctmgr": result(" Nothing modified\n", "", rc=1)})
    backend = CliBackend(runner, env={}, as_root=False)
    assert len(apply(backend, plan(desired(), current()))) == 3


def test_read_current_scopes_to_cluster():
    runner = FakeRunner({"sacctmgr": result("")})
    read_current(CliBackend(runner, env={}, as_root=False), cluster="slipway")
    assert "cluster=slipway" in runner.calls[0]["argv"]
    assert isinstance(read_current(CliBackend(runner, env={}, as_root=False)), CurrentState)


def test_removing_the_default_accounts_association_moves_the_default_first():
    # measured: deleting the association of a user's default account leaves DefaultAccount empty
    cur = parse_current(ASSOC, USERS.replace("prof|physics", "prof|team-old"), QOS)
    changes = plan(desired(), cur)
    assert summaries(changes)[:2] == ["set default account of prof to physics",
                                      "remove prof from team-old"]
    assert changes[0].args == ("modify", "user", "where", "name=prof", "set",
                               "DefaultAccount=physics")


def test_a_valid_default_account_set_by_someone_else_is_left_alone():
    # prof's default is the site's physics account: adding him to a Slipway team keeps it
    d = desired(accounts=(AccountSpec("team-test", fairshare=100),),
                users=(UserSpec("prof", "team-test", {"team-test": ("normal",)}),))
    assert not any("default account of prof" in s for s in summaries(plan(d, current())))
    # ... but a default that is this Slipway's own (team-old, being left) is moved
    d = desired(users=(UserSpec("sw-carol", "team-test", {"team-test": ("normal",)}),))
    assert "set default account of sw-carol to team-test" in summaries(plan(d, current()))
    # ... and so is one pointing at an account the user has no association with any more
    gone = parse_current(ASSOC, USERS.replace("prof|physics", "prof|deleted-elsewhere"), QOS)
    d = desired(users=(UserSpec("prof", "team-test", {"team-test": ("normal",)}),))
    assert "set default account of prof to team-test" in summaries(plan(d, gone))


def test_another_prefix_is_not_ours_to_remove():
    d = desired(account_prefix="lab-")  # team-* belong to another Slipway now
    assert not any("team-old" in s for s in summaries(plan(d, current())))
