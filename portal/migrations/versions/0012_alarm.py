"""alarms (docs/MONITORING.md): alarms (one open per key), the mail about them, the most GPUs
each node was seen with

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

OPEN = sa.text('resolved_at IS NULL')


def upgrade() -> None:
    op.create_table(
        'alarms',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=300), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=True),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('opened_at', sa.DateTime(), nullable=False),
        sa.Column('resolved_at', sa.DateTime(), nullable=True),
        sa.Column('resolution', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_alarms_team_id_teams'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_alarms')),
    )
    op.create_index('uq_alarms_open_key', 'alarms', ['key'], unique=True,
                    sqlite_where=OPEN, postgresql_where=OPEN)
    op.create_index('ix_alarms_opened_at', 'alarms', ['opened_at', 'id'], unique=False)
    op.create_index(op.f('ix_alarms_team_id'), 'alarms', ['team_id'], unique=False)
    op.create_table(
        'alarm_mails',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('alarm_id', sa.Integer(), nullable=False),
        sa.Column('event', sa.String(length=16), nullable=False),
        sa.Column('to_addr', sa.String(length=255), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('claimed_at', sa.DateTime(), nullable=True),
        sa.Column('next_try_at', sa.DateTime(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('sent_at', sa.DateTime(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.CheckConstraint("event IN ('opened', 'resolved')", name=op.f('ck_alarm_mails_event')),
        sa.CheckConstraint("state IN ('pending', 'sent', 'failed')", name=op.f('ck_alarm_mails_state')),
        sa.ForeignKeyConstraint(['alarm_id'], ['alarms.id'],
                                name=op.f('fk_alarm_mails_alarm_id_alarms'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_alarm_mails')),
        sa.UniqueConstraint('alarm_id', 'event', 'to_addr', name='uq_alarm_mails_alarm_event_to'),
    )
    op.create_index(op.f('ix_alarm_mails_alarm_id'), 'alarm_mails', ['alarm_id'], unique=False)
    op.create_index('ix_alarm_mails_state_id', 'alarm_mails', ['state', 'id'], unique=False)
    op.create_table(
        'alarm_node_gpus',
        sa.Column('node', sa.String(length=128), nullable=False),
        sa.Column('gpu_type', sa.String(length=32), nullable=False),
        sa.Column('most', sa.Integer(), nullable=False),
        sa.Column('seen_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('node', 'gpu_type', name=op.f('pk_alarm_node_gpus')),
    )


def downgrade() -> None:
    op.drop_table('alarm_node_gpus')
    op.drop_index('ix_alarm_mails_state_id', table_name='alarm_mails')
    op.drop_index(op.f('ix_alarm_mails_alarm_id'), table_name='alarm_mails')
    op.drop_table('alarm_mails')
    op.drop_index(op.f('ix_alarms_team_id'), table_name='alarms')
    op.drop_index('ix_alarms_opened_at', table_name='alarms')
    op.drop_index('uq_alarms_open_key', table_name='alarms')
    op.drop_table('alarms')
