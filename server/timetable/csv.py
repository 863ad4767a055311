"""CSV timetables: one lesson per row, with a header naming the columns (see docs/timetables.md).

Columns (case ignored; Dutch names accepted): date (`YYYY-MM-DD`, or day first as Dutch Excel
writes it: `1-12-2026`, `01-12-2026 00:00`), start and end (`HH:MM`, school-local time, also with
the date in front: `01-12-2026 08:30`), room, and optionally group, teacher, subject, id, cancelled. Several rooms,
groups or teachers in one cell are separated by `;` or `,`. The delimiter is `,`, `;` or a tab,
chosen from the header line.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, time, tzinfo

from .common import (MAX_GROUP, MAX_OCCURRENCES, MAX_ROOM, MAX_TEACHER, ParsedLesson,
                     ParsedTimetable, TimetableError, check_source_id, check_times, clean_names,
                     clean_subject, local_to_utc, parse_day, plural, split_names, stable_hash,
                     unique_lessons)

SOURCE = "csv"
_COLUMNS = {
    "date": "date", "datum": "date", "day": "date",
    "start": "start", "begin": "start", "starttijd": "start", "start_time": "start",
    "begintijd": "start",
    "end": "end", "eind": "end", "einde": "end", "eindtijd": "end", "end_time": "end",
    "room": "room", "rooms": "room", "lokaal": "room", "lokalen": "room", "location": "room",
    "group": "group", "groups": "group", "klas": "group", "klassen": "group", "groep": "group",
    "class": "group",
    "teacher": "teacher", "teachers": "teacher", "docent": "teacher", "docenten": "teacher",
    "subject": "subject", "vak": "subject",
    "id": "id", "cancelled": "cancelled", "canceled": "cancelled", "vervallen": "cancelled",
    "uitval": "cancelled",
}
_REQUIRED = ("date", "start", "end", "room")
# A cell holding a date and a time, as Excel writes date-time cells ("01-12-2026 08:30").
_DATE_AND_TIME = re.compile(r"^(\S+)[ T]+(\d{1,2}[:.]\d{2}(?::\d{2})?)$")
_TIME = re.compile(r"^(\d{1,2})[:.](\d{2})(?::(\d{2}))?$")
_TRUE = {"1", "true", "yes", "y", "ja", "j", "x", "cancelled", "vervallen"}
_FALSE = {"", "0", "false", "no", "n", "nee"}
# A longer cell is not a timetable value (the csv module's own limit is 128 KiB).
MAX_CELL = 4096


def parse_csv(text: str, zone: tzinfo) -> ParsedTimetable:
    """Lessons from CSV text (already decoded)."""
    # Only \r and \n end a row (str.splitlines would also split at \u2028, \x0c, ...).
    header_number, header_line = 0, ""
    for header_number, header_line in enumerate(io.StringIO(text, newline=""), start=1):
        if header_line.strip():
            break
    if not header_line.strip():
        raise TimetableError("the CSV file is empty (a header line is required)")
    if len(header_line) > MAX_CELL * 4:
        raise TimetableError(f"line {header_number}: the header line is too long for a CSV header")
    delimiter = max(",;\t", key=header_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    columns: dict[str, int] = {}
    ignored: list[str] = []
    lessons: list[ParsedLesson] = []
    width = 0
    try:
        for row in reader:
            number = reader.line_num
            if not columns:
                if not any(cell.strip() for cell in row):
                    continue
                columns, ignored = _header(row, number)
                width = len(row)
                continue
            if not any(cell.strip() for cell in row):
                continue
            place = f"line {number}"
            if len(row) > width and any(cell.strip() for cell in row[width:]):
                raise TimetableError(f"{place}: {len(row)} fields, but the header names {width}")
            if len(lessons) >= MAX_OCCURRENCES:
                raise TimetableError(f"{place}: more than {MAX_OCCURRENCES} lessons in one file")
            lessons.append(_lesson(row, columns, place, zone))
    except csv.Error as err:
        raise TimetableError(f"line {reader.line_num}: not valid CSV: {err}") from None
    if not columns:
        raise TimetableError("the CSV file is empty (a header line is required)")
    if not lessons:
        raise TimetableError("the CSV file has a header but no lessons")
    lessons, notes = unique_lessons(lessons, conflicts_are_errors=True)
    if ignored:
        notes.insert(0, f"ignored {plural(len(ignored), 'column')}: {', '.join(ignored)}")
    return ParsedTimetable(SOURCE, lessons, None, notes)  # a CSV file declares no range


def _header(row: list[str], number: int) -> tuple[dict[str, int], list[str]]:
    columns: dict[str, int] = {}
    ignored: list[str] = []
    for index, cell in enumerate(row):
        name = cell.strip().lower().replace(" ", "_")
        key = _COLUMNS.get(name)
        if key is None:
            if name:
                ignored.append(cell.strip()[:40])
            continue
        if key in columns:
            raise TimetableError(f"line {number}: the header names the {key} column twice")
        columns[key] = index
    missing = [key for key in _REQUIRED if key not in columns]
    if missing:
        raise TimetableError(f"line {number}: the header lacks the column(s) {', '.join(missing)} "
                             f"(required: {', '.join(_REQUIRED)})")
    return columns, ignored


def _cell(row: list[str], columns: dict[str, int], key: str, place: str) -> str:
    index = columns.get(key)
    if index is None or index >= len(row):
        return ""
    value = row[index].strip()
    if len(value) > MAX_CELL:
        raise TimetableError(f"{place}: the {key} field is too long ({len(value)} characters)")
    return value


def _lesson(row: list[str], columns: dict[str, int], place: str, zone: tzinfo) -> ParsedLesson:
    raw_date = _cell(row, columns, "date", place)
    with_time = _DATE_AND_TIME.match(raw_date)
    day = _day(with_time[1] if with_time else raw_date, "date", raw_date, place)
    start_local = _time(_on_day(_cell(row, columns, "start", place), day, "start", place),
                        "start", place)
    start = local_to_utc(day, start_local, zone)
    end = local_to_utc(day, _time(_on_day(_cell(row, columns, "end", place), day, "end", place),
                                  "end", place), zone)
    check_times(start, end, place)
    rooms = clean_names(split_names(_cell(row, columns, "room", place)), "room", MAX_ROOM, place)
    groups = clean_names(split_names(_cell(row, columns, "group", place)), "group", MAX_GROUP,
                         place)
    teachers = clean_names(split_names(_cell(row, columns, "teacher", place)), "teacher",
                           MAX_TEACHER, place)
    subject = clean_subject(_cell(row, columns, "subject", place), place)
    flag = _cell(row, columns, "cancelled", place).lower()
    if flag not in _TRUE and flag not in _FALSE:
        raise TimetableError(f"{place}: cancelled {flag[:20]!r} is not yes/no, true/false or 1/0")
    row_id = _cell(row, columns, "id", place)
    if row_id:
        source_id = "id:" + row_id
    else:
        # Date, start, rooms and groups identify a lesson; a new teacher or subject is an update.
        source_id = "h:" + stable_hash(day.isoformat(), start_local.isoformat(),
                                       ",".join(sorted(r.casefold() for r in rooms)),
                                       ",".join(sorted(g.casefold() for g in groups)))
    return ParsedLesson(check_source_id(source_id, place), start, end, rooms, groups, teachers,
                        subject, flag in _TRUE, place)


def _day(text: str, key: str, shown: str, place: str) -> date:
    try:
        return parse_day(text)
    except ValueError as err:
        reason = str(err).split(" is ", 1)[-1]
        raise TimetableError(f"{place}: {key} {shown[:40]!r} is {reason}") from None


def _on_day(value: str, day: date, key: str, place: str) -> str:
    """The time of a start/end cell that may carry the date in front; that date must be `day`."""
    match = _DATE_AND_TIME.match(value)
    if not match:
        return value
    if _day(match[1], key, value, place) != day:
        raise TimetableError(f"{place}: {key} {value[:40]!r} is on another day than the date "
                             f"{day.isoformat()}")
    return match[2]


def _time(value: str, key: str, place: str) -> time:
    match = _TIME.match(value)
    if not match:
        raise TimetableError(f"{place}: {key} {value[:40]!r} is not a time HH:MM")
    hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise TimetableError(f"{place}: {key} {value} is not a valid time")
    return time(hours, minutes, seconds)
