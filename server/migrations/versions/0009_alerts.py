"""alert incidents

`alert_incidents` holds one row per incident IT is mailed about (a gateway offline during a
lesson, a stale or expired policy on a gateway, a timetable source failing for an hour): when it
was noticed, confirmed and resolved, and when its two e-mails went out (server/alerts.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:00:00

"""
from alembic import op
import sqlalchemy as sa
import server.models


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('alert_incidents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('school_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('subject_id', sa.String(length=36), nullable=False),
    sa.Column('subject_name', sa.String(length=200), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('noticed_at', server.models.UTCDateTime(), nullable=False),
    sa.Column('confirmed_at', server.models.UTCDateTime(), nullable=True),
    sa.Column('resolved_at', server.models.UTCDateTime(), nullable=True),
    sa.Column('opened_mail_at', server.models.UTCDateTime(), nullable=True),
    sa.Column('resolved_mail_at', server.models.UTCDateTime(), nullable=True),
    sa.Column('mail_failures', sa.Integer(), nullable=False),
    sa.Column('last_mail_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'],
                            name=op.f('fk_alert_incidents_school_id_schools'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_incidents'))
    )
    with op.batch_alter_table('alert_incidents', schema=None) as batch_op:
        batch_op.create_index('ix_alert_incidents_open', ['kind', 'subject_id', 'resolved_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_alert_incidents_school_id'), ['school_id'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('alert_incidents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alert_incidents_school_id'))
        batch_op.drop_index('ix_alert_incidents_open')
    op.drop_table('alert_incidents')
