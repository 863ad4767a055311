"""Zermelo Portal API v3 `GET /api/v3/appointments` responses (`{"response": {"data": [...]}}`).

Zermelo returns appointment versions: only `valid: true` ones count, `cancelled: true` is a
cancelled lesson (lesuitval), `start`/`end` are UTC Unix seconds. The id of a lesson is its
`appointmentInstance` (stable across versions), else the version's `id`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .common import (MAX_GROUP, MAX_OCCURRENCES, MAX_ROOM, MAX_TEACHER, ParsedLesson,
                     ParsedTimetable, TimetableError, check_source_id, check_times, clean_names,
                     clean_subject, plural, unique_lessons)

SOURCE = "zermelo"


def appointments_of(document: Any) -> list[Any] | None:
    """The appointment list of a Zermelo response (or a bare list), or None if it is not one."""
    if isinstance(document, dict):
        response = document.get("response")
        if isinstance(response, dict) and isinstance(response.get("data"), list):
            return response["data"]
        return None
    if isinstance(document, list) and document and all(isinstance(r, dict) for r in document[:5]) \
            and any("appointmentInstance" in r or "locations" in r for r in document[:5]):
        return document
    return None


def parse_zermelo(document: Any) -> ParsedTimetable:
    """Lessons from a parsed Zermelo appointments document."""
    records = appointments_of(document)
    if records is None:
        raise TimetableError('not a Zermelo appointments response (expected {"response": '
                             '{"data": [...]}})')
    if len(records) > MAX_OCCURRENCES:
        raise TimetableError(f"the file holds more than {MAX_OCCURRENCES} appointments")
    lessons: list[ParsedLesson] = []
    invalid = 0
    for index, record in enumerate(records):
        place = f"record {index + 1}"
        if not isinstance(record, dict):
            raise TimetableError(f"{place}: an appointment must be a JSON object")
        if "id" in record and isinstance(record["id"], (int, str)):
            place += f" (id {str(record['id'])[:40]})"
        valid = record.get("valid", True)
        if not isinstance(valid, bool):
            raise TimetableError(f"{place}: valid must be true or false")
        if not valid:
            invalid += 1
            continue
        lessons.append(_lesson(record, place))
    lessons, notes = unique_lessons(lessons, conflicts_are_errors=False)
    if invalid:
        notes.insert(0, f"ignored {plural(invalid, 'superseded appointment version')} "
                        f"(valid: false)")
    if not records:
        notes.append("the file holds no appointments")
    return ParsedTimetable(SOURCE, lessons, None, notes)  # a saved response declares no range


def _lesson(record: dict[str, Any], place: str) -> ParsedLesson:
    start = _unix(record, "start", place)
    end = _unix(record, "end", place)
    check_times(start, end, place)
    instance = record.get("appointmentInstance")
    if isinstance(instance, bool) or not isinstance(instance, (int, str)) or instance == "":
        instance = record.get("id")
        if isinstance(instance, bool) or not isinstance(instance, (int, str)) or instance == "":
            raise TimetableError(f"{place}: the appointment has neither appointmentInstance nor id")
        source_id = f"id:{instance}"
    else:
        source_id = str(instance)
    cancelled = record.get("cancelled", False)
    if not isinstance(cancelled, bool):
        raise TimetableError(f"{place}: cancelled must be true or false")
    subjects = clean_names(record.get("subjects"), "subject", 100, place)
    return ParsedLesson(
        source_id=check_source_id(source_id, place), start=start, end=end,
        rooms=clean_names(record.get("locations"), "location", MAX_ROOM, place),
        groups=clean_names(record.get("groups"), "group", MAX_GROUP, place),
        teachers=clean_names(record.get("teachers"), "teacher", MAX_TEACHER, place),
        subject=clean_subject(", ".join(subjects), place), cancelled=cancelled, place=place)


def _unix(record: dict[str, Any], key: str, place: str) -> datetime:
    value = record.get(key)
    if value is None:
        raise TimetableError(f"{place}: {key} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TimetableError(f"{place}: {key} must be Unix seconds (an integer), "
                             f"found {value!r:.40}")
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise TimetableError(f"{place}: {key} {value} is not a usable time") from None
