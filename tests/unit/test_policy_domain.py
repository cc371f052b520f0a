"""The policy domain without servers: compute types, over-request adjustment by node limits and
quotas, strict, the emergency right (grants, expiry), the account sync's QOS lists and limits
from the policy (both ways), the budget mirror, worded pending reasons, turn-taking, the
preemption note, the administrators' queue actions (docs/POLICY.md)."""
from __future__ import annotations


import pytest
from sqlalchemy import select

from portal.db import Job, Membership, PolicyEvent, Team, User
from portal.jobs import push, states
from portal.jobs.reconciler import Reconciler
from portal.policy import compute, grants, preemption, queue_admin, quotas, shares
from portal.teams.access import Actor, Forbidden, NotFound, OpError
from portal.teams.slurm_accounts import desired_state, sync_accounts
from slurm_bridge.records import QueueRecord
from tests.support.fakes import FakeBackend, commit_to_bare, hook_payload, make_services, seed

Z = "0" * 40
ADMIN = Actor(0, "root-op", is_cluster_admin=True)


@pytest.fixture
def env(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = seed(svc)
    with svc.db.transaction() as s:   # bob: a second member of nlp
        bob = User(name="bob", unix_user="sw-bob", created_at=svc.now())
        s.add(bob)
        s.flush()
        s.add(Membership(user_id=bob.id, team_id=ids["team_id"], role="user", created_at=svc.now()))
        ids["bob"] = bob.id
    yield svc, backend, ids, tmp_path
    svc.db.dispose()


def _push(svc, tmp_path, options, branch="b1", user="alice"):
    sha = commit_to_bare(svc.config.repos_root / "nlp" / "proj.git", tmp_path / f"w-{branch}",
                         {"slipway-entrypoint.sh": "echo hi\n"}, branch=branch)
    return push.handle_pre_receive(svc, hook_payload(
        "pre-receive", "nlp/proj", user, [(f"refs/heads/{branch}", Z, sha)], options))


def _jobs(svc):
    with svc.db.session() as s:
        return list(s.scalars(select(Job).order_by(Job.id)))


def _events(svc):
    with svc.db.session() as s:
        return [(e.action, e.subject, e.detail) for e in s.scalars(select(PolicyEvent).order_by(PolicyEvent.id))]


# ------------------------------------------------------------------------ compute types
def test_compute_type_shapes_the_job_and_explicit_options_win(env):
    svc, backend, ids, tmp = env
    compute.define(svc, ADMIN, "a4000x2", gpus="a4000:2", cpus=8, mem="32G", partition="train")
    r = _push(svc, tmp, ["compute=a4000x2"])
    assert r.ok, r.messages
    [job] = _jobs(svc)
    assert (job.compute_type, job.gpu_type, job.gpu_count, job.cpus, job.mem_mb, job.partition) == \
        ("a4000x2", "a4000", 2, 8, 32768, "train")
    r = _push(svc, tmp, ["compute=a4000x2", "gpus=a4000:1", "mem=8G"], branch="b2")
    assert r.ok, r.messages
    job = _jobs(svc)[-1]
    assert (job.gpu_count, job.cpus, job.mem_mb) == (1, 8, 8192)
    assert ("compute-type", "a4000x2", "defined: a4000:2, 8 cores, mem 32768, partition train, $1.00/h") \
        in _events(svc)


def test_cpu_only_compute_type_is_cores_and_priced_per_core(env):
    svc, *_ = env
    out = compute.define(svc, ADMIN, "cpu8", gpus="none", cpus=8, mem="16G")
    assert (out["gpus"], out["cpus"], out["hourly_rate"], out["billed_per"]) == ("none", 8, "0.16", "core-hour")


@pytest.mark.parametrize("kw,needle", [
    (dict(name="Bad Name", gpus="a4000:1"), "is not allowed"),
    (dict(name="x", gpus="h100:1"), "unknown GPU type 'h100'"),
    (dict(name="x", gpus="a4000:9"), "nodes have at most 4 a4000"),
    (dict(name="x", gpus="a4000:1", cpus=0), "cpus must be between 1 and 16"),
    (dict(name="x", gpus="a4000:1", mem="1PB"), "cannot read memory"),
    (dict(name="x", gpus="a4000:1", partition="no way"), "not a valid Slurm partition name"),
])
def test_bad_compute_types_are_refused_and_nothing_is_saved(env, kw, needle):
    svc, *_ = env
    name = kw.pop("name")
    with pytest.raises(OpError, match=needle):
        compute.define(svc, ADMIN, name, **kw)
    assert compute.list_types(svc) == []


def test_only_cluster_admins_define_and_removing_clears_project_defaults(env):
    svc, backend, ids, tmp = env
    with pytest.raises(Forbidden):
        compute.define(svc, Actor(ids["user_id"], "alice"), "x", gpus="a4000:1")
    compute.define(svc, ADMIN, "small", gpus="a4000:1")
    with svc.db.transaction() as s:
        s.get(Team, ids["team_id"]).projects[0].compute_type = "small"
    assert compute.remove(svc, ADMIN, "small") == ["nlp/proj"]
    with pytest.raises(NotFound, match="unknown compute type 'small'"):
        compute.remove(svc, ADMIN, "small")


# --------------------------------------------------------------------- over-request, quotas
def test_over_request_is_adjusted_to_the_nodes_and_the_quota_and_both_are_recorded(env):
    svc, backend, ids, tmp = env
    r = _push(svc, tmp, ["gpus=a4000:8"])
    assert r.ok and r.messages == ["slipway: asked a4000 x8; nodes have at most 4 — running with 4"]
    assert (_jobs(svc)[0].gpu_count, _jobs(svc)[0].asked) == (4, "a4000 x8")

    quotas.set_quota(svc, ADMIN, team="nlp", resource="gpu:a4000", value=3)
    quotas.set_quota(svc, ADMIN, team="nlp", user="alice", resource="gpu:a4000", value=2)
    r = _push(svc, tmp, ["gpus=a4000:8"], branch="b2")
    assert r.messages == ["slipway: asked a4000 x8; nodes have at most 4 — running with 4",
                          "slipway: asked a4000 x4; your quota in team nlp is 2 a4000 GPUs — running with 2"]
    assert _jobs(svc)[-1].gpu_count == 2
    r = _push(svc, tmp, ["gpus=a4000:4", "strict=yes"], branch="b3")
    assert not r.ok and "your quota in team nlp is 2 a4000 GPUs (strict=yes: refused)" in r.messages[0]
    assert len(_jobs(svc)) == 2
    assert [e[0] for e in _events(svc)].count("adjusted") == 2


def test_a_zero_quota_refuses(env):
    svc, backend, ids, tmp = env
    quotas.set_quota(svc, ADMIN, team="nlp", resource="gpu:a4000", value=0)
    r = _push(svc, tmp, ["gpus=a4000:1"])
    assert not r.ok and "team nlp's quota is 0 a4000 GPUs: a job cannot ask for a4000 x1" in r.messages[0]
    assert _jobs(svc) == []


@pytest.mark.parametrize("resource,value,needle", [
    ("gpu:a4000", -1, "between 0 and"), ("gpu:a4000", 10**9, "between 0 and"),
    ("gpu:h100", 1, "unknown GPU type 'h100'"), ("disk", 1, "unknown quota 'disk'"),
    ("cpu", "lots", "whole number"),
])
def test_bad_quotas_are_refused(env, resource, value, needle):
    svc, *_ = env
    with pytest.raises(OpError, match=needle):
        quotas.set_quota(svc, ADMIN, team="nlp", resource=resource, value=value)
    assert quotas.quotas_of_team(svc, "nlp") == []


def test_team_admins_set_member_quotas_within_the_teams(env):
    svc, backend, ids, tmp = env
    owner = Actor(ids["user_id"], "alice")
    with pytest.raises(Forbidden):
        quotas.set_quota(svc, owner, team="nlp", resource="gpu:a4000", value=4)
    quotas.set_quota(svc, ADMIN, team="nlp", resource="gpu:a4000", value=4)
    with pytest.raises(OpError, match="cannot be higher"):
        quotas.set_quota(svc, owner, team="nlp", user="bob", resource="gpu:a4000", value=5)
    quotas.set_quota(svc, owner, team="nlp", user="bob", resource="gpu:a4000", value=1)
    assert [(q.user, q.value) for q in quotas.quotas_of_team(svc, "nlp")] == [(None, 4), ("bob", 1)]


def test_quotas_reach_slurm_as_association_limits_both_ways(env):
    svc, backend, ids, tmp = env
    quotas.set_quota(svc, ADMIN, team="nlp", resource="gpu:a4000", value=4)
    quotas.set_quota(svc, ADMIN, team="nlp", resource="jobs", value=3)
    quotas.set_quota(svc, ADMIN, team="nlp", user="bob", resource="cpu", value=8)
    sync_accounts(svc)
    cur = svc.accounts.current
    acct = cur.accounts["team-nlp"]
    assert dict(acct.limits.grp_tres) == {"gres/gpu:a4000": 4} and acct.limits.grp_jobs == 3
    assert dict(cur.assocs[("sw-bob", "team-nlp")].limits.grp_tres) == {"cpu": 8}
    quotas.set_quota(svc, ADMIN, team="nlp", resource="gpu:a4000", value=None)
    changes = sync_accounts(svc)
    assert any("team-nlp" in c for c in changes), changes
    assert dict(svc.accounts.current.accounts["team-nlp"].limits.grp_tres) == {}
    assert sync_accounts(svc) == [] or all("GrpTRESMins" in c for c in sync_accounts(svc))


# ---------------------------------------------------------------------------- emergency
def test_emergency_needs_the_right_and_the_right_reaches_the_qos_list(env):
    svc, backend, ids, tmp = env
    r = _push(svc, tmp, ["emergency=yes"])
    assert not r.ok and "needs the emergency right" in r.messages[0]
    g = grants.grant(svc, ADMIN, "alice", until="2099-01-31", note="deadline")
    assert g["until"].startswith("2099-02-01T00:00")           # through Jan 31, UTC
    r = _push(svc, tmp, ["emergency=yes"], branch="b2")
    assert r.ok, r.messages
    job = _jobs(svc)[-1]
    assert job.qos == "emergency"
    assert ("emergency-job", f"job {job.id}", "a4000 x1 in team nlp") in _events(svc)
    sync_accounts(svc)
    assocs = svc.accounts.current.assocs
    assert assocs[("sw-alice", "team-nlp")].qos == ("emergency", "normal")
    assert assocs[("sw-bob", "team-nlp")].qos == ("normal",)
    # the first submission of a queued emergency job carries the QOS and no nice
    from portal.jobs.submit import submit_job
    submit_job(svc, job.id)
    req = backend.submits[-1][1]
    assert req.qos == "emergency" and getattr(req, "nice", 0) == 0

    assert grants.revoke(svc, ADMIN, "alice") == 1
    sync_accounts(svc)
    assert svc.accounts.current.assocs[("sw-alice", "team-nlp")].qos == ("normal",)
    with pytest.raises(NotFound, match="holds no emergency right"):
        grants.revoke(svc, ADMIN, "alice")
    assert [e[0] for e in _events(svc) if e[0] in ("grant", "revoke")] == ["grant", "revoke"]


def test_team_grants_and_expiry(env):
    svc, backend, ids, tmp = env
    grants.grant(svc, ADMIN, "nlp", team=True, until="2030-01-01")
    with svc.db.session() as s:
        assert grants.holds_right(s, ids["bob"], ids["team_id"], svc.now())
    svc.clock.advance(days=365 * 10)
    with svc.db.session() as s:
        assert not grants.holds_right(s, ids["bob"], ids["team_id"], svc.now())
    assert grants.list_grants(svc, ADMIN) == []
    assert len(grants.list_grants(svc, ADMIN, everything=True)) == 1


@pytest.mark.parametrize("until,needle", [("2001-01-01", "in the past"), ("next week", "cannot read")])
def test_bad_grant_dates(env, until, needle):
    svc, *_ = env
    with pytest.raises(OpError, match=needle):
        grants.grant(svc, ADMIN, "alice", until=until)
    with pytest.raises(Forbidden):
        grants.grant(svc, Actor(1, "alice"), "alice")
    assert grants.list_grants(svc, ADMIN, everything=True) == []


# ----------------------------------------------------------------- budget mirror, shares
def test_the_balance_is_mirrored_into_grp_tres_mins(env):
    svc, backend, ids, tmp = env
    backend.usage = {"team-nlp": 500}
    d = desired_state(svc)
    [acct] = [a for a in d.accounts if a.name == "team-nlp"]
    # $25 at a4000 $0.50/h with weight 10: 30000; a6000 $1.00/h weight 20: 30000;
    # cores $0.02/h weight 1: 75000 -> the tightest, plus what is used
    assert dict(acct.grp_tres_mins) == {"billing": 500 + 30000}


def test_shares_are_set_and_sampled(env):
    svc, backend, ids, tmp = env
    with pytest.raises(OpError, match="between 1 and"):
        shares.set_shares(svc, ADMIN, "nlp", 0)
    assert shares.set_shares(svc, ADMIN, "nlp", 40) == 40
    sync_accounts(svc)
    assert svc.accounts.current.accounts["team-nlp"].fairshare == "40"
    from slurm_bridge.admin_records import ShareRecord
    backend.share_records = [ShareRecord("team-nlp", "", 40, 0.4, 1000, 0.25, None),
                             ShareRecord("team-nlp", "sw-alice", 1, 0.4, 1000, 0.25, 0.75)]
    assert shares.sample(svc, svc.now()) == 1
    info = shares.team_shares(svc, "nlp")
    assert (info["shares"], info["fairshare_factor"], info["usage_share"]) == (40, 0.75, 0.25)


# ---------------------------------------------------------------- reasons, turns, preemption
def _pending(backend, slurm_id, reason, priority=100, nice=0):
    backend.queue[slurm_id] = QueueRecord(
        job_id=slurm_id, state="PENDING", reason=reason, node="", start_time=None, submit_time=None,
        account="team-nlp", user="u", qos="normal", name="", comment="slipway",
        restart_count=0, gpus={}, priority=priority, nice=nice)


def test_a_job_over_its_quota_waits_with_the_reason_in_words(env):
    svc, backend, ids, tmp = env
    quotas.set_quota(svc, ADMIN, team="nlp", resource="gpu:a4000", value=1)
    for b in ("b1", "b2"):
        assert _push(svc, tmp, ["gpus=a4000:1"], branch=b).ok
    from portal.jobs.submit import submit_job
    j1, j2 = _jobs(svc)
    submit_job(svc, j1.id), submit_job(svc, j2.id)
    s1, s2 = [sid for sid, _ in backend.submits]
    backend.set_queue(s1, "RUNNING", start=svc.now(), account="team-nlp")
    _pending(backend, s2, "AssocGrpGRES", priority=4242)
    Reconciler(svc).tick()
    with svc.db.session() as s:
        j = s.get(Job, j2.id)
        assert j.reason == "waiting: team nlp uses 1 of its 1 a4000 GPUs"
        assert j.priority == 4242
        assert queue_admin.position(svc, j) == 1


def test_teams_take_turns_through_nice(env):
    svc, backend, ids, tmp = env
    seed(svc, team="cv", user="carol", project="p2")
    from portal.jobs.submit import submit_job
    # nlp queues 3, then cv queues 2: nlp's 2nd and 3rd get places 1 and 2, cv's too
    for i in range(3):
        assert _push(svc, tmp, ["gpus=a4000:1"], branch=f"n{i}").ok
    for job in _jobs(svc):
        submit_job(svc, job.id)
        _pending(backend, backend.submits[-1][0], "Priority")
        Reconciler(svc).tick()
    nlp_nices = [getattr(req, "nice", 0) for _, req in backend.submits]
    assert nlp_nices == [0, svc.config.turn_nice_step, 2 * svc.config.turn_nice_step]
    # the reconciler keeps the places right as jobs start: one call per changed place
    backend.nice_calls.clear()
    first = backend.submits[0][0]
    backend.set_queue(first, "RUNNING", start=svc.now(), account="team-nlp")
    for sid, req in backend.submits[1:]:
        _pending(backend, sid, "Priority", nice=getattr(req, "nice", 0))
    Reconciler(svc).tick()
    step = svc.config.turn_nice_step
    assert sorted(backend.nice_calls) == [((backend.submits[1][0],), 0),
                                          ((backend.submits[2][0],), step)]


def test_a_requeued_job_says_it_was_preempted_by_the_emergency_job(env):
    svc, backend, ids, tmp = env
    grants.grant(svc, ADMIN, "alice")
    assert _push(svc, tmp, ["gpus=a4000:1"], branch="victim").ok
    from portal.jobs.submit import submit_job
    victim = _jobs(svc)[0]
    submit_job(svc, victim.id)
    sid = backend.submits[-1][0]
    backend.set_queue(sid, "RUNNING", start=svc.now(), account="team-nlp")
    Reconciler(svc).tick()
    assert _push(svc, tmp, ["gpus=a4000:1", "emergency=yes"], branch="urgent").ok
    urgent = _jobs(svc)[-1]
    svc.clock.advance(seconds=30)
    backend.set_queue(sid, "PENDING", reason="BeginTime", restart_count=1, account="team-nlp")
    Reconciler(svc).tick()
    with svc.db.session() as s:
        v = s.get(Job, victim.id)
        assert v.state == states.PENDING and v.preempted_count == 1
        assert v.reason == (f"{preemption.PREEMPTED_NOTE} (job {urgent.id}), requeued: it resumes from its "
                            f"files (each attempt is billed on its own)"), v.reason
    Reconciler(svc).tick()                       # the note outlives the next tick
    with svc.db.session() as s:
        assert s.get(Job, victim.id).reason.startswith(preemption.PREEMPTED_NOTE)


# ------------------------------------------------------------------------ queue actions
def test_admin_queue_actions_go_to_slurm_and_are_recorded(env):
    svc, backend, ids, tmp = env
    assert _push(svc, tmp, ["gpus=a4000:1"]).ok
    from portal.jobs.submit import submit_job
    job = _jobs(svc)[0]
    submit_job(svc, job.id)
    sid = backend.submits[-1][0]
    _pending(backend, sid, "Priority", priority=10)
    Reconciler(svc).tick()
    assert "moved to the front" in queue_admin.top(svc, ADMIN, job.id)
    assert queue_admin.hold(svc, ADMIN, job.id).endswith("held")
    assert backend.holds == [sid] and backend.tops and backend.tops[0][0] == sid
    with pytest.raises(OpError, match="only a running job can be requeued"):
        queue_admin.requeue(svc, ADMIN, job.id)
    with pytest.raises(Forbidden):
        queue_admin.hold(svc, Actor(ids["user_id"], "alice"), job.id)
    with pytest.raises(OpError, match="say why"):
        queue_admin.node_update(svc, ADMIN, "a4k-1", "drain", "")
    assert "drained" in queue_admin.node_update(svc, ADMIN, "a4k-1", "drain", "fan broken")
    assert backend.node_updates == [("a4k-1", "drain", "fan broken")]
    rows = queue_admin.queue(svc, ADMIN)
    assert [(r.job, r.state, r.team, r.position) for r in rows] == [(job.id, "pending", "nlp", 1)]
    assert [e[0] for e in _events(svc)][-3:] == ["top", "hold", "drain"]


def test_slurm_not_answering_fails_the_sync_instead_of_clearing_the_budget(env):
    svc, backend, ids, tmp = env
    sync_accounts(svc)
    assert dict(svc.accounts.current.accounts["team-nlp"].grp_tres_mins)["billing"] > 0
    backend.down = True
    from portal import integrations as ig
    with pytest.raises(ig.SlurmBridgeError):
        sync_accounts(svc)
    assert dict(svc.accounts.current.accounts["team-nlp"].grp_tres_mins)["billing"] > 0
