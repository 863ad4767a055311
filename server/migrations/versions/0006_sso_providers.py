"""sign-in with the school account (OpenID Connect, issue 15)

`sso_providers` (one row per OpenID Provider, the client secret sealed) and
`sso_provider_schools` (whose people may use it); `people.email` (unique, lower-cased: what a
school account is matched on); `schools.password_login` (false: that school's people sign in
only with their school account). Existing schools keep password sign-in.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 07:00:00

"""
from alembic import op
import sqlalchemy as sa
import server.models


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sso_providers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.String(length=500), nullable=False),
    sa.Column('client_id', sa.String(length=255), nullable=False),
    sa.Column('client_secret', sa.Text(), nullable=False),
    sa.Column('username_claim', sa.String(length=32), nullable=False),
    sa.Column('create_accounts', sa.Boolean(), nullable=False),
    sa.Column('created_at', server.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sso_providers')),
    sa.UniqueConstraint('name', name=op.f('uq_sso_providers_name'))
    )
    op.create_table('sso_provider_schools',
    sa.Column('provider_id', sa.Integer(), nullable=False),
    sa.Column('school_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['provider_id'], ['sso_providers.id'],
                            name=op.f('fk_sso_provider_schools_provider_id_sso_providers'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'],
                            name=op.f('fk_sso_provider_schools_school_id_schools'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('provider_id', 'school_id', name=op.f('pk_sso_provider_schools'))
    )
    with op.batch_alter_table('sso_provider_schools', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sso_provider_schools_school_id'), ['school_id'],
                              unique=False)
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email', sa.String(length=254), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_people_email'), ['email'])
    with op.batch_alter_table('schools', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_login', sa.Boolean(), nullable=False,
                                      server_default=sa.true()))


def downgrade():
    with op.batch_alter_table('schools', schema=None) as batch_op:
        batch_op.drop_column('password_login')
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_people_email'), type_='unique')
        batch_op.drop_column('email')
    with op.batch_alter_table('sso_provider_schools', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sso_provider_schools_school_id'))
    op.drop_table('sso_provider_schools')
    op.drop_table('sso_providers')
