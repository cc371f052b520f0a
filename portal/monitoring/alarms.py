"""Alarms (docs/MONITORING.md, issue 15 part 5): node down, drained (or draining) or not
responding; a node with fewer GPUs than configured; slurmctld or slurmdbd unreachable; the
reconciler falling behind; a burst of failed jobs; a team balance under its threshold; storage
near quota.

``evaluate`` runs once per reconciler tick (``jobs/reconciler/monitor.py``) from what the tick
already asked Slurm (never a Slurm call of its own). An alarm opens ONCE (``opened_at``,
``detail``) and resolves ONCE (``resolved_at``, ``resolution``) when its condition clears; while
it lasts nothing repeats. Each opening and each resolution mails every cluster administrator
with an email (balance and storage alarms also the team's owners and administrators), once: the
messages are rows written with the change and marked when sent (``alarm_mail``). No mail
configured: alarms are only on the web.

A stuck reconciler cannot report itself: ``check_reconciler`` (the alarms page, the API and the
CLI call it through ``page``) opens "reconciler behind" when no tick has finished for
``alarm_reconcile_lag_s``, from the database alone. The modules: ``alarm_kinds`` (the checks),
``alarm_store`` (open/resolve, who gets mail), ``alarm_mail`` (sending), ``alarm_views``
(listings)."""
from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select

from ..jobs import leadership
from ..services import Services, log
from ..teams.access import Actor, Forbidden, NotFound, OpError
from ..db.alarm_models import Alarm
from . import alarm_mail, alarm_store, alarm_views
from .alarm_kinds import GRACE_S, NODE_GPUS, Findings, balance_findings, failed_jobs_findings, \
    new_peaks, node_findings, slurm_findings, stalled_findings, storage_findings

STORAGE_EVERY_S = 60.0   # storage usage is summed at most once a minute for the alarms
NODE_NAME_MAX = 128


def evaluate(svc: Services, now: datetime, queue, nodes, report) -> None:
    """One tick: record that it ended, open and resolve alarms, send the mail that is due.
    ``nodes`` None (sinfo failed, or the poll did): node alarms stay as they are."""
    cfg = svc.config
    end = svc.now()
    cluster = cfg.cluster_name
    findings = slurm_findings(report, cluster, cfg.alarm_reconcile_lag_s)
    with svc.db.session() as s:   # the reads first: the write transaction stays short
        findings.merge(failed_jobs_findings(s, end, cluster, cfg.alarm_failed_jobs,
                                            cfg.alarm_failed_window_s))
        findings.merge(balance_findings(s, cfg.alarm_balance_threshold))
        measured = _storage_due(s, end)
        if measured:
            findings.merge(storage_findings(s, cfg.alarm_storage_fraction))
    with svc.db.transaction() as s:
        alarm_store.write_state(s, alarm_store.TICK_KEY, json.dumps(
            {"end": end.isoformat(), "duration_s": round(float(report.duration_s or 0), 3)}), end)
        if measured:
            alarm_store.write_state(s, alarm_store.STORAGE_KEY, end.isoformat(), end)
        if nodes is not None:
            peaks = alarm_store.gpu_peaks(s)
            findings.merge(node_findings(nodes, peaks))
            alarm_store.raise_peaks(s, new_peaks(nodes, peaks), end)
        alarm_store.hold_back(s, findings, end, GRACE_S)
        events = alarm_store.apply(s, findings, end, mail=svc.mailer is not None)
    for e in events:
        log.info("alarm %s: %s", e.event, e.key)
    alarm_mail.deliver(svc, end)


def _storage_due(s, now: datetime) -> bool:
    last = _parse_time(alarm_store.read_state(s, alarm_store.STORAGE_KEY))
    return last is None or (now - last).total_seconds() >= STORAGE_EVERY_S or last > now


def _parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def last_tick(svc: Services) -> tuple[datetime | None, float | None]:
    """When the last reconciler tick ended, and how long its own work took."""
    with svc.db.session() as s:
        raw = alarm_store.read_state(s, alarm_store.TICK_KEY)
    try:
        d = json.loads(raw) if raw else {}
        return _parse_time(d.get("end")), float(d.get("duration_s") or 0.0)
    except (ValueError, TypeError, AttributeError):
        return None, None


def check_reconciler(svc: Services, now: datetime | None = None) -> dict:
    """From outside the reconciler, without Slurm: opens "reconciler behind" (and sends its mail)
    when no tick has finished for ``alarm_reconcile_lag_s``; the next tick in time resolves it.
    Answers how the reconciler stands."""
    now = now or svc.now()
    lag = svc.config.alarm_reconcile_lag_s
    end, took = last_tick(svc)
    findings: Findings = stalled_findings(end, now, svc.config.cluster_name, lag)
    if findings.conditions:
        with svc.db.transaction() as s:
            events = alarm_store.apply(s, findings, now, mail=svc.mailer is not None)
        if events:
            alarm_mail.deliver(svc, now)
    age = (now - end).total_seconds() if end is not None else None
    return {"active": leadership.current(svc),   # who leads (docs/FAULTS.md §4)
            "last_tick_at": end.isoformat() if end else None, "last_tick_s": took,
            "age_s": round(age, 1) if age is not None else None, "limit_s": lag,
            "behind": bool(age is not None and age > lag)}


def page(svc: Services, actor: Actor, *, history: bool = False, page: int = 1,
         per_page: int = alarm_views.PER_PAGE) -> dict:
    """What the alarms page, ``GET /api/alarms`` and ``slipway alarms`` show ``actor``: open
    alarms, then (``history``) resolved ones a page at a time; for cluster administrators also
    how the reconciler stands (checked here: a stuck one opens its alarm)."""
    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise OpError(f"page must be a whole number from 1, got {page!r}")
    if not isinstance(per_page, int) or isinstance(per_page, bool) \
            or not 1 <= per_page <= alarm_views.MAX_PER_PAGE:
        raise OpError(f"per_page must be a whole number from 1 to {alarm_views.MAX_PER_PAGE}, "
                      f"got {per_page!r}")
    status = check_reconciler(svc) if actor.is_cluster_admin else None
    with svc.db.session() as s:
        out = alarm_views.listing(s, actor, history=history, page=page, per_page=per_page)
    out["reconciler"] = status
    return out


def open_count(svc: Services) -> int:
    with svc.db.session() as s:
        return alarm_views.open_count(s)


def accept_gpu_count(svc: Services, actor: Actor, node: str) -> dict:
    """A cluster administrator accepts the GPUs ``node`` has now (its hardware changed for good):
    the most it was seen with is forgotten; the next tick records what sinfo shows and resolves
    the "fewer GPUs" alarm unless Slurm itself still says the count is low."""
    if not actor.is_cluster_admin:
        raise Forbidden("only cluster administrators may accept a node's GPU count")
    if not isinstance(node, str) or not node.strip() or len(node) > NODE_NAME_MAX:
        raise OpError(f"name a node (at most {NODE_NAME_MAX} characters), got {str(node)[:40]!r}")
    node = node.strip()
    with svc.db.transaction() as s:
        dropped = alarm_store.forget_peaks(s, node)
        alarm = s.scalar(select(Alarm).where(Alarm.key == f"{NODE_GPUS}:{node}",
                                             Alarm.resolved_at.is_(None)))
        if not dropped and alarm is None:
            raise NotFound(f"no GPU count is recorded for node {node!r}")
    svc.wake.set()   # the reconciler looks again now
    return {"node": node, "forgotten": dropped, "open_alarm": alarm is not None,
            "message": f"node {node}: the GPUs it has now are its count from the next tick"
                       + (" (the alarm resolves then, unless Slurm still reports too few)"
                          if alarm is not None else "")}
