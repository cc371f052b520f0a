"""cluster and node samples, usage rollups (docs/MONITORING.md, portal/db/monitoring_models.py)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'cluster_samples',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('step', sa.Integer(), nullable=False),
        sa.Column('bucket', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('samples', sa.Integer(), nullable=False),
        sa.Column('jobs_running', sa.Float(), nullable=True),
        sa.Column('jobs_running_max', sa.Integer(), nullable=True),
        sa.Column('jobs_pending', sa.Float(), nullable=True),
        sa.Column('jobs_pending_max', sa.Integer(), nullable=True),
        sa.Column('cpus_alloc', sa.Float(), nullable=True),
        sa.Column('cpus_alloc_max', sa.Integer(), nullable=True),
        sa.Column('cpus_total', sa.Integer(), nullable=True),
        sa.Column('mem_alloc_mb', sa.Float(), nullable=True),
        sa.Column('mem_alloc_max_mb', sa.BigInteger(), nullable=True),
        sa.Column('mem_total_mb', sa.BigInteger(), nullable=True),
        sa.Column('nodes_total', sa.Integer(), nullable=True),
        sa.Column('nodes_down', sa.Integer(), nullable=True),
        sa.Column('storage_bytes', sa.BigInteger(), nullable=True),
        sa.Column('gpus', sa.Text(), nullable=True),
        sa.Column('note', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_cluster_samples')),
        sa.UniqueConstraint('step', 'bucket', name='uq_cluster_samples_step_bucket'),
    )
    op.create_table(
        'cluster_nodes',
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('state', sa.String(length=32), nullable=False),
        sa.Column('flags', sa.String(length=255), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('partitions', sa.String(length=255), nullable=False),
        sa.Column('available', sa.Boolean(), nullable=False),
        sa.Column('gpus', sa.Text(), nullable=False),
        sa.Column('cpus', sa.Integer(), nullable=False),
        sa.Column('alloc_cpus', sa.Integer(), nullable=False),
        sa.Column('cpu_load', sa.Float(), nullable=True),
        sa.Column('real_memory_mb', sa.BigInteger(), nullable=False),
        sa.Column('alloc_memory_mb', sa.BigInteger(), nullable=False),
        sa.Column('last_heard', sa.DateTime(), nullable=True),
        sa.Column('responding_at', sa.DateTime(), nullable=True),
        sa.Column('seen_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_cluster_nodes')),
    )
    op.create_table(
        'usage_days',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('grain', sa.String(length=8), nullable=False),
        sa.Column('day', sa.Integer(), nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('gpu_type', sa.String(length=64), nullable=False),
        sa.Column('minutes', sa.BigInteger(), nullable=False),
        sa.Column('micros', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_usage_days_team_id_teams'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_days')),
        sa.UniqueConstraint('grain', 'day', 'team_id', 'project_id', 'user_id', 'kind', 'gpu_type',
                            name='uq_usage_days_key'),
    )
    op.create_index('ix_usage_days_grain_team_day', 'usage_days', ['grain', 'team_id', 'day'],
                    unique=False)
    op.create_index('ix_usage_days_grain_user_day', 'usage_days', ['grain', 'user_id', 'day'],
                    unique=False)
    op.create_table(
        'usage_jobs',
        sa.Column('job_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('ended_day', sa.Integer(), nullable=True),
        sa.Column('started_day', sa.Integer(), nullable=True),
        sa.Column('wait_s', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_usage_jobs_team_id_teams'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', name=op.f('pk_usage_jobs')),
    )
    for name, cols in (('ix_usage_jobs_ended', ['ended_day', 'state']),
                       ('ix_usage_jobs_started', ['started_day', 'wait_s']),
                       ('ix_usage_jobs_team_ended', ['team_id', 'ended_day', 'state']),
                       ('ix_usage_jobs_team_started', ['team_id', 'started_day', 'wait_s']),
                       ('ix_usage_jobs_user_ended', ['user_id', 'ended_day', 'state']),
                       ('ix_usage_jobs_user_started', ['user_id', 'started_day', 'wait_s'])):
        op.create_index(name, 'usage_jobs', cols, unique=False)


def downgrade() -> None:
    for name in ('ix_usage_jobs_user_started', 'ix_usage_jobs_user_ended',
                 'ix_usage_jobs_team_started', 'ix_usage_jobs_team_ended', 'ix_usage_jobs_started',
                 'ix_usage_jobs_ended'):
        op.drop_index(name, table_name='usage_jobs')
    op.drop_table('usage_jobs')
    op.drop_index('ix_usage_days_grain_user_day', table_name='usage_days')
    op.drop_index('ix_usage_days_grain_team_day', table_name='usage_days')
    op.drop_table('usage_days')
    op.drop_table('cluster_nodes')
    op.drop_table('cluster_samples')
