"""workspaces: jobs of kind "workspace" (JupyterLab through the portal), their last proxied
activity and idle reminder; the idle policy and caps (cluster row + team overrides); a job's
cores and memory (CPU-only jobs)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as b:
        b.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='task'))
        b.add_column(sa.Column('last_activity_at', sa.DateTime(), nullable=True))
        b.add_column(sa.Column('reminded_at', sa.DateTime(), nullable=True))
        b.add_column(sa.Column('cpus', sa.Integer(), nullable=False, server_default='1'))
        b.add_column(sa.Column('mem_mb', sa.Integer(), nullable=True))
    op.create_table(
        'workspace_policies',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=True),
        sa.Column('idle_seconds', sa.Integer(), nullable=True),
        sa.Column('remind_seconds', sa.Integer(), nullable=True),
        sa.Column('auto_stop', sa.Boolean(), nullable=True),
        sa.Column('max_per_user', sa.Integer(), nullable=True),
        sa.Column('max_gpus', sa.Integer(), nullable=True),
        sa.Column('updated_by', sa.String(length=128), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'],
                                name=op.f('fk_workspace_policies_team_id_teams'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_workspace_policies')),
        sa.UniqueConstraint('team_id', name='uq_workspace_policies_team_id'),
    )


def downgrade() -> None:
    op.drop_table('workspace_policies')
    with op.batch_alter_table('jobs') as b:
        for col in ('mem_mb', 'cpus', 'reminded_at', 'last_activity_at', 'kind'):
            b.drop_column(col)
