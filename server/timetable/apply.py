"""Write a parsed timetable into the caller's session: match names, then bulk insert/update/delete.

Everything goes through SQLAlchemy Core statements on the session's connection, so it is part of
the caller's transaction (a rollback undoes all of it) and no ORM object is flushed row by row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import String, Table, bindparam, cast, delete, func, insert, select, update
from sqlalchemy.orm import Session

from ..models import Group, Lesson, Person, Room, School, lesson_groups, lesson_rooms, \
    lesson_teachers, utcnow
from .common import ImportReport, ParsedTimetable

# Keeps IN (...) lists well below SQLite's and PostgreSQL's parameter limits.
CHUNK = 500
# New lessons are written this many at a time (memory: see apply_timetable).
INSERT_BATCH = 10_000
# Past this many new rooms/groups/teachers the notes list them in one line each kind.
NOTE_EACH_UP_TO = 20

_LESSONS: Table = Lesson.__table__  # type: ignore[assignment]
_LINKS: tuple[tuple[str, Table, str], ...] = (
    ("rooms", lesson_rooms, "room_id"),
    ("groups", lesson_groups, "group_id"),
    ("teachers", lesson_teachers, "person_id"),
)


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


class _NameMap:
    """Names of one kind (room codes, group names, teacher codes) to ids, created when new.

    Matching ignores case, so `b204` in a file finds room `B204`; an exact match wins when the
    school has both spellings.
    """

    def __init__(self, session: Session, table: Table, column: str, school_id: int,
                 kind: str, extra: dict[str, Any] | None = None) -> None:
        self.session, self.table, self.column = session, table, column
        self.school_id, self.kind, self.extra = school_id, kind, extra or {}
        self.exact: dict[str, int] = {}
        self.folded: dict[str, int] = {}
        self._cache: dict[tuple[str, ...], frozenset[int]] = {}
        col = table.c[column]
        for row_id, name in session.execute(
                select(table.c.id, col).where(table.c.school_id == school_id, col.is_not(None))):
            self._remember(name, row_id)

    def _remember(self, name: str, row_id: int) -> None:
        self.exact[name] = row_id
        self.folded.setdefault(name.casefold(), row_id)

    def find(self, name: str) -> int | None:
        """The id of `name`, or None when the school does not have it yet."""
        found = self.exact.get(name)
        return found if found is not None else self.folded.get(name.casefold())

    def create_missing(self, names: Iterable[str], report: ImportReport) -> None:
        """Insert the names the school does not have yet (one statement) and note them."""
        new: list[str] = []
        seen: set[str] = set()
        for name in names:
            key = name.casefold()
            if key not in seen and self.find(name) is None:
                seen.add(key)
                new.append(name)
        if not new:
            return
        rows = [{"school_id": self.school_id, self.column: name, **self.extra} for name in new]
        col = self.table.c[self.column]
        for row_id, name in self.session.execute(
                insert(self.table).returning(self.table.c.id, col), rows):
            self._remember(name, row_id)
        if len(new) <= NOTE_EACH_UP_TO:
            report.notes.extend(f"created {self.kind} {name}" for name in sorted(new))
        else:
            shown = ", ".join(sorted(new)[:NOTE_EACH_UP_TO])
            report.notes.append(f"created {len(new)} {self.kind}s: {shown}, ...")

    def ids(self, names: tuple[str, ...]) -> frozenset[int]:
        """The ids of names that exist (after create_missing, all of them)."""
        # Most lessons share their tuple of names with many others: remember the answer.
        found = self._cache.get(names)
        if found is None:
            found = self._cache[names] = frozenset(
                self.exact.get(n) or self.folded[n.casefold()] for n in names)
        return found


def apply_timetable(session: Session, school: School, parsed: ParsedTimetable, *,
                    source_name: str) -> ImportReport:
    """Make the school's lessons of source `source_name` match `parsed` inside `parsed.window`.

    Called through server/timetable/sources.py `apply_to_source`, which decides the window.
    """
    report = ImportReport(notes=list(parsed.notes))
    lessons = parsed.lessons
    report.lessons = sum(1 for lesson in lessons if not lesson.cancelled)
    if parsed.window is None:
        return report

    rooms: Table = Room.__table__  # type: ignore[assignment]
    groups: Table = Group.__table__  # type: ignore[assignment]
    people: Table = Person.__table__  # type: ignore[assignment]
    maps = {
        "rooms": _NameMap(session, rooms, "code", school.id, "room"),
        "groups": _NameMap(session, groups, "name", school.id, "group"),
        "teachers": _NameMap(session, people, "teacher_code", school.id, "teacher",
                             {"display_name": "", "roles": ["teacher"], "active": True,
                              "created_at": utcnow()}),
    }
    for kind, names in (("rooms", (n for l in lessons for n in l.rooms)),
                        ("groups", (n for l in lessons for n in l.groups)),
                        ("teachers", (n for l in lessons for n in l.teachers))):
        maps[kind].create_missing(names, report)

    existing = _load_existing(session, school.id, parsed, source_name)
    wanted_ids = {lesson.source_id for lesson in lessons}

    inserts: list[dict[str, Any]] = []
    insert_links: dict[str, dict[str, frozenset[int]]] = {kind: {} for kind, _, _ in _LINKS}
    updates: list[dict[str, Any]] = []
    relink: dict[str, dict[int, frozenset[int]]] = {kind: {} for kind, _, _ in _LINKS}
    now = utcnow()
    for lesson in lessons:
        links = {kind: maps[kind].ids(getattr(lesson, kind)) for kind, _, _ in _LINKS}
        old = existing.get(lesson.source_id)
        if old is None:
            report.rooms_touched.update(links["rooms"])
            inserts.append({"school_id": school.id, "start": lesson.start, "end": lesson.end,
                            "subject": lesson.subject, "cancelled": lesson.cancelled,
                            "source": source_name, "source_id": lesson.source_id,
                            "updated_at": now})
            for kind in links:
                if links[kind]:
                    insert_links[kind][lesson.source_id] = links[kind]
            if len(inserts) >= INSERT_BATCH:
                # Written as they come: the rows of a large first import are never all in
                # memory at once (the parsed lessons are).
                _insert_batch(session, inserts, insert_links)
                inserts, insert_links = [], {kind: {} for kind, _, _ in _LINKS}
            if lesson.cancelled:
                report.cancelled += 1
            else:
                report.created += 1
            continue
        row_changed = (old["start"] != lesson.start or old["end"] != lesson.end
                       or old["subject"] != lesson.subject or old["cancelled"] != lesson.cancelled)
        links_changed = [kind for kind in links if links[kind] != old[kind]]
        if not row_changed and not links_changed:
            continue
        report.rooms_touched.update(old["rooms"], links["rooms"])
        if row_changed:
            updates.append({"_id": old["id"], "start": lesson.start, "end": lesson.end,
                            "subject": lesson.subject, "cancelled": lesson.cancelled,
                            "updated_at": now})
        else:
            updates.append({"_id": old["id"], "start": old["start"], "end": old["end"],
                            "subject": old["subject"], "cancelled": old["cancelled"],
                            "updated_at": now})
        for kind in links_changed:
            relink[kind][old["id"]] = links[kind]
        if lesson.cancelled and not old["cancelled"]:
            report.cancelled += 1
        else:
            report.updated += 1

    window_start, window_end = parsed.window
    removed = [row["id"] for source_id, row in existing.items()
               if source_id not in wanted_ids and window_start <= row["start"] < window_end]
    report.removed = len(removed)
    for source_id, row in existing.items():
        if source_id not in wanted_ids and window_start <= row["start"] < window_end:
            report.rooms_touched.update(row["rooms"])

    for chunk in _chunks(removed):
        # lesson_rooms/groups/teachers and lesson-scoped exceptions go by ON DELETE CASCADE.
        session.execute(delete(_LESSONS).where(_LESSONS.c.id.in_(chunk)))
    if updates:
        session.execute(
            update(_LESSONS).where(_LESSONS.c.id == bindparam("_id")).values(
                start=bindparam("start"), end=bindparam("end"), subject=bindparam("subject"),
                cancelled=bindparam("cancelled"), updated_at=bindparam("updated_at")),
            updates)
    for kind, table, column in _LINKS:
        changed = list(relink[kind])
        for chunk in _chunks(changed):
            session.execute(delete(table).where(table.c.lesson_id.in_(chunk)))
        rows = [{"lesson_id": lesson_id, column: target}
                for lesson_id, targets in relink[kind].items() for target in targets]
        if rows:
            session.execute(insert(table), rows)
    if inserts:
        _insert_batch(session, inserts, insert_links)
    return report


def _insert_batch(session: Session, inserts: list[dict[str, Any]],
                  insert_links: dict[str, dict[str, frozenset[int]]]) -> None:
    """Insert new lessons and their room/group/teacher links."""
    new_ids = _insert_lessons(session, inserts)
    for kind, table, column in _LINKS:
        rows = [{"lesson_id": new_ids[source_id], column: target}
                for source_id, targets in insert_links[kind].items() for target in targets]
        if rows:
            session.execute(insert(table), rows)


def _insert_lessons(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert lesson rows in one executemany; their ids by source id."""
    # A plain executemany, then one query for the ids, is several times faster than
    # INSERT ... RETURNING for 100k rows (SQLAlchemy renders RETURNING batches one by one).
    session.execute(insert(_LESSONS), rows)
    school_id, source = rows[0]["school_id"], rows[0]["source"]
    found: dict[str, int] = {}
    # By the unique (school, source, source_id) index: a batch's lessons are spread over the
    # whole window (a series is expanded week after week), so a range of starts would read
    # the earlier batches' lessons again.
    for chunk in _chunks([row["source_id"] for row in rows]):
        found.update((source_id, lesson_id) for lesson_id, source_id in session.execute(
            select(_LESSONS.c.id, _LESSONS.c.source_id).where(
                _LESSONS.c.school_id == school_id, _LESSONS.c.source == source,
                _LESSONS.c.source_id.in_(chunk))))
    return found


def _load_existing(session: Session, school_id: int, parsed: ParsedTimetable, source_name: str
                   ) -> dict[str, dict[str, Any]]:
    """The source's lessons that start in the window or carry an id the file mentions."""
    assert parsed.window is not None
    window_start, window_end = parsed.window
    lessons = _LESSONS
    # One row per lesson with its room/group/teacher ids aggregated in SQL: three times fewer
    # rows through the driver than reading the association tables separately.
    postgres = session.get_bind().dialect.name == "postgresql"
    aggregates = []
    for _, table, column in _LINKS:
        target = table.c[column]
        joined = func.string_agg(cast(target, String), ",") if postgres \
            else func.group_concat(target)
        aggregates.append(select(joined).where(table.c.lesson_id == lessons.c.id)
                          .scalar_subquery())
    columns = (lessons.c.id, lessons.c.source_id, lessons.c.start, lessons.c.end,
               lessons.c.subject, lessons.c.cancelled, *aggregates)
    of_source = (lessons.c.school_id == school_id, lessons.c.source == source_name)

    rows: dict[str, dict[str, Any]] = {}
    parse_ids: dict[str | None, frozenset[int]] = {None: frozenset()}

    def keep(result: Any) -> None:
        for lesson_id, source_id, start, end, subject, cancelled, *links in result:
            row = {"id": lesson_id, "start": start, "end": end, "subject": subject,
                   "cancelled": cancelled}
            for (kind, _, _), text in zip(_LINKS, links):
                ids = parse_ids.get(text)
                if ids is None:
                    ids = parse_ids[text] = frozenset(int(i) for i in text.split(","))
                row[kind] = ids
            rows[source_id] = row

    keep(session.execute(select(*columns).where(
        *of_source, lessons.c.start >= window_start, lessons.c.start < window_end)))
    # A lesson moved into the window from outside it: found by its id (usually none on re-import).
    outside = sorted({lesson.source_id for lesson in parsed.lessons} - rows.keys())
    # Skipped when the source has no lessons outside the window (a first import, say).
    if outside and session.scalar(select(func.count(lessons.c.id)).where(
            *of_source, (lessons.c.start < window_start) | (lessons.c.start >= window_end))):
        for chunk in _chunks(outside):
            keep(session.execute(select(*columns).where(*of_source,
                                                        lessons.c.source_id.in_(chunk))))
    return rows


def describe_window(window: tuple[datetime, datetime] | None) -> str:
    """The window as text for notes and the audit log."""
    if window is None:
        return "none"
    return f"{window[0].isoformat()} .. {window[1].isoformat()}"


__all__ = ["apply_timetable", "describe_window"]
