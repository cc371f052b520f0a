"""Test fixtures for the web layer (unit tests with Flask's client, Playwright browser tests, and
the lead's real-cluster browser test): a small world of teams, roles, projects, jobs, a ledger,
tokens and log files; log-in helpers.

``make_world(svc)`` seeds:

* team ``nlp``: alice (owner), bob (administrator), carol (user); project ``proj``; jobs
  ``running`` (pushed by carol, node a4k-1, port 18080, a log file), ``pending`` (by alice),
  ``succeeded`` (by alice, with results); $25 deposit and two GPU charges;
* team ``vision``: mallory (owner) — the OUTSIDER for nlp; project ``secret`` with a running
  job and a log file; a ledger; mallory's access token;
* dave: cluster administrator, member of no team; erin: member of no team.

Every user's password is ``pw-<name>`` (fast pbkdf2 hashes, test-only).
"""
from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from portal.billing import ledger as billing
from portal.identity.tokens import create_token
from portal.db import Job, LedgerEntry, Membership, Project, Team, User
from portal.jobs import runner_spec
from portal.services import Services


def password_of(name: str) -> str:
    return f"pw-{name}"


def add_user(svc: Services, name: str, *, admin: bool = False, email: str | None = None) -> int:
    with svc.db.transaction() as s:
        u = User(name=name, unix_user=name, is_cluster_admin=admin, created_at=svc.now(), email=email,
                 password_hash=generate_password_hash(password_of(name), method="pbkdf2:sha256:1000"))
        s.add(u)
        s.flush()
        return u.id


def set_password(svc: Services, name: str, password: str | None = None) -> None:
    with svc.db.transaction() as s:
        u = s.scalar(select(User).where(User.name == name))
        u.password_hash = generate_password_hash(password or password_of(name), method="pbkdf2:sha256:1000")


def add_team(svc: Services, name: str, members: dict[str, str], *, funds: str | None = None) -> int:
    with svc.db.transaction() as s:
        t = Team(name=name, personal=False, created_at=svc.now())
        s.add(t)
        s.flush()
        for uname, role in members.items():
            uid = s.scalar(select(User.id).where(User.name == uname))
            s.add(Membership(user_id=uid, team_id=t.id, role=role, created_at=svc.now()))
        tid = t.id
    if funds:
        billing.add_funds(svc.db, name, funds, by="test", now=svc.now())
    return tid


def add_project(svc: Services, team: str, name: str, *, gpu_type="a4000", gpu_count=1, image="python") -> int:
    with svc.db.transaction() as s:
        tid = s.scalar(select(Team.id).where(Team.name == team))
        p = Project(team_id=tid, name=name, gpu_type=gpu_type, gpu_count=gpu_count, image=image,
                    time_limit_min=60, created_at=svc.now())
        s.add(p)
        s.flush()
        pid = p.id
    svc.git.create_repo(team, name)
    return pid


def add_job(svc: Services, project_id: int, *, branch: str, state: str, pusher: str | None = None,
            node: str | None = None, port: int | None = None, reason: str | None = None,
            slurm_job_id: int | None = None, log: str | None = None, **extra) -> int:
    now = svc.now()
    with svc.db.transaction() as s:
        pusher_id = s.scalar(select(User.id).where(User.name == pusher)) if pusher else None
        j = Job(project_id=project_id, branch=branch, commit_sha="ab" * 20, pusher_id=pusher_id,
                state=state, gpu_type="a4000", gpu_count=1, image="python", time_limit_min=60,
                node=node, port=port, reason=reason, slurm_job_id=slurm_job_id, created_at=now,
                state_changed_at=now, submitted_at=now if state != "queued" else None,
                started_at=now if state in ("running", "finishing", "succeeded") else None, **extra)
        s.add(j)
        s.flush()
        jid = j.id
    if log is not None:
        path = runner_spec.log_path(svc, jid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(log)
    return jid


def add_charge(svc: Services, team: str, job_id: int, dollars: str, minute: int, *, days_ago: int = 0) -> None:
    from portal.db import to_micros

    with svc.db.transaction() as s:
        tid = s.scalar(select(Team.id).where(Team.name == team))
        s.add(LedgerEntry(team_id=tid, kind="gpu", amount_micros=-to_micros(dollars),
                          idempotency_key=f"gpu:{job_id}:0:{minute}", job_id=job_id, attempt=0,
                          from_minute=minute, to_minute=minute + 1, gpu_type="a4000", gpu_count=1,
                          rate_micros=to_micros("0.50"), resource=str(job_id), created_by="billing",
                          note="test charge", created_at=svc.now() - timedelta(days=days_ago)))


def make_world(svc: Services) -> dict:
    ids: dict = {}
    for name in ("alice", "bob", "carol", "mallory", "erin"):
        ids[name] = add_user(svc, name)
    ids["dave"] = add_user(svc, "dave", admin=True)
    ids["nlp"] = add_team(svc, "nlp", {"alice": "owner", "bob": "administrator", "carol": "user"},
                          funds="25.00")
    ids["vision"] = add_team(svc, "vision", {"mallory": "owner"}, funds="40.00")
    ids["proj"] = add_project(svc, "nlp", "proj")
    ids["secret"] = add_project(svc, "vision", "secret")
    ids["running"] = add_job(svc, ids["proj"], branch="exp-1", state="running", pusher="carol",
                             node="a4k-1", port=18080, slurm_job_id=1001,
                             log="epoch 1 loss 0.93\nepoch 2 loss 0.71\n")
    ids["pending"] = add_job(svc, ids["proj"], branch="exp-2", state="pending", pusher="alice",
                             reason="Resources", slurm_job_id=1002)
    ids["succeeded"] = add_job(svc, ids["proj"], branch="exp-0", state="succeeded", pusher="alice",
                               node="a4k-2", exit_code=0, results_ref="refs/heads/results/exp-0/3",
                               results_sha="cd" * 20, branch_updated=True, ended_at=svc.now(),
                               log="done\n")
    ids["vision_job"] = add_job(svc, ids["secret"], branch="hidden-branch", state="running",
                                pusher="mallory", node="a6k-1", port=18081, slurm_job_id=1003,
                                log="VISION-SECRET-LOG\n")
    add_charge(svc, "nlp", ids["succeeded"], "0.50", 0, days_ago=2)
    add_charge(svc, "nlp", ids["succeeded"], "0.25", 1, days_ago=1)
    add_charge(svc, "vision", ids["vision_job"], "1.00", 0, days_ago=1)
    with svc.db.transaction() as s:
        mallory = s.scalar(select(User).where(User.name == "mallory"))
        ids["mallory_token"] = create_token(s, mallory, "cli", now=svc.now())
        alice = s.scalar(select(User).where(User.name == "alice"))
        ids["alice_token"] = create_token(s, alice, "cli", now=svc.now())
        carol = s.scalar(select(User).where(User.name == "carol"))
        ids["carol_token"] = create_token(s, carol, "cli", now=svc.now())
        dave = s.scalar(select(User).where(User.name == "dave"))
        ids["dave_token"] = create_token(s, dave, "cli", now=svc.now())
    return ids


_CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')


def csrf_token(client) -> str:
    """The session's CSRF token, read from the login page (or any page)."""
    r = client.get("/login")
    m = _CSRF_RE.search(r.get_data(as_text=True))
    if m is None:  # logged in: /login redirects; read it from the dashboard
        m = _CSRF_RE.search(client.get("/").get_data(as_text=True))
    return m.group(1)


def login(client, name: str, password: str | None = None):
    token = csrf_token(client)
    return client.post("/login", data={"username": name, "password": password or password_of(name),
                                       "csrf_token": token})
