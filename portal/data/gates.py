"""Who may read which tree on disk: the gates of docs/DATA.md kept in step with the database.

A repository's gate (``datastore/repos/<id>``) lets in the Unix users of the members of its
team and of the teams it is shared with (everybody when it is public); a team's outputs gate
(``datastore/outputs/<team_id>``) lets in its members' Unix users. Gates change when a
repository is created, shared, unshared or made public (``sync_repo``), before a job that binds
something starts (``sync_for_job``), and at every reconciler tick (``sync_all``: membership
changes, LDAP). Only when Slipway runs as root (it owns the trees; jobs run as their users).
Without ACL support the gate stays closed (fail closed) and an error is logged.
"""
from __future__ import annotations

import pwd
from collections import defaultdict

from sqlalchemy import select

from ..db import DataRepo, DataShare, Membership, User
from ..services import Services, log


def _uid(unix_user: str, cache: dict) -> int | None:
    if unix_user not in cache:
        try:
            cache[unix_user] = pwd.getpwnam(unix_user).pw_uid
        except KeyError:
            cache[unix_user] = None
    return cache[unix_user]


def _team_uids(s, team_ids=None) -> dict[int, set[int]]:
    stmt = select(Membership.team_id, User.unix_user).join(User, User.id == Membership.user_id) \
        .where(User.active.is_(True))
    if team_ids is not None:
        stmt = stmt.where(Membership.team_id.in_(list(team_ids)))
    out: dict[int, set[int]] = defaultdict(set)
    cache: dict = {}
    for team_id, unix_user in s.execute(stmt):
        uid = _uid(unix_user, cache) if unix_user else None
        if uid is not None and uid != 0:
            out[team_id].add(uid)
    return out


def _apply(path, uids: set[int], public: bool) -> None:
    from .acl import AclUnsupported, set_gate
    try:
        set_gate(path, uids, public=public)
    except AclUnsupported as exc:
        log.error("data gate %s stays closed: %s", path, exc)
    except OSError as exc:
        log.warning("data gate %s: %s", path, exc)


def _store(svc: Services):
    from .store import DataStore
    return DataStore.for_services(svc)


def _sync_repos(svc: Services, repo_ids=None) -> None:
    store = _store(svc)
    if not store.chown:
        return
    with svc.db.session() as s:
        stmt = select(DataRepo.id, DataRepo.team_id, DataRepo.public)
        if repo_ids is not None:
            stmt = stmt.where(DataRepo.id.in_(list(repo_ids)))
        repos = s.execute(stmt).all()
        if not repos:
            return
        shares = defaultdict(set)
        for repo_id, team_id in s.execute(select(DataShare.repo_id, DataShare.team_id).where(
                DataShare.repo_id.in_([r[0] for r in repos]))):
            shares[repo_id].add(team_id)
        teams = {r[1] for r in repos} | {t for ts in shares.values() for t in ts}
        uids = _team_uids(s, teams)
    for repo_id, team_id, public in repos:
        path = store.repo_dir(repo_id)
        if not path.is_dir():
            continue
        allowed = set(uids.get(team_id, ()))
        for other in shares.get(repo_id, ()):
            allowed |= uids.get(other, set())
        _apply(path, allowed, bool(public))


def sync_repo(svc: Services, repo_id: int) -> None:
    _sync_repos(svc, [repo_id])


def _sync_outputs(svc: Services, team_ids=None) -> None:
    store = _store(svc)
    if not store.chown:
        return
    base = store.root / "outputs"
    if team_ids is None:
        if not base.is_dir():
            return
        team_ids = [int(p.name) for p in base.iterdir() if p.name.isdigit()]
    if not team_ids:
        return
    with svc.db.session() as s:
        uids = _team_uids(s, team_ids)
    for team_id in team_ids:
        path = base / str(team_id)
        if path.is_dir():
            _apply(path, uids.get(team_id, set()), False)


def sync_team_outputs(svc: Services, team_id: int) -> None:
    _sync_outputs(svc, [team_id])


def sync_for_job(svc: Services, repo_ids, team_id: int) -> None:
    """Before a job starts: the gates of what it binds let its team in (a member added since
    the last tick included)."""
    if repo_ids:
        _sync_repos(svc, list(repo_ids))
    _sync_outputs(svc, [team_id])


def sync_all(svc: Services) -> None:
    """Every gate (the reconciler's tick: memberships changed, LDAP removed somebody)."""
    _sync_repos(svc)
    _sync_outputs(svc)
