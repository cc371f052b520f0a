"""The database side of money: a LedgerStore backed by ``ledger_entries`` and balance helpers.

The balance is always ``SUM(amount_micros)`` over the team's entries; it is read from
``team_balances``, a running total that database triggers (migration 0004) update in the same
transaction as every ledger insert/update/delete, so a page never sums a big team's ledger
(``ledger_sum`` / ``balance_mismatches`` recompute it from the entries). Every entry has a unique
``idempotency_key`` (accounting's keys: ``gpu:<job>:<attempt>:<from_minute>``,
``storage:<resource>:<from_minute_epoch>``, ``deposit:<uuid>``); inserting an existing key is a
no-op, so re-running the biller (another tick, a restart, two reconcilers) never double-charges.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import integrations as ig
from ..db import Database, LedgerEntry, Team, TeamBalance, from_micros, to_micros, utcnow

KIND_DEPOSIT = "deposit"
KIND_GPU = "gpu"
KIND_STORAGE = "storage"
KIND_ADJUSTMENT = "adjustment"


def balance(session: Session, team_id: int) -> Decimal:
    """The team's balance: its running total (``team_balances``, kept equal to the sum of its
    ledger entries by triggers in the same transaction as each ledger write)."""
    return balances_of(session, [team_id])[team_id]


def balances_of(session: Session, team_ids: list[int]) -> dict[int, Decimal]:
    """Balances of several teams in one primary-key lookup (teams without entries: 0)."""
    out = {tid: from_micros(0) for tid in team_ids}
    if team_ids:
        rows = session.execute(select(TeamBalance.team_id, TeamBalance.balance_micros)
                               .where(TeamBalance.team_id.in_(team_ids))).all()
        out.update({tid: from_micros(int(m or 0)) for tid, m in rows})
    return out


def balances(session: Session) -> dict[int, Decimal]:
    """Every team that has ledger entries -> its balance."""
    rows = session.execute(select(TeamBalance.team_id, TeamBalance.balance_micros)).all()
    return {team_id: from_micros(int(m or 0)) for team_id, m in rows}


def ledger_sum(session: Session, team_id: int) -> Decimal:
    """``SUM(amount_micros)`` over the team's ledger entries, computed from the ledger itself (the
    record that ``team_balances`` mirrors; for checks and audits)."""
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0)).where(LedgerEntry.team_id == team_id)
    )
    return from_micros(int(total or 0))


def balance_mismatches(session: Session) -> dict[int, tuple[Decimal, Decimal]]:
    """Teams whose running balance differs from the sum of their ledger entries:
    ``{team_id: (running, ledger_sum)}``. Empty when all is well (it always should be)."""
    sums = {tid: int(v or 0) for tid, v in session.execute(
        select(LedgerEntry.team_id, func.sum(LedgerEntry.amount_micros)).group_by(LedgerEntry.team_id))}
    running = {tid: int(v or 0) for tid, v in session.execute(
        select(TeamBalance.team_id, TeamBalance.balance_micros))}
    return {tid: (from_micros(running.get(tid, 0)), from_micros(sums.get(tid, 0)))
            for tid in set(sums) | set(running) if running.get(tid, 0) != sums.get(tid, 0)}


def job_of_resource(cluster_job_id: str) -> int | None:
    """The Slipway job of a GPU charge: ``12`` → 12; a sweep task's ``12_3`` → 12."""
    head, _, task = cluster_job_id.partition("_")
    if head.isdigit() and (not task or task.isdigit()):
        return int(head)
    return None


def task_cost_micros(session: Session, job_id: int) -> dict[str, int]:
    """A sweep's cost per task: {"12_3": micros} (``resource`` keys its task's charges)."""
    rows = session.execute(
        select(LedgerEntry.resource, func.sum(LedgerEntry.amount_micros))
        .where(LedgerEntry.job_id == job_id, LedgerEntry.kind == KIND_GPU)
        .group_by(LedgerEntry.resource)).all()
    return {res: -int(total or 0) for res, total in rows if res}


def job_cost_micros(session: Session, job_id: int) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0)).where(
            LedgerEntry.job_id == job_id, LedgerEntry.kind == KIND_GPU)
    )
    return -int(total or 0)


def entry_row(entry, team_id: int) -> LedgerEntry:
    """accounting entry -> LedgerEntry row (amount stored as the signed delta)."""
    row = LedgerEntry(team_id=team_id, idempotency_key=entry.key,
                      amount_micros=to_micros(entry.delta), created_at=utcnow())
    if isinstance(entry, ig.Deposit):
        row.kind, row.created_by, row.note, row.created_at = KIND_DEPOSIT, entry.by, entry.note, entry.at
    elif isinstance(entry, ig.Adjustment):
        row.kind, row.created_by, row.note, row.created_at = KIND_ADJUSTMENT, entry.by, entry.reason, entry.at
    elif isinstance(entry, ig.GpuCharge):
        row.kind = KIND_GPU
        row.job_id = job_of_resource(entry.cluster_job_id)
        row.resource = entry.cluster_job_id
        row.attempt, row.from_minute, row.to_minute = entry.attempt, entry.from_minute, entry.to_minute
        row.gpu_type, row.gpu_count = entry.gpu_type, entry.gpu_count
        row.rate_micros = to_micros(entry.gpus[0].hourly_rate)
        row.created_by = "billing"
        row.note = entry.describe()
    elif isinstance(entry, ig.StorageCharge):
        row.kind = KIND_STORAGE
        row.resource, row.bytes = entry.resource, entry.size_bytes
        row.from_minute, row.to_minute = entry.from_minute_epoch, entry.to_minute_epoch
        row.rate_micros = to_micros(entry.rate_gb_month)
        row.carry = entry.carry
        row.created_by = "billing"
        row.note = entry.describe()
    else:  # pragma: no cover
        raise TypeError(f"not a ledger entry: {entry!r}")
    return row


def row_entry(row: LedgerEntry, team: str):
    """LedgerEntry row -> accounting entry (for the LedgerStore protocol)."""
    amount = from_micros(abs(row.amount_micros))
    if row.kind == KIND_DEPOSIT:
        return ig.Deposit(team=team, amount=amount, by=row.created_by or "?", at=row.created_at,
                          note=row.note or "", key=row.idempotency_key)
    if row.kind == KIND_ADJUSTMENT:
        return ig.Adjustment(team=team, amount=from_micros(row.amount_micros), by=row.created_by or "?",
                             at=row.created_at, reason=row.note or "-", key=row.idempotency_key)
    if row.kind == KIND_GPU:
        return ig.GpuCharge(team=team, cluster_job_id=row.resource or str(row.job_id),
                            attempt=row.attempt or 0, attempt_start=None,
                            from_minute=row.from_minute or 0, to_minute=row.to_minute or 1,
                            gpus=(ig.GpuLine(row.gpu_type or "gpu", row.gpu_count or 1,
                                             from_micros(row.rate_micros)),),
                            amount=amount)
    return ig.StorageCharge(team=team, resource=row.resource or "?", size_bytes=row.bytes or 0,
                            from_minute_epoch=row.from_minute or 0, to_minute_epoch=row.to_minute or 1,
                            rate_gb_month=from_micros(row.rate_micros), amount=amount,
                            carry=row.carry or 0)


class DbLedgerStore:
    """accounting.ledger.LedgerStore over the database. Each append is its own transaction; the
    unique ``idempotency_key`` makes ``append_if_absent`` atomic across threads and processes.

    Team names are resolved to ids in the same transaction as each write (no cache: a team
    deleted and created again, or a deleted team's id handed to another team, must never
    receive the charges of the name's earlier holder)."""

    def __init__(self, db: Database):
        self.db = db

    def _team_id(self, session: Session, team: str) -> int:
        tid = session.scalar(select(Team.id).where(Team.name == team))
        if tid is None:
            raise LookupError(f"no team {team!r}")
        return tid

    def append_if_absent(self, entry) -> bool:
        try:
            with self.db.transaction() as s:
                if s.scalar(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == entry.key)):
                    return False
                s.add(entry_row(entry, self._team_id(s, entry.team)))
        except IntegrityError:
            return False
        return True

    def entries(self, team: str) -> Sequence:
        with self.db.session() as s:
            tid = self._team_id(s, team)
            rows = s.scalars(select(LedgerEntry).where(LedgerEntry.team_id == tid).order_by(LedgerEntry.id))
            return [row_entry(r, team) for r in rows]

    def billed_minutes(self, cluster_job_id: str, attempt: int) -> int:
        with self.db.session() as s:
            v = s.scalar(select(func.max(LedgerEntry.to_minute)).where(
                LedgerEntry.kind == KIND_GPU, LedgerEntry.resource == str(cluster_job_id),
                LedgerEntry.attempt == attempt))
            return int(v or 0)

    def storage_billed_until(self, resource: str) -> int | None:
        state = self.storage_billed(resource)
        return None if state is None else state.until

    def storage_billed(self, resource: str) -> ig.StorageBilled | None:
        """The resource's latest storage charge: ``(to_minute, carry)``; None when never billed."""
        with self.db.session() as s:
            row = s.execute(select(LedgerEntry.to_minute, LedgerEntry.carry).where(
                LedgerEntry.kind == KIND_STORAGE, LedgerEntry.resource == resource)
                .order_by(LedgerEntry.to_minute.desc()).limit(1)).first()
            return None if row is None else ig.StorageBilled(int(row[0]), int(row[1] or 0))

    def balance(self, team: str) -> Decimal:
        with self.db.session() as s:
            return balance(s, self._team_id(s, team))


def deposit_in(session: Session, team_id: int, deposit: ig.Deposit) -> tuple[int, bool]:
    """Write ``deposit`` to the ledger inside the caller's transaction unless an entry with its
    key exists already: (the entry's id, whether it was written now). With a key derived from
    what is being paid (``deposit:fund-request:<id>``), one approval credits once."""
    existing = session.scalar(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == deposit.key))
    if existing is not None:
        return int(existing), False
    row = entry_row(deposit, team_id)
    session.add(row)
    session.flush()
    return row.id, True


def add_funds(db: Database, team: Team | str, amount_text: str, *, by: str, note: str = "",
              now=None) -> ig.Deposit:
    """Parse ``amount_text`` strictly (accounting.money) and append a deposit. Raises MoneyError."""
    amount = ig.parse_deposit(amount_text)
    team_name = team if isinstance(team, str) else team.name
    deposit = ig.Deposit(team=team_name, amount=amount, by=by, at=now or utcnow(), note=note)
    DbLedgerStore(db).append_if_absent(deposit)
    return deposit
