"""Zermelo Portal API v3 `GET /api/v3/appointments` responses (`{"response": {"data": [...]}}`).

Zermelo returns appointment versions: only `valid: true` ones count, `cancelled: true` is a
cancelled lesson (lesuitval), `start`/`end` are UTC Unix seconds. The id of a lesson is its
`appointmentInstance` (stable across versions), else the version's `id`. Of two valid versions
the one with the latest `lastModified` counts; `hidden` appointments and types other than
`lesson`/`exam` are left out (counted in the notes); a file with several branches
(`branch`/`branchOfSchool`) keeps their rooms apart. The liveschedule answer
(`/api/v3/liveschedule`: `data` of weeks with `appointments`) is read too and speaks for its weeks.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

from .common import (MAX_GROUP, MAX_OCCURRENCES, MAX_ROOM, MAX_TEACHER, ParsedLesson,
                     ParsedTimetable, TimetableError, check_source_id, check_times, clean_names,
                     clean_subject, local_to_utc, plural, unique_lessons)

SOURCE = "zermelo"


# Appointment types that are lessons; the others (activity, talk, meeting, choice, interlude,
# conflict, other, unknown) do not put a class in a room. A `choice` slot lists every room a
# student may choose, so it would block all of them.
_LESSON_TYPES = {"lesson", "exam"}


def appointments_of(document: Any) -> list[Any] | None:
    """The appointment list of a Zermelo response (or a bare list), or None if it is not one.

    The liveschedule shape (`data` of `{"week", "appointments"}` objects) gives its appointments.
    """
    if isinstance(document, dict):
        response = document.get("response")
        if isinstance(response, dict) and isinstance(response.get("data"), list):
            data = response["data"]
            if _is_liveschedule(data):
                return [a for week in data for a in week["appointments"]]
            return data
        return None
    if isinstance(document, list) and document and all(isinstance(r, dict) for r in document[:5]) \
            and any("appointmentInstance" in r or "locations" in r for r in document[:5]):
        return document
    return None


def _is_liveschedule(data: list[Any]) -> bool:
    return bool(data) and all(isinstance(item, dict) and isinstance(item.get("appointments"), list)
                              for item in data)


def _liveschedule_weeks(document: Any, zone: tzinfo) -> tuple[datetime, datetime] | None:
    """The ISO weeks (`"week": "202645"`) a liveschedule answer speaks for, as a UTC window."""
    data = document["response"]["data"]
    mondays: list[date] = []
    for index, item in enumerate(data):
        week = str(item.get("week", ""))
        if not (len(week) == 6 and week.isdigit()):
            raise TimetableError(f"liveschedule week {index + 1}: week {week[:20]!r} is not "
                                 f"YYYYWW")
        try:
            mondays.append(date.fromisocalendar(int(week[:4]), int(week[4:]), 1))
        except ValueError:
            raise TimetableError(f"liveschedule week {index + 1}: {week} is not a week of the "
                                 f"year") from None
    return (local_to_utc(min(mondays), time(), zone),
            local_to_utc(max(mondays) + timedelta(days=7), time(), zone))


def parse_zermelo(document: Any, zone: tzinfo = timezone.utc) -> ParsedTimetable:
    """Lessons from a parsed Zermelo appointments document (or liveschedule answer)."""
    records = appointments_of(document)
    if records is None:
        raise TimetableError('not a Zermelo appointments response (expected {"response": '
                             '{"data": [...]}})')
    if len(records) > MAX_OCCURRENCES:
        raise TimetableError(f"the file holds more than {MAX_OCCURRENCES} appointments")
    declared = None
    if isinstance(document, dict) and _is_liveschedule(document["response"]["data"]):
        declared = _liveschedule_weeks(document, zone)
    branches = {_branch(record) for record in records if isinstance(record, dict)} - {None}
    versions: list[tuple[int, int, ParsedLesson]] = []
    invalid = hidden = 0
    other_types: dict[str, int] = {}
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
        if record.get("hidden") is True:
            hidden += 1
            continue
        kind = record.get("type")
        if isinstance(kind, str) and kind and kind not in _LESSON_TYPES:
            other_types[kind[:20]] = other_types.get(kind[:20], 0) + 1
            continue
        modified = record.get("lastModified")
        if isinstance(modified, bool) or not isinstance(modified, int):
            modified = -1  # unknown: the order of the file decides, as before
        branch = _branch(record) if len(branches) > 1 else None
        versions.append((modified, index, _lesson(record, place, branch)))
    # Of two valid versions of one appointment the newest by lastModified wins; the stable sort
    # keeps the file's order for equal (or missing) times, and unique_lessons keeps the last.
    versions.sort(key=lambda version: version[0])
    lessons, notes = unique_lessons([lesson for _, _, lesson in versions],
                                    conflicts_are_errors=False)
    if invalid:
        notes.insert(0, f"ignored {plural(invalid, 'superseded appointment version')} "
                        f"(valid: false)")
    if hidden:
        notes.append(f"ignored {plural(hidden, 'hidden appointment')} (hidden: true)")
    for kind, count in sorted(other_types.items()):
        notes.append(f"ignored {plural(count, 'appointment')} of type {kind!r} (not a lesson)")
    if len(branches) > 1:
        notes.append(f"the file holds {len(branches)} branches of the school "
                     f"({', '.join(sorted(branches))[:120]}): room codes carry their branch, "
                     f"as in 'branch/B204'")
    if not records:
        notes.append("the file holds no appointments")
    return ParsedTimetable(SOURCE, lessons, declared, notes)


def _branch(record: dict[str, Any]) -> str | None:
    """The branch (vestiging) of an appointment: its name, else its branchOfSchool id."""
    for key in ("branch", "branchOfSchool"):
        value = record.get(key)
        if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()[:20]
    return None


def _lesson(record: dict[str, Any], place: str, branch: str | None) -> ParsedLesson:
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
        rooms=tuple(f"{branch}/{room}" if branch else room for room in clean_names(
            record.get("locations"), "location", MAX_ROOM - (len(branch) + 1 if branch else 0),
            place)),
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
