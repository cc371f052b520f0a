"""login and LDAP: user password hash, DN, e-mail, active flag; team LDAP group and fair share

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users') as b:
        b.add_column(sa.Column('password_hash', sa.String(length=255), nullable=True))
        b.add_column(sa.Column('ldap_dn', sa.String(length=512), nullable=True))
        b.add_column(sa.Column('email', sa.String(length=255), nullable=True))
        b.add_column(sa.Column('active', sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table('teams') as b:
        b.add_column(sa.Column('ldap_group', sa.String(length=512), nullable=True))
        b.add_column(sa.Column('fairshare', sa.Integer(), nullable=False, server_default='100'))


def downgrade() -> None:
    with op.batch_alter_table('teams') as b:
        b.drop_column('fairshare')
        b.drop_column('ldap_group')
    with op.batch_alter_table('users') as b:
        b.drop_column('active')
        b.drop_column('email')
        b.drop_column('ldap_dn')
        b.drop_column('password_hash')
