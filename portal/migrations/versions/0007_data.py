"""data: data repositories (datasets, models) with numbered versions of content-addressed files,
sharing, resumable uploads, job input bindings, kept job outputs, continue, team storage quotas

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'data_repos',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('public', sa.Boolean(), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('next_version', sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('dataset', 'model')", name=op.f('ck_data_repos_kind')),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_data_repos_team_id_teams'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_data_repos')),
        sa.UniqueConstraint('team_id', 'name', name='uq_data_repos_team_name'),
    )
    op.create_index(op.f('ix_data_repos_team_id'), 'data_repos', ['team_id'])
    op.create_table(
        'data_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('repo_id', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('file_count', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('source', sa.String(length=255), nullable=False),
        sa.Column('source_job_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['repo_id'], ['data_repos.id'],
                                name=op.f('fk_data_versions_repo_id_data_repos'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_data_versions')),
        sa.UniqueConstraint('repo_id', 'number', name='uq_data_versions_repo_number'),
    )
    op.create_index(op.f('ix_data_versions_repo_id'), 'data_versions', ['repo_id'])
    op.create_table(
        'data_files',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version_id', sa.Integer(), nullable=False),
        sa.Column('path', sa.String(length=1024), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['version_id'], ['data_versions.id'],
                                name=op.f('fk_data_files_version_id_data_versions'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_data_files')),
        sa.UniqueConstraint('version_id', 'path', name='uq_data_files_version_path'),
    )
    op.create_index(op.f('ix_data_files_version_id'), 'data_files', ['version_id'])
    op.create_index('ix_data_files_sha256', 'data_files', ['sha256'])
    op.create_table(
        'data_shares',
        sa.Column('repo_id', sa.Integer(), nullable=False),
        sa.Column('team_id', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['repo_id'], ['data_repos.id'],
                                name=op.f('fk_data_shares_repo_id_data_repos'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_data_shares_team_id_teams'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('repo_id', 'team_id', name=op.f('pk_data_shares')),
    )
    op.create_index(op.f('ix_data_shares_team_id'), 'data_shares', ['team_id'])
    op.create_table(
        'data_uploads',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('repo_id', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('manifest', sa.Text(), nullable=False),
        sa.Column('total_bytes', sa.BigInteger(), nullable=False),
        sa.Column('source', sa.String(length=255), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('version_number', sa.Integer(), nullable=True),
        sa.CheckConstraint("state IN ('open', 'committed', 'aborted')", name=op.f('ck_data_uploads_state')),
        sa.ForeignKeyConstraint(['repo_id'], ['data_repos.id'],
                                name=op.f('fk_data_uploads_repo_id_data_repos'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_data_uploads')),
    )
    op.create_index(op.f('ix_data_uploads_repo_id'), 'data_uploads', ['repo_id'])
    op.create_table(
        'job_inputs',
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('slot', sa.Integer(), nullable=False),
        sa.Column('version_id', sa.Integer(), nullable=True),
        sa.Column('source_job_id', sa.Integer(), nullable=True),
        sa.Column('label', sa.String(length=255), nullable=False),
        sa.CheckConstraint('slot >= 0 AND slot <= 4', name=op.f('ck_job_inputs_slot')),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_inputs_job_id_jobs'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', 'slot', name=op.f('pk_job_inputs')),
    )
    op.create_index('ix_job_inputs_version_id', 'job_inputs', ['version_id'])
    op.create_index('ix_job_inputs_source_job_id', 'job_inputs', ['source_job_id'])
    with op.batch_alter_table('teams') as b:
        b.add_column(sa.Column('storage_quota_bytes', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('projects') as b:
        b.add_column(sa.Column('inputs', sa.Text(), nullable=True))
    with op.batch_alter_table('jobs') as b:
        b.add_column(sa.Column('output_state', sa.String(length=16), nullable=False,
                               server_default='none'))
        b.add_column(sa.Column('output_bytes', sa.BigInteger(), nullable=True))
        b.add_column(sa.Column('output_files', sa.Integer(), nullable=True))
        b.add_column(sa.Column('output_kept_at', sa.DateTime(), nullable=True))
        b.add_column(sa.Column('output_deleted_at', sa.DateTime(), nullable=True))
        b.add_column(sa.Column('continue_from', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as b:
        for col in ('continue_from', 'output_deleted_at', 'output_kept_at', 'output_files',
                    'output_bytes', 'output_state'):
            b.drop_column(col)
    with op.batch_alter_table('projects') as b:
        b.drop_column('inputs')
    with op.batch_alter_table('teams') as b:
        b.drop_column('storage_quota_bytes')
    for table in ('job_inputs', 'data_uploads', 'data_shares', 'data_files', 'data_versions',
                  'data_repos'):
        op.drop_table(table)
