"""dashboard sessions

`dashboard_sessions` holds one row per signed-in dashboard session (the SHA-256 of its cookie's
token, the person, when it began and was last used): signing out deletes the row, and a session
idle past LESFOCUS_DASHBOARD_IDLE_MINUTES ends. Sessions of the previous release carry no token
and end at the upgrade: everyone signs in once more.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:05:00

"""
from alembic import op
import sqlalchemy as sa
import server.models


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('dashboard_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('created_at', server.models.UTCDateTime(), nullable=False),
    sa.Column('last_seen_at', server.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'],
                            name=op.f('fk_dashboard_sessions_person_id_people'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_sessions'))
    )
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dashboard_sessions_person_id'), ['person_id'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dashboard_sessions_person_id'))
    op.drop_table('dashboard_sessions')
