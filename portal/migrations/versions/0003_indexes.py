"""indexes for the heavy pages: ledger (team_id, created_at) and (team_id, amount_micros) — the
balance SUM is an index-only scan —, jobs (project_id, id) for a project's newest jobs and
jobs (project_id, state, id) for the per-project job counts of the team page (index-only)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_ledger_entries_team_created', 'ledger_entries', ['team_id', 'created_at'])
    op.create_index('ix_ledger_entries_team_amount', 'ledger_entries', ['team_id', 'amount_micros'])
    op.create_index('ix_jobs_project_id_id', 'jobs', ['project_id', 'id'])
    op.create_index('ix_jobs_project_state', 'jobs', ['project_id', 'state', 'id'])
    # jobs (state): ix_jobs_state exists since 0001


def downgrade() -> None:
    op.drop_index('ix_jobs_project_state', table_name='jobs')
    op.drop_index('ix_jobs_project_id_id', table_name='jobs')
    op.drop_index('ix_ledger_entries_team_amount', table_name='ledger_entries')
    op.drop_index('ix_ledger_entries_team_created', table_name='ledger_entries')
