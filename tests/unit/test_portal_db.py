"""Schema comes from the Alembic migration and matches the models; SQLite is WAL + busy_timeout."""
from __future__ import annotations

from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from portal.db import Base, Database, from_micros, to_micros, upgrade


def test_migration_matches_models_and_sqlite_settings(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    upgrade(url)  # idempotent
    db = Database(url)
    with db.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        idx = c.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name='uq_jobs_active_branch'").scalar()
        assert "UNIQUE" in idx and "WHERE state IN ('queued', 'pending', 'running', 'finishing', 'unknown')" in idx
    db.dispose()


def test_money_is_integer_micro_dollars():
    assert to_micros(Decimal("25.00")) == 25_000_000
    assert to_micros("-0.166667") == -166_667
    assert from_micros(24_733_333) == Decimal("24.733333")
    with pytest.raises(ValueError):
        to_micros(Decimal("0.0000001"))
