"""change log

`change_log` carries each committed write that can change policies to the other server
processes on SQLite (which has no LISTEN/NOTIFY), with the schools and rooms it touched. It
replaces reading a fingerprint of every school's tables every two seconds. On PostgreSQL the table
stays empty.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-02 07:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('change_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_change_log')),
    sqlite_autoincrement=True
    )


def downgrade():
    op.drop_table('change_log')
