"""per-job usage samples (docs/MONITORING.md): running jobs' CPU and memory over time
(``job_usage_points``) and each job's totals and peaks (``job_usage_summaries``)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_usage_points',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('cpu_seconds', sa.Float(), nullable=False),
        sa.Column('cpu_percent', sa.Float(), nullable=True),
        sa.Column('rss_mb', sa.Float(), nullable=False),
        sa.Column('gpu_util_percent', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'],
                                name=op.f('fk_job_usage_points_job_id_jobs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_job_usage_points')),
    )
    op.create_index('ix_job_usage_points_job_at', 'job_usage_points', ['job_id', 'at'],
                    unique=False)
    op.create_table(
        'job_usage_summaries',
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('first_at', sa.DateTime(), nullable=False),
        sa.Column('last_at', sa.DateTime(), nullable=False),
        sa.Column('points', sa.Integer(), nullable=False),
        sa.Column('cpu_seconds', sa.Float(), nullable=False),
        sa.Column('max_cpu_percent', sa.Float(), nullable=True),
        sa.Column('rss_mb', sa.Float(), nullable=False),
        sa.Column('max_rss_mb', sa.Float(), nullable=False),
        sa.Column('max_gpu_util_percent', sa.Float(), nullable=True),
        sa.Column('counters', sa.Text(), nullable=False),
        sa.Column('ended_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'],
                                name=op.f('fk_job_usage_summaries_job_id_jobs'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', name=op.f('pk_job_usage_summaries')),
    )


def downgrade() -> None:
    op.drop_table('job_usage_summaries')
    op.drop_index('ix_job_usage_points_job_at', table_name='job_usage_points')
    op.drop_table('job_usage_points')
