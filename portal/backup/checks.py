"""What a backup promises and a restore checks: the schema revision (alembic) and the counts
that must come back — jobs, ledger entries, each team's balance (and that it equals the sum of
its ledger), users, teams, projects, data versions.

Plain SQL on table names every schema revision has, so a backup made at an older revision is
counted the same way after it is migrated.
"""
from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from ..db import alembic_config
from .errors import BackupError

COUNTED = ("users", "teams", "projects", "jobs", "ledger_entries", "data_repos", "data_versions",
           "data_files")


def revision(conn: Connection) -> str:
    try:
        rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # noqa: BLE001  (no such table, any driver)
        rev = None
    if not rev:
        raise BackupError("the database has no schema revision (alembic_version): not a "
                          "Slipway database, or one never migrated")
    return str(rev)


def counts(conn: Connection) -> dict[str, int]:
    """Rows per counted table (a table an older schema lacks is left out)."""
    present = set(inspect(conn).get_table_names())
    return {table: int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() or 0)
            for table in COUNTED if table in present}


def balances(conn: Connection) -> dict[str, dict[str, int]]:
    """team name -> {ledger: sum of its entries, balance: its team_balances row} (micro-dollars)."""
    rows = conn.execute(text(
        "SELECT t.name, COALESCE((SELECT SUM(l.amount_micros) FROM ledger_entries l "
        "WHERE l.team_id = t.id), 0), COALESCE((SELECT b.balance_micros FROM team_balances b "
        "WHERE b.team_id = t.id), 0) FROM teams t ORDER BY t.name"))
    return {name: {"ledger": int(ledger), "balance": int(balance)}
            for name, ledger, balance in rows}


def ledger_keys(conn: Connection) -> list[str]:
    """Every ledger entry's idempotency key (what makes an entry itself), sorted."""
    return sorted(k for (k,) in conn.execute(text("SELECT idempotency_key FROM ledger_entries")))


def script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head() -> str:
    return str(script().get_current_head())


def check_revision(rev: str) -> bool:
    """True when ``rev`` is older than this Slipway's head (the restore migrates it), False
    when it is the head; BackupError when this Slipway does not know it (a newer Slipway made
    the backup)."""
    scripts = script()
    current = head()
    try:
        known = bool(rev) and scripts.get_revision(rev) is not None
    except Exception:  # noqa: BLE001  (alembic's CommandError / RevisionError: unknown)
        known = False
    if not known:
        raise BackupError(f"the backup's schema revision {rev!r} is newer than this Slipway's "
                          f"({current!r}): restore it with the Slipway version that made it, or "
                          "a newer one")
    return rev != current


def compare(expected: dict, conn: Connection) -> list[str]:
    """The differences between a backup manifest's promises and a restored database."""
    problems = []
    got = counts(conn)
    for table, n in (expected.get("counts") or {}).items():
        if got.get(table) != n:
            problems.append(f"{table}: {got.get(table)} rows restored, the backup has {n}")
    got_bal = balances(conn)
    for team, want in (expected.get("balances") or {}).items():
        have = got_bal.get(team)
        if have is None or have["ledger"] != want["ledger"]:
            problems.append(f"team {team}: ledger sum {have and have['ledger']} restored, the "
                            f"backup has {want['ledger']}")
        elif have["balance"] != have["ledger"]:
            problems.append(f"team {team}: balance {have['balance']} is not the sum of its "
                            f"ledger {have['ledger']}")
    return problems
