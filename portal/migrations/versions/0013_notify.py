"""users' notifications (docs/MONITORING.md): each user's choice per kind
(``notify_settings``), the outbox of notifications decided, one per (kind, subject, user)
(``notifications``), and the teams' low-balance crossings (``notify_team_balance``)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

KINDS = "'job_ended', 'job_failed', 'job_cancelled', 'workspace_idle', 'low_balance'"
STATES = "'queued', 'sending', 'sent', 'failed', 'skipped'"


def upgrade() -> None:
    op.create_table(
        'notify_settings',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint(f"kind IN ({KINDS})", name=op.f('ck_notify_settings_kind')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_notify_settings_user_id_users'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'kind', name=op.f('pk_notify_settings')),
    )
    op.create_table(
        'notifications',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('subject', sa.String(length=128), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=255), nullable=True),
        sa.Column('title', sa.String(length=255), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
        sa.Column('sent_at', sa.DateTime(), nullable=True),
        sa.CheckConstraint(f"kind IN ({KINDS})", name=op.f('ck_notifications_kind')),
        sa.CheckConstraint(f"status IN ({STATES})", name=op.f('ck_notifications_status')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_notifications_user_id_users'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
        sa.UniqueConstraint('kind', 'subject', 'user_id',
                            name='uq_notifications_kind_subject_user'),
    )
    op.create_index('ix_notifications_status_next', 'notifications',
                    ['status', 'next_attempt_at'], unique=False)
    op.create_index('ix_notifications_user_id_id', 'notifications', ['user_id', 'id'],
                    unique=False)
    op.create_table(
        'notify_team_balance',
        sa.Column('team_id', sa.Integer(), nullable=False),
        sa.Column('low', sa.Boolean(), nullable=False),
        sa.Column('crossings', sa.Integer(), nullable=False),
        sa.Column('changed_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'],
                                name=op.f('fk_notify_team_balance_team_id_teams'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('team_id', name=op.f('pk_notify_team_balance')),
    )


def downgrade() -> None:
    op.drop_table('notify_team_balance')
    op.drop_index('ix_notifications_user_id_id', table_name='notifications')
    op.drop_index('ix_notifications_status_next', table_name='notifications')
    op.drop_table('notifications')
    op.drop_table('notify_settings')
