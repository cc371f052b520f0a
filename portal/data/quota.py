"""A team's storage quota: data versions + kept job outputs (what storage billing counts).

Set by cluster administrators (``set_quota``; None: no quota). Over it, uploads, new versions
and continues are refused with the usage, the quota and the largest things to delete."""
from __future__ import annotations

import re

from sqlalchemy import select

from ..db import DataRepo, Job, Project, Team
from ..services import Services
from ..teams.access import Actor, Forbidden, OpError, team_access
from .storage import billed_version_bytes

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15,
          "kib": 2**10, "ki": 2**10, "mib": 2**20, "mi": 2**20, "gib": 2**30, "gi": 2**30,
          "tib": 2**40, "ti": 2**40, "pib": 2**50, "pi": 2**50}
MAX_QUOTA = 2**60


def parse_size(text) -> int:
    """``100GB`` → 100·10⁹, ``1.5TiB`` → 1.5·2⁴⁰, ``12345`` → bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE_RE.match(str(text or ""))
        unit = (m.group(2) or "").lower() if m else ""
        if not m or unit not in _UNITS:
            raise OpError(f"cannot read size {str(text)[:40]!r}; write e.g. 500GB, 2TB, 100GiB "
                          "or a number of bytes")
        value = int(float(m.group(1)) * _UNITS[unit])
    if not 0 <= value <= MAX_QUOTA:
        raise OpError(f"size must be between 0 and {MAX_QUOTA} bytes")
    return value


def human(n: int | None) -> str:
    if n is None:
        return "no quota"
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def usage_items(s, team_id: int) -> list[tuple[str, int]]:
    """[(what, bytes)] of the team's stored things, largest first."""
    repos = {r.id: r for r in s.scalars(select(DataRepo).where(DataRepo.team_id == team_id))}
    items: list[tuple[str, int]] = []
    if repos:
        billed = billed_version_bytes(s, list(repos))
        for r in repos.values():
            for v in r.versions:
                items.append((f"{r.team.name}/{r.name}:{v.number}", billed.get(v.id, 0)))
    rows = s.execute(select(Job.id, Job.output_bytes).join(Project, Job.project_id == Project.id)
                     .where(Project.team_id == team_id, Job.output_state == "kept"))
    items += [(f"output of job {jid}", size or 0) for jid, size in rows]
    items.sort(key=lambda it: -it[1])
    return items


def used_bytes(s, team_id: int) -> int:
    return sum(size for _what, size in usage_items(s, team_id))


def check_room(s, team: Team | int, extra_bytes: int) -> None:
    """Raise OpError 413 when ``extra_bytes`` more would take the team over its quota."""
    t = s.get(Team, team) if isinstance(team, int) else team
    if t is None or t.storage_quota_bytes is None or extra_bytes <= 0:
        return
    items = usage_items(s, t.id)
    used = sum(size for _w, size in items)
    if used + extra_bytes <= t.storage_quota_bytes:
        return
    biggest = ", ".join(f"{w} ({human(n)})" for w, n in items[:3] if n > 0)
    raise OpError(f"team {t.name} is over its storage quota: {human(used)} used + "
                  f"{human(extra_bytes)} new > quota {human(t.storage_quota_bytes)}"
                  + (f"; delete something first, e.g. {biggest}" if biggest else "")
                  + " (or ask a cluster administrator for a larger quota)", 413)


def refuse_if_over(s, team: Team) -> None:
    """Raise OpError 413 when the team uses more than its quota already (a new job would add
    its /output to it)."""
    if team.storage_quota_bytes is None:
        return
    items = usage_items(s, team.id)
    used = sum(size for _w, size in items)
    if used > team.storage_quota_bytes:
        biggest = ", ".join(f"{w} ({human(n)})" for w, n in items[:3] if n > 0)
        raise OpError(f"team {team.name} is over its storage quota: {human(used)} used, quota "
                      f"{human(team.storage_quota_bytes)}; delete something first, e.g. {biggest}",
                      413)


def storage_usage(svc: Services, actor: Actor, team: str) -> dict:
    with svc.db.session() as s:
        t, _ = team_access(s, actor, team)
        items = usage_items(s, t.id)
        return {"team": t.name, "used_bytes": sum(n for _w, n in items),
                "quota_bytes": t.storage_quota_bytes,
                "items": [{"what": w, "size_bytes": n} for w, n in items[:50]]}


def set_quota(svc: Services, actor: Actor, team: str, quota_bytes: int | None) -> dict:
    if not actor.is_cluster_admin:
        raise Forbidden("only cluster administrators set storage quotas")
    if quota_bytes is not None:
        quota_bytes = parse_size(quota_bytes)
    with svc.db.transaction() as s:
        t, _ = team_access(s, actor, team)
        t.storage_quota_bytes = quota_bytes
    return storage_usage(svc, actor, team)

