"""team_balances: each team's running balance, kept equal to SUM(ledger_entries.amount_micros) by
database triggers in the same transaction as every ledger insert/update/delete

The team and billing pages read one row instead of summing the team's whole ledger (160,000 rows
for a big team: ~10 ms per page view). The triggers cover every writer (ORM, Core, raw SQL,
another process); the ledger stays the record and ``portal.billing.ledger.ledger_sum`` recomputes it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_UPSERT = ("INSERT INTO team_balances (team_id, balance_micros) VALUES (NEW.team_id, NEW.amount_micros) "
           "ON CONFLICT (team_id) DO UPDATE SET balance_micros = team_balances.balance_micros "
           "+ excluded.balance_micros")
_SUBTRACT = ("UPDATE team_balances SET balance_micros = balance_micros - OLD.amount_micros "
             "WHERE team_id = OLD.team_id")

SQLITE_TRIGGERS = (
    f"CREATE TRIGGER trg_ledger_balance_insert AFTER INSERT ON ledger_entries BEGIN {_UPSERT}; END",
    f"CREATE TRIGGER trg_ledger_balance_delete AFTER DELETE ON ledger_entries BEGIN {_SUBTRACT}; END",
    f"CREATE TRIGGER trg_ledger_balance_update AFTER UPDATE OF team_id, amount_micros ON ledger_entries "
    f"BEGIN {_SUBTRACT}; {_UPSERT}; END",
)

# PostgreSQL: statement-level triggers over transition tables, so a multi-row INSERT/DELETE
# updates each team's row once per statement (a row-level trigger would update one row once per
# ledger row, and MVCC makes N updates of one row in one transaction cost O(N^2)).
_PG_ADD = ("INSERT INTO team_balances (team_id, balance_micros) "
           "SELECT team_id, SUM(amount_micros) FROM new_rows GROUP BY team_id "
           "ON CONFLICT (team_id) DO UPDATE SET balance_micros = team_balances.balance_micros "
           "+ excluded.balance_micros")
_PG_SUB = ("UPDATE team_balances AS b SET balance_micros = b.balance_micros - d.total "
           "FROM (SELECT team_id, SUM(amount_micros) AS total FROM old_rows GROUP BY team_id) AS d "
           "WHERE b.team_id = d.team_id")
PG_FUNCTION = f"""CREATE FUNCTION slipway_ledger_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    {_PG_SUB};
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    {_PG_ADD};
  END IF;
  RETURN NULL;
END $$"""
PG_TRIGGERS = (
    "CREATE TRIGGER trg_ledger_balance_insert AFTER INSERT ON ledger_entries "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION slipway_ledger_balance()",
    "CREATE TRIGGER trg_ledger_balance_delete AFTER DELETE ON ledger_entries "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION slipway_ledger_balance()",
    "CREATE TRIGGER trg_ledger_balance_update AFTER UPDATE ON ledger_entries "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION slipway_ledger_balance()",
)


def upgrade() -> None:
    op.create_table('team_balances',
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('balance_micros', sa.BigInteger(), nullable=False, server_default='0'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_team_balances_team_id_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('team_id', name=op.f('pk_team_balances'))
    )
    dialect = op.get_bind().dialect.name
    if dialect == 'sqlite':
        for ddl in SQLITE_TRIGGERS:
            op.execute(ddl)
    elif dialect == 'postgresql':
        op.execute(PG_FUNCTION)
        for ddl in PG_TRIGGERS:
            op.execute(ddl)
    else:  # pragma: no cover
        raise NotImplementedError(f"team_balances triggers for {dialect}")
    op.execute("INSERT INTO team_balances (team_id, balance_micros) "
               "SELECT team_id, SUM(amount_micros) FROM ledger_entries GROUP BY team_id")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == 'sqlite':
        for name in ('insert', 'delete', 'update'):
            op.execute(f"DROP TRIGGER IF EXISTS trg_ledger_balance_{name}")
    elif dialect == 'postgresql':
        for name in ('insert', 'delete', 'update'):
            op.execute(f"DROP TRIGGER IF EXISTS trg_ledger_balance_{name} ON ledger_entries")
        op.execute("DROP FUNCTION IF EXISTS slipway_ledger_balance()")
    op.drop_table('team_balances')
