"""Migration 0003: earlier imports become `file` sources that own their lessons (SQLite and
PostgreSQL), and a downgrade gives back revision 0002's schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from server.app import create_app
from server.extensions import db
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema at all)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    with fresh_database("mig") as url:
        yield url


def _app(url: str, tmp_path: Path):
    return create_app({"INSTANCE_PATH": str(tmp_path / "instance"), "DATABASE_URL": url,
                       "SECRET_KEY": "test-secret-key", "TESTING": True})


def _rows(sql: str) -> list[tuple]:
    return [tuple(row) for row in db.session.execute(sa.text(sql))]


def test_earlier_imports_become_file_sources_and_keep_their_lessons(empty_database: str,
                                                                    tmp_path: Path) -> None:
    app = _app(empty_database, tmp_path)
    with app.app_context():
        upgrade(revision="0002")
        db.session.execute(sa.text(
            "INSERT INTO schools (id, slug, name, timezone, aliases, created_at) VALUES "
            "(1, 'a', 'A', 'Europe/Amsterdam', '[]', '2026-11-01 00:00:00'), "
            "(2, 'b', 'B', 'Europe/Amsterdam', '[]', '2026-11-01 00:00:00')"))
        lessons = [(1, "ical", "u1"), (1, "ical", "u2"), (1, "csv", "h:1"), (1, "demo", "d1"),
                   (2, "zermelo", "9"), (2, "manual", "m")]
        for index, (school, source, source_id) in enumerate(lessons, start=1):
            db.session.execute(sa.text(
                "INSERT INTO lessons (id, school_id, start, \"end\", subject, cancelled, source, "
                "source_id, updated_at) VALUES (:id, :school, '2026-11-02 08:00:00', "
                "'2026-11-02 08:50:00', '', false, :source, :sid, '2026-11-01 00:00:00')"),
                {"id": index, "school": school, "source": source, "sid": source_id})
        db.session.execute(sa.text("INSERT INTO rooms (id, school_id, code) VALUES (1, 1, 'B204')"))
        db.session.execute(sa.text("INSERT INTO lesson_rooms (lesson_id, room_id) VALUES (1, 1)"))
        db.session.commit()

        upgrade()

        assert _rows("SELECT school_id, name, kind, format FROM timetable_sources "
                     "ORDER BY school_id, name") == [
            (1, "csv", "file", "csv"), (1, "ical", "file", "ical"), (2, "zermelo", "file",
                                                                     "zermelo")]
        # No lesson and no link was rewritten or lost.
        assert _rows("SELECT id, school_id, source, source_id FROM lessons ORDER BY id") == [
            (i, s, src, sid) for i, (s, src, sid) in enumerate(lessons, start=1)]
        assert _rows("SELECT lesson_id, room_id FROM lesson_rooms") == [(1, 1)]
        assert _rows("SELECT count(*) FROM import_jobs WHERE source_name IS NULL") == [(0,)]

        db.session.commit()  # the reads above hold locks that DROP TABLE would wait for
        downgrade(revision="0002")
        names = sa.inspect(db.engine).get_table_names()
        assert "timetable_sources" not in names
        assert "source_name" not in {c["name"] for c in sa.inspect(db.engine)
                                     .get_columns("import_jobs")}
        assert _rows("SELECT count(*) FROM lessons") == [(len(lessons),)]
        assert _rows("SELECT lesson_id, room_id FROM lesson_rooms") == [(1, 1)]
        db.session.remove()
        db.engine.dispose()


def test_upgrade_of_a_database_without_lessons_makes_no_source(empty_database: str,
                                                               tmp_path: Path) -> None:
    app = _app(empty_database, tmp_path)
    with app.app_context():
        upgrade()
        assert _rows("SELECT count(*) FROM timetable_sources") == [(0,)]
        db.session.remove()
        db.engine.dispose()
