"""job ids never reused on SQLite (jobs AUTOINCREMENT, sequence seeded past every id the ledger
has seen), jobs.balance_hold_at (waiting jobs held by the $1.00 rule), ledger_entries.carry
(storage rounding remainder carried to the next charge), ledger_entries (resource, kind,
to_minute) for the billing watermarks

Billing keys GPU charges by the Slipway job id and deleting a project keeps its jobs' ledger
rows: without AUTOINCREMENT SQLite hands a deleted job's id (max(id) + 1) to the next job, which
then inherits the old job's billed-minute watermark and its cost. The jobs table is rebuilt
(SQLite cannot add AUTOINCREMENT in place); nothing references it, so no cascade fires, and the
partial unique index on active branch jobs and the other indexes are created again explicitly.
ledger_entries is only ALTERed (a rebuild would drop the team_balances triggers of 0004).
PostgreSQL's SERIAL sequences never reuse ids, so there only the columns are added.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_ACTIVE = "state IN ('queued', 'pending', 'running', 'finishing', 'unknown')"
# (name, columns, unique, partial where)
_JOB_INDEXES = (
    ('ix_jobs_project_id', ['project_id'], False, None),
    ('ix_jobs_slurm_job_id', ['slurm_job_id'], False, None),
    ('ix_jobs_state', ['state'], False, None),
    ('uq_jobs_active_branch', ['project_id', 'branch'], True, _ACTIVE),
    ('ix_jobs_project_id_id', ['project_id', 'id'], False, None),
    ('ix_jobs_project_state', ['project_id', 'state', 'id'], False, None),
)


def _create_job_indexes() -> None:
    for name, cols, unique, where in _JOB_INDEXES:
        kw = {} if where is None else {'sqlite_where': sa.text(where), 'postgresql_where': sa.text(where)}
        op.create_index(name, 'jobs', cols, unique=unique, **kw)


def upgrade() -> None:
    op.add_column('ledger_entries', sa.Column('carry', sa.BigInteger(), nullable=True))
    op.create_index('ix_ledger_entries_resource', 'ledger_entries', ['resource', 'kind', 'to_minute'])
    if op.get_bind().dialect.name != 'sqlite':
        op.add_column('jobs', sa.Column('balance_hold_at', sa.DateTime(), nullable=True))
        return
    for name, *_ in _JOB_INDEXES:
        op.execute(f'DROP INDEX IF EXISTS {name}')
    with op.batch_alter_table('jobs', recreate='always',
                              table_kwargs={'sqlite_autoincrement': True}) as b:
        b.add_column(sa.Column('balance_hold_at', sa.DateTime(), nullable=True))
    _create_job_indexes()
    # Never hand out an id a job ever had: deleted jobs are remembered by their ledger rows.
    op.execute("DELETE FROM sqlite_sequence WHERE name = 'jobs'")
    op.execute(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs', MAX(m) FROM ("
        "SELECT COALESCE(MAX(id), 0) AS m FROM jobs UNION ALL "
        "SELECT COALESCE(MAX(job_id), 0) FROM ledger_entries UNION ALL "
        "SELECT COALESCE(MAX(CAST(resource AS INTEGER)), 0) FROM ledger_entries "
        "WHERE kind = 'gpu' AND resource GLOB '[0-9]*' AND resource NOT GLOB '*[^0-9]*')")


def downgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        op.drop_column('jobs', 'balance_hold_at')
    else:
        for name, *_ in _JOB_INDEXES:
            op.execute(f'DROP INDEX IF EXISTS {name}')
        with op.batch_alter_table('jobs', recreate='always',
                                  table_kwargs={'sqlite_autoincrement': False}) as b:
            b.drop_column('balance_hold_at')
        _create_job_indexes()
    op.drop_index('ix_ledger_entries_resource', table_name='ledger_entries')
    # not a batch rebuild: that would drop the team_balances triggers (SQLite >= 3.35 drops in place)
    op.execute('ALTER TABLE ledger_entries DROP COLUMN carry')
