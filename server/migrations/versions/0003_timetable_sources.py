"""timetable sources

Every school's earlier imports become sources of kind `file`: one per format it imported
(`lessons.source` is `ical`, `zermelo`, `untis` or `csv`), named after the format, so the
lessons they brought stay theirs and the next import of that format replaces them as before.
Lessons of `demo` and `manual` belong to no source.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:05:00

"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa
import server.models


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# The lesson sources the importer wrote before this revision (SPEC §4 formats).
_IMPORTED_FORMATS = ('ical', 'zermelo', 'untis', 'csv')


def upgrade():
    sources = op.create_table('timetable_sources',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('school_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=True),
    sa.Column('address', sa.String(length=2000), nullable=True),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('credentials', sa.LargeBinary(), nullable=True),
    sa.Column('every_minutes', sa.Integer(), nullable=True),
    sa.Column('days_back', sa.Integer(), nullable=False),
    sa.Column('days_ahead', sa.Integer(), nullable=False),
    sa.Column('created_at', server.models.UTCDateTime(), nullable=False),
    sa.Column('last_attempt_at', server.models.UTCDateTime(), nullable=True),
    sa.Column('last_success_at', server.models.UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_report', sa.JSON(), nullable=True),
    sa.Column('sync_state', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], name=op.f('fk_timetable_sources_school_id_schools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_timetable_sources')),
    sa.UniqueConstraint('school_id', 'name', name=op.f('uq_timetable_sources_school_id_name'))
    )
    with op.batch_alter_table('timetable_sources', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_timetable_sources_school_id'), ['school_id'], unique=False)

    # A plain ADD COLUMN on SQLite too (no table rebuild: rebuilding import_jobs is harmless,
    # but a rebuild of a table others reference would cascade deletes with foreign_keys=ON).
    op.add_column('import_jobs', sa.Column('source_name', sa.String(length=32), nullable=True))

    lessons = sa.table('lessons', sa.column('school_id', sa.Integer()),
                       sa.column('source', sa.String()))
    bind = op.get_bind()
    found = bind.execute(sa.select(lessons.c.school_id, lessons.c.source).distinct()
                         .where(lessons.c.source.in_(_IMPORTED_FORMATS))
                         .order_by(lessons.c.school_id, lessons.c.source)).all()
    now = datetime.now(timezone.utc)
    if found:
        op.bulk_insert(sources, [
            {'school_id': school_id, 'name': source, 'kind': 'file', 'format': source,
             'address': None, 'options': {}, 'credentials': None, 'every_minutes': None,
             'days_back': 7, 'days_ahead': 56, 'created_at': now}
            for school_id, source in found])


def downgrade():
    # The lessons keep their `source` values (the format names of before), so nothing is lost
    # for file sources named after their format; lessons of other sources keep their names.
    with op.batch_alter_table('import_jobs', schema=None) as batch_op:
        batch_op.drop_column('source_name')
    with op.batch_alter_table('timetable_sources', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_timetable_sources_school_id'))

    op.drop_table('timetable_sources')
