"""policy: compute types, quotas, emergency grants, the record of policy changes; a job's
compute type, adjusted request, QOS, partition, priority and expected start; a project's
default compute type; a team's sampled fair-share factor

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'compute_types',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('gpu_type', sa.String(length=32), nullable=False),
        sa.Column('gpu_count', sa.Integer(), nullable=False),
        sa.Column('cpus', sa.Integer(), nullable=False),
        sa.Column('mem_mb', sa.Integer(), nullable=True),
        sa.Column('partition', sa.String(length=64), nullable=True),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_by', sa.String(length=128), nullable=True),
        sa.CheckConstraint('gpu_count >= 1', name=op.f('ck_compute_types_gpu_count')),
        sa.CheckConstraint('cpus >= 1', name=op.f('ck_compute_types_cpus')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_compute_types')),
        sa.UniqueConstraint('name', name=op.f('uq_compute_types_name')),
    )
    op.create_table(
        'quotas',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('resource', sa.String(length=64), nullable=False),
        sa.Column('value', sa.Integer(), nullable=False),
        sa.Column('updated_by', sa.String(length=128), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint('value >= 0', name=op.f('ck_quotas_value')),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_quotas_team_id_teams'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_quotas_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_quotas')),
        sa.UniqueConstraint('team_id', 'user_id', 'resource', name='uq_quotas_team_user_resource'),
    )
    op.create_index(op.f('ix_quotas_team_id'), 'quotas', ['team_id'], unique=False)
    op.create_table(
        'emergency_grants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('team_id', sa.Integer(), nullable=True),
        sa.Column('until', sa.DateTime(), nullable=True),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('granted_by', sa.String(length=128), nullable=False),
        sa.Column('granted_at', sa.DateTime(), nullable=False),
        sa.Column('revoked_by', sa.String(length=128), nullable=True),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.CheckConstraint('(user_id IS NULL) <> (team_id IS NULL)',
                           name=op.f('ck_emergency_grants_one_subject')),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'],
                                name=op.f('fk_emergency_grants_team_id_teams'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_emergency_grants_user_id_users'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_emergency_grants')),
    )
    op.create_index(op.f('ix_emergency_grants_team_id'), 'emergency_grants', ['team_id'], unique=False)
    op.create_index(op.f('ix_emergency_grants_user_id'), 'emergency_grants', ['user_id'], unique=False)
    op.create_table(
        'policy_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('actor', sa.String(length=128), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_events')),
    )
    op.create_index('ix_policy_events_at', 'policy_events', ['at'], unique=False)
    with op.batch_alter_table('jobs') as b:
        b.add_column(sa.Column('compute_type', sa.String(length=64), nullable=True))
        b.add_column(sa.Column('asked', sa.String(length=128), nullable=True))
        b.add_column(sa.Column('qos', sa.String(length=64), nullable=False, server_default='normal'))
        b.add_column(sa.Column('partition', sa.String(length=64), nullable=True))
        b.add_column(sa.Column('priority', sa.BigInteger(), nullable=True))
        b.add_column(sa.Column('expected_start_at', sa.DateTime(), nullable=True))
        b.add_column(sa.Column('preempted_count', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('projects') as b:
        b.add_column(sa.Column('compute_type', sa.String(length=64), nullable=True))
    with op.batch_alter_table('teams') as b:
        b.add_column(sa.Column('fairshare_factor', sa.Float(), nullable=True))
        b.add_column(sa.Column('usage_share', sa.Float(), nullable=True))
        b.add_column(sa.Column('shares_sampled_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('teams') as b:
        for col in ('shares_sampled_at', 'usage_share', 'fairshare_factor'):
            b.drop_column(col)
    with op.batch_alter_table('projects') as b:
        b.drop_column('compute_type')
    with op.batch_alter_table('jobs') as b:
        for col in ('preempted_count', 'expected_start_at', 'priority', 'partition', 'qos',
                    'asked', 'compute_type'):
            b.drop_column(col)
    op.drop_index('ix_policy_events_at', table_name='policy_events')
    op.drop_table('policy_events')
    op.drop_index(op.f('ix_emergency_grants_user_id'), table_name='emergency_grants')
    op.drop_index(op.f('ix_emergency_grants_team_id'), table_name='emergency_grants')
    op.drop_table('emergency_grants')
    op.drop_index(op.f('ix_quotas_team_id'), table_name='quotas')
    op.drop_table('quotas')
    op.drop_table('compute_types')
