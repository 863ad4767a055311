"""What every timetable format parses into, and the helpers the parsers share."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# A school's whole-year export is a few MB; anything much larger is not a timetable.
MAX_FILE_BYTES = 64 * 1024 * 1024
# More occurrences than a large school has in a year stops the import instead of the server.
MAX_OCCURRENCES = 1_000_000
# Column widths of server/models.py, checked here so SQLite and PostgreSQL refuse the same names.
MAX_ROOM = 64
MAX_GROUP = 64
MAX_TEACHER = 32
MAX_SUBJECT = 100
MAX_SOURCE_ID = 255
# Lessons before 2000 or after 2100 are typing errors (or hostile), not a timetable.
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)

_NAME_SPLIT = re.compile(r"\s*[,;]\s*")


class TimetableError(ValueError):
    """A timetable file that cannot be imported; the message names the place and the reason."""


@dataclass
class ImportReport:
    """What one import changed, as `lesfocus timetable import` prints it."""

    created: int = 0
    updated: int = 0
    cancelled: int = 0
    removed: int = 0
    lessons: int = 0
    notes: list[str] = field(default_factory=list)
    # Not part of the printed counts: the window that was replaced, events left out of it.
    window: tuple[datetime, datetime] | None = None
    outside: int = 0
    # The rooms whose lessons the import wrote: the rooms each changed lesson was in and is in
    # now (the change feed's word to the policy cache, server/changes.py).
    rooms_touched: set[int] = field(default_factory=set)

    def counts(self) -> dict[str, int]:
        """The five figures of SPEC §4, in its order."""
        return {"created": self.created, "updated": self.updated, "cancelled": self.cancelled,
                "removed": self.removed, "lessons": self.lessons}


@dataclass(slots=True)  # not frozen: frozen __init__ costs ~1 µs per field on 100k occurrences
class ParsedLesson:
    """One lesson occurrence read from a file, not yet matched to the database."""

    source_id: str
    start: datetime  # aware UTC
    end: datetime  # aware UTC
    rooms: tuple[str, ...]
    groups: tuple[str, ...]
    teachers: tuple[str, ...]
    subject: str
    cancelled: bool
    place: str  # "line 12", "record 7", "event UID x": for messages about this lesson


@dataclass
class ParsedTimetable:
    """A whole file, parsed and checked: the lessons and the time window the file speaks for."""

    source: str
    lessons: list[ParsedLesson]
    # The range the file declares (an iCalendar expansion window, a WebUntis request), or None;
    # server/timetable/sources.py decides the window an import replaces from it.
    window: tuple[datetime, datetime] | None
    notes: list[str] = field(default_factory=list)
    # Events the parser saw that have no occurrence inside its declared window.
    outside: int = 0


def school_zone(name: str) -> tzinfo:
    """The school's timezone, or a TimetableError when the school's setting is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TimetableError(f"the school's timezone {name!r} is unknown") from None


def decode_utf8(data: bytes) -> str:
    """The file as text; a non-UTF-8 file is refused with the line of the first bad byte."""
    if data.startswith(b"\xef\xbb\xbf"):  # Excel writes a byte-order mark
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise TimetableError(f"line {line}: the file is not UTF-8 text (byte {err.start + 1})") \
            from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise TimetableError(f"line {line}: the file contains a NUL character (binary data?)")
    return text


def split_names(value: str) -> tuple[str, ...]:
    """Names in one field, separated by commas or semicolons; empty parts dropped, order kept."""
    names: list[str] = []
    for part in _NAME_SPLIT.split(value.strip()):
        part = part.strip()
        if part and part not in names:
            names.append(part)
    return tuple(names)


def clean_names(values: object, what: str, limit: int, place: str) -> tuple[str, ...]:
    """Checked, de-duplicated names of rooms/groups/teachers; refuses non-strings and long names."""
    if values is None:
        return ()
    if not isinstance(values, (list, tuple)):
        raise TimetableError(f"{place}: {what} must be a list of names")
    names: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise TimetableError(f"{place}: {what} must be a list of names, found {value!r:.40}")
        name = " ".join(value.split())
        if not name:
            continue
        if len(name) > limit:
            raise TimetableError(f"{place}: {what} name {name[:40]!r}... is longer than {limit} "
                                 f"characters")
        if name not in names:
            names.append(name)
    return tuple(names)


def clean_subject(value: object, place: str) -> str:
    """The subject as stored: trimmed, at most MAX_SUBJECT characters (longer text is cut)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TimetableError(f"{place}: subject must be text, found {value!r:.40}")
    return " ".join(value.split())[:MAX_SUBJECT]


def check_times(start: datetime, end: datetime, place: str) -> None:
    """Refuse a lesson that ends before it starts or lies outside 2000..2100."""
    if end <= start:
        raise TimetableError(f"{place}: the lesson ends ({end.isoformat()}) at or before it starts "
                             f"({start.isoformat()})")
    if start < EARLIEST or end > LATEST:
        raise TimetableError(f"{place}: the date {start.date().isoformat()} is outside 2000-2100")


_ISO_DAY = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_DUTCH_DAY = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})$")


def parse_day(value: str) -> date:
    """A day written `2026-12-01` or the Dutch way (`1-12-2026`, `01/12/2026`, `1.12.2026`).

    Day-first only: a Dutch spreadsheet never writes the month first, and guessing would turn
    3 December into 12 March.
    """
    text = value.strip()
    iso, dutch = _ISO_DAY.match(text), _DUTCH_DAY.match(text)
    if iso:
        year, month, day = int(iso[1]), int(iso[2]), int(iso[3])
    elif dutch:
        day, month, year = int(dutch[1]), int(dutch[2]), int(dutch[3])
    else:
        raise ValueError(f"{text[:40]!r} is not a date (YYYY-MM-DD or DD-MM-YYYY)")
    try:
        return date(year, month, day)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a valid date") from None


def local_to_utc(day: date, at: time, zone: tzinfo) -> datetime:
    """A school-local wall-clock time as aware UTC (DST gaps resolve as zoneinfo does, fold=0)."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(timezone.utc)


def stable_hash(*parts: str) -> str:
    """A short stable id for rows that carry none (same inputs, same id, across runs)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def check_source_id(value: str, place: str) -> str:
    """A source id that fits the column: long ids are replaced by their hash (still stable)."""
    if len(value) <= MAX_SOURCE_ID:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def window_of(lessons: list[ParsedLesson]) -> tuple[datetime, datetime] | None:
    """The smallest window holding every lesson: min start .. max end."""
    if not lessons:
        return None
    return min(lesson.start for lesson in lessons), max(lesson.end for lesson in lessons)


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 event`, `2 events`."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def unique_lessons(lessons: list[ParsedLesson], *, conflicts_are_errors: bool
                   ) -> tuple[list[ParsedLesson], list[str]]:
    """One lesson per source id: exact repeats are dropped; different ones are an error or the
    later one wins (for sources that send new versions of the same appointment)."""
    seen: dict[str, int] = {}
    result: list[ParsedLesson] = []
    repeats = replaced = 0
    notes: list[str] = []
    for lesson in lessons:
        index = seen.get(lesson.source_id)
        if index is None:
            seen[lesson.source_id] = len(result)
            result.append(lesson)
            continue
        earlier = result[index]
        if _same_content(earlier, lesson):
            repeats += 1
        elif conflicts_are_errors:
            raise TimetableError(f"{lesson.place}: the same lesson as {earlier.place} (id "
                                 f"{lesson.source_id!r}) with different details; give each row "
                                 f"its own id or remove one")
        else:
            result[index] = lesson
            replaced += 1
            if replaced <= 5:
                notes.append(f"{lesson.place} replaces {earlier.place} "
                             f"(same id {lesson.source_id!r})")
    if repeats:
        notes.append(f"ignored {plural(repeats, 'repeated lesson')}")
    if replaced > 5:
        notes.append(f"{replaced} lessons in all replaced an earlier record with the same id")
    return result, notes


def _same_content(a: ParsedLesson, b: ParsedLesson) -> bool:
    return (a.start, a.end, a.rooms, a.groups, a.teachers, a.subject, a.cancelled) == \
        (b.start, b.end, b.rooms, b.groups, b.teachers, b.subject, b.cancelled)
