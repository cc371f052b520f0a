"""fund_requests: team administrators and owners request funds, cluster administrators approve
(one deposit in the ledger) or decline; the requesting team may cancel a pending request

Money enters the ledger only through cluster administrators (or a payment provider): before
this, every user owned a personal team and owners could credit it themselves.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'fund_requests',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=False),
        sa.Column('amount_micros', sa.BigInteger(), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('requested_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('decided_by', sa.String(length=128), nullable=True),
        sa.Column('decided_at', sa.DateTime(), nullable=True),
        sa.Column('decision_note', sa.Text(), nullable=True),
        sa.Column('ledger_entry_id', sa.Integer(), nullable=True),
        sa.CheckConstraint("state IN ('pending', 'approved', 'declined', 'cancelled')",
                           name=op.f('ck_fund_requests_state')),
        sa.CheckConstraint('amount_micros > 0', name=op.f('ck_fund_requests_amount')),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_fund_requests_team_id_teams'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_fund_requests')),
    )
    op.create_index('ix_fund_requests_team_id_id', 'fund_requests', ['team_id', 'id'])
    op.create_index('ix_fund_requests_state_id', 'fund_requests', ['state', 'id'])


def downgrade() -> None:
    op.drop_index('ix_fund_requests_state_id', table_name='fund_requests')
    op.drop_index('ix_fund_requests_team_id_id', table_name='fund_requests')
    op.drop_table('fund_requests')
