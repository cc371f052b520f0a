"""job shapes: sweeps (Slurm job arrays: task count, throttle, values) and multi-node jobs
(nodes, rendezvous port) on ``jobs``; their tasks and nodes in ``job_parts``

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_parts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('index', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('params', sa.Text(), nullable=True),
        sa.Column('slurm_id', sa.BigInteger(), nullable=True),
        sa.Column('node', sa.String(length=128), nullable=True),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=True),
        sa.Column('ended_at', sa.DateTime(), nullable=True),
        sa.Column('exit_code', sa.Integer(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('results_sha', sa.String(length=64), nullable=True),
        sa.Column('results_message', sa.Text(), nullable=True),
        sa.Column('cost_micros', sa.BigInteger(), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(), nullable=True),
        sa.Column('cancel_requested_at', sa.DateTime(), nullable=True),
        sa.CheckConstraint("kind IN ('task', 'node')", name=op.f('ck_job_parts_kind')),
        sa.CheckConstraint("state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
                           name=op.f('ck_job_parts_state')),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_parts_job_id_jobs'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_job_parts')),
        sa.UniqueConstraint('job_id', 'kind', 'index', name='uq_job_parts_job_kind_index'),
    )
    op.create_index(op.f('ix_job_parts_job_id'), 'job_parts', ['job_id'], unique=False)
    with op.batch_alter_table('jobs') as b:
        b.add_column(sa.Column('task_count', sa.Integer(), nullable=True))
        b.add_column(sa.Column('max_parallel', sa.Integer(), nullable=True))
        b.add_column(sa.Column('sweep', sa.Text(), nullable=True))
        b.add_column(sa.Column('nodes', sa.Integer(), nullable=False, server_default='1'))
        b.add_column(sa.Column('master_port', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as b:
        for col in ('master_port', 'nodes', 'sweep', 'max_parallel', 'task_count'):
            b.drop_column(col)
    op.drop_index(op.f('ix_job_parts_job_id'), table_name='job_parts')
    op.drop_table('job_parts')
