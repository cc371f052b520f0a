"""A Slipway world worth backing up (tests/unit/test_backup_restore.py and
tests/integration/test_backup_drill_pg.py): make_world's users, teams, jobs and charges, real
git pushes through the push hooks (objects into the bare repository, pre-receive, the ref
update, post-receive) to two branches plus a results ref, a git-lfs object, a data version
uploaded through the data service, jobs' logs and secrets made by ensure_secrets; and
``state(svc)``: everything the drill must find again after a restore."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

from sqlalchemy import select

from git_gateway.lfs import LfsStore
from portal.data import repos as data_repos
from portal.data import uploads
from portal.db import DataFile, DataRepo, DataVersion, Job, LedgerEntry, Team, TeamBalance, User
from portal.jobs import push
from portal.teams.access import Actor
from tests.support.fakes import commit_to_bare, git, hook_payload, make_services
from tests.support.web import make_world

Z = "0" * 40
LFS_DATA = b"weights " * 40_000


def who(svc, name: str) -> Actor:
    with svc.db.session() as s:
        u = s.scalar(select(User).where(User.name == name))
        return Actor(id=u.id, name=u.name, is_cluster_admin=bool(u.is_cluster_admin))


def pushed(svc, work: Path, branch: str, files: dict[str, str], pusher: str = "alice") -> str:
    """A push of a new branch to nlp/proj as the git gateway makes it: objects, pre-receive,
    ref update, post-receive; returns the commit."""
    bare = Path(svc.config.repos_root) / "nlp" / "proj.git"
    sha = commit_to_bare(bare, work, files, branch=branch)
    update = [(f"refs/heads/{branch}", Z, sha)]
    r = push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", pusher, update))
    assert r.ok, r.messages
    git("--git-dir", str(bare), "update-ref", f"refs/heads/{branch}", sha)
    r = push.handle_post_receive(svc, hook_payload("post-receive", "nlp/proj", pusher, update))
    assert r.ok, r.messages
    return sha


def build(tmp: Path, **over):
    """Services on ``tmp`` with a populated world; returns (svc, ids)."""
    svc = make_services(tmp, hook_secret="", secret_key="", **over)
    ids = make_world(svc)
    work = tmp / "work"
    ids["sha_a"] = pushed(svc, work, "push-a", {"slipway-entrypoint.sh": "echo a\n"})
    ids["sha_b"] = pushed(svc, work, "push-b", {"train.py": "print(1)\n"})
    bare = Path(svc.config.repos_root) / "nlp" / "proj.git"
    git("--git-dir", str(bare), "update-ref", "refs/heads/results/push-a/1", ids["sha_a"])
    oid = hashlib.sha256(LFS_DATA).hexdigest()
    LfsStore(svc.config.lfs_root).put_stream("nlp", "proj", oid, io.BytesIO(LFS_DATA), len(LFS_DATA))
    ids["lfs_oid"] = oid
    alice = who(svc, "alice")
    data_repos.create_repo(svc, alice, "nlp", "cifar", "dataset", "images")
    files = {"train/a.bin": b"A" * 1000, "labels.txt": b"cat\ndog\n"}
    ans = uploads.start_upload(svc, alice, "nlp", "cifar", [
        {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in files.items()])
    contents = {hashlib.sha256(d).hexdigest(): d for d in files.values()}
    for h, off in ans["missing"].items():
        uploads.receive_chunk(svc, alice, ans["upload"], h, off, io.BytesIO(contents[h][off:]),
                              len(contents[h]) - off)
    uploads.commit_upload(svc, alice, ans["upload"])
    return svc, ids


def refs(repos_root: Path) -> dict[str, dict[str, str]]:
    out = {}
    for bare in sorted(Path(repos_root).glob("*/*.git")):
        lines = git("--git-dir", str(bare), "for-each-ref", "--format=%(objectname) %(refname)")
        out[f"{bare.parent.name}/{bare.name}"] = dict(
            reversed(line.split(" ", 1)) for line in lines.splitlines() if line)
    return out


def state(svc) -> dict:
    """Everything a restore must give back, read through the models."""
    with svc.db.session() as s:
        jobs = [(j.id, j.project_id, j.branch, j.state, j.commit_sha, j.slurm_job_id, j.results_ref)
                for j in s.scalars(select(Job).order_by(Job.id))]
        ledger = [(e.idempotency_key, e.team_id, e.amount_micros, e.kind, e.job_id)
                  for e in s.scalars(select(LedgerEntry).order_by(LedgerEntry.id))]
        balances = {t: b for t, b in s.execute(
            select(Team.name, TeamBalance.balance_micros).join(TeamBalance, TeamBalance.team_id == Team.id))}
        data = [(r.name, v.number, [(f.path, f.sha256, f.size) for f in s.scalars(
                    select(DataFile).where(DataFile.version_id == v.id).order_by(DataFile.path))])
                for v, r in s.execute(select(DataVersion, DataRepo).join(DataRepo))]
        users = sorted(s.scalars(select(User.name)))
    return {"jobs": jobs, "ledger": ledger, "balances": balances, "data": data, "users": users,
            "refs": refs(svc.config.repos_root), "hook_secret": svc.config.hook_secret,
            "secret_key": svc.config.secret_key}
