"""Helpers for the timetable tests: import into the test school and read back what is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy import func, select

from server.extensions import db
from server.models import AuditEvent, Group, Lesson, Person, Room, School
from server.timetable import ImportReport, import_timetable_bytes

FIXTURES = Path(__file__).resolve().parents[1] / "server" / "timetable" / "fixtures"
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# The window the iCal fixtures are read in (their lessons lie in September-December 2026).
AUTUMN_2026 = (datetime(2026, 9, 1, tzinfo=timezone.utc),
               datetime(2026, 12, 31, tzinfo=timezone.utc))


@dataclass(frozen=True)
class StoredLesson:
    """A lesson as the database holds it, with names instead of ids."""

    source_id: str
    start: datetime
    end: datetime
    rooms: tuple[str, ...]
    groups: tuple[str, ...]
    teachers: tuple[str, ...]
    subject: str
    cancelled: bool


class Importer:
    """Imports files into school `test` the way the CLI does: commit on success, else rollback."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def run(self, data: bytes | str, filename: str, fmt: str | None = None, *,
            window: tuple[datetime, datetime] | None = AUTUMN_2026,
            now: datetime | None = None, source: str | None = None) -> ImportReport:
        """Import and commit; a TimetableError rolls back and propagates."""
        if isinstance(data, str):
            data = data.encode()
        from server.timetable import detect_format
        try:
            detected = fmt or detect_format(data, filename)
        except Exception:  # noqa: BLE001 - the import itself reports it
            detected = None
        if window is AUTUMN_2026 and detected != "ical":
            # The default is the iCal fixtures' expansion window; other files speak for the
            # range of their own lessons unless a test asks for a window.
            window = None
        with self.app.app_context():
            school = db.session.scalar(select(School).where(School.slug == "test"))
            try:
                report = import_timetable_bytes(school, data, filename, fmt, actor="test",
                                                window=window, now=now, source_name=source)
            except Exception:
                db.session.rollback()
                raise
            db.session.commit()
            return report

    def fixture(self, name: str, fmt: str | None = None, **kwargs: object) -> ImportReport:
        """Import a file from fixtures/."""
        data = (FIXTURES / name).read_bytes()
        return self.run(data, name, fmt, **kwargs)  # type: ignore[arg-type]

    def lessons(self, source: str | None = None) -> list[StoredLesson]:
        """Stored lessons, ordered by start then source id."""
        with self.app.app_context():
            query = select(Lesson).order_by(Lesson.start, Lesson.source_id)
            if source:
                query = query.where(Lesson.source == source)
            return [StoredLesson(l.source_id, l.start, l.end, tuple(r.code for r in l.rooms),
                                 tuple(g.name for g in l.groups),
                                 tuple(sorted(p.teacher_code or "" for p in l.teachers)),
                                 l.subject, l.cancelled)
                    for l in db.session.scalars(query)]

    def snapshot(self) -> dict[str, object]:
        """Everything an import may touch, to show that a failed one changed nothing."""
        with self.app.app_context():
            def count(model: type) -> int:
                return db.session.scalar(select(func.count()).select_from(model))
            return {"lessons": [(l.source_id, l.start, l.end, l.cancelled, l.subject)
                                for l in db.session.scalars(select(Lesson).order_by(Lesson.id))],
                    "rooms": count(Room), "groups": count(Group), "people": count(Person),
                    "audit": count(AuditEvent)}


def local(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """A Europe/Amsterdam wall-clock time as aware UTC (how lessons are stored)."""
    return datetime(year, month, day, hour, minute, tzinfo=AMSTERDAM).astimezone(timezone.utc)
