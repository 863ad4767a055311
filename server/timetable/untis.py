"""WebUntis JSON-RPC `getTimetable` results.

Accepted shapes: a list of periods; one JSON-RPC response (`{"result": [...]}`) or a list of them;
or a capture like the samples' `webuntis-jsonrpc.json` with `getTimetable` (one or a list of
`{"request", "response"}`) next to `getRooms`, `getKlassen`, `getTeachers`, `getSubjects`, whose
names resolve elements that carry only an `id`. `date` is `YYYYMMDD` and `startTime`/`endTime`
are `HHMM` integers in school-local time; `code: "cancelled"` marks a cancelled period.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from .common import (MAX_GROUP, MAX_OCCURRENCES, MAX_ROOM, MAX_TEACHER, ParsedLesson,
                     ParsedTimetable, TimetableError, check_source_id, check_times, clean_names,
                     clean_subject, local_to_utc, plural, stable_hash, unique_lessons, window_of)

SOURCE = "untis"
# Element lists of a period and the lookup call that names their ids.
_ELEMENTS = {"ro": "getRooms", "kl": "getKlassen", "te": "getTeachers", "su": "getSubjects"}
# lstype values that are not lessons: office hour, standby, break supervision.
_NOT_LESSONS = {"oh", "sb", "bs"}


def looks_like_untis(document: Any) -> bool:
    """True when the parsed JSON has one of the WebUntis shapes this module reads."""
    if isinstance(document, dict):
        return "getTimetable" in document or ("result" in document and "jsonrpc" in document) \
            or ("error" in document and "jsonrpc" in document)
    if isinstance(document, list) and document and isinstance(document[0], dict):
        first = document[0]
        return ("startTime" in first and "date" in first) or "jsonrpc" in first
    return False


def parse_untis(document: Any, zone: tzinfo) -> ParsedTimetable:
    """Lessons from a parsed WebUntis document."""
    periods, names, requests = _collect(document)
    declared = _declared_range(requests, zone)
    if len(periods) > MAX_OCCURRENCES:
        raise TimetableError(f"the file holds more than {MAX_OCCURRENCES} periods")
    lessons: list[ParsedLesson] = []
    skipped_types = 0
    unnamed: dict[str, set[str]] = {}
    for index, (period, label) in enumerate(periods):
        place = f"{label}record {index + 1}"
        if not isinstance(period, dict):
            raise TimetableError(f"{place}: a period must be a JSON object")
        if isinstance(period.get("id"), (int, str)) and not isinstance(period.get("id"), bool):
            place += f" (id {str(period['id'])[:40]})"
        if period.get("lstype") in _NOT_LESSONS:
            skipped_types += 1
            continue
        lessons.append(_lesson(period, place, names, zone, unnamed))
    if lessons and unnamed.get("ro") and not any(lesson.rooms for lesson in lessons):
        # Lessons without rooms block nothing: importing them would look like success.
        raise TimetableError(f"the periods name their rooms by id only (ids "
                             f"{', '.join(sorted(unnamed['ro'])[:10])}) and the file has no "
                             f"getRooms answer to name them; save getRooms with getTimetable")
    lessons, notes = unique_lessons(lessons, conflicts_are_errors=False)
    if skipped_types:
        notes.append(f"ignored {plural(skipped_types, 'period')} that are not lessons "
                     f"(office hours, standby, break supervision)")
    for key, ids in sorted(unnamed.items()):
        notes.append(f"left out {plural(len(ids), 'element')} of '{key}' without a name "
                     f"(ids {', '.join(sorted(ids)[:10])}); add {_ELEMENTS[key]} to the file")
    window = declared
    if declared is not None and lessons:
        first, last = window_of(lessons)  # type: ignore[misc]
        window = (min(first, declared[0]), max(last, declared[1]))
    return ParsedTimetable(SOURCE, lessons, window, notes)


def _collect(document: Any) -> tuple[list[tuple[Any, str]], dict[str, dict[str, str]], list[Any]]:
    """Periods (with a prefix for messages), id->name tables and the getTimetable requests."""
    names: dict[str, dict[str, str]] = {key: {} for key in _ELEMENTS}
    requests: list[Any] = []
    if isinstance(document, list) and document and isinstance(document[0], dict) \
            and "jsonrpc" in document[0]:
        responses = [(r, f"response {i + 1}, ") for i, r in enumerate(document)]
    elif isinstance(document, dict) and "getTimetable" in document:
        calls = document["getTimetable"]
        calls = calls if isinstance(calls, list) else [calls]
        responses = []
        for i, call in enumerate(calls):
            if not isinstance(call, dict) or "response" not in call:
                raise TimetableError(f"getTimetable call {i + 1}: expected "
                                     f'{{"request": ..., "response": ...}}')
            responses.append((call["response"], f"getTimetable call {i + 1}, "
                              if len(calls) > 1 else ""))
            requests.append(call.get("request"))
        for key, method in _ELEMENTS.items():
            call = document.get(method)
            if call is None:
                continue
            result = call.get("response", {}).get("result") if isinstance(call, dict) else None
            if not isinstance(result, list):
                raise TimetableError(f"{method}: expected a response with a result list")
            for element in result:
                if isinstance(element, dict) and "id" in element and isinstance(
                        element.get("name"), str):
                    names[key][str(element["id"])] = element["name"]
    elif isinstance(document, dict):
        responses = [(document, "")]
    elif isinstance(document, list):
        return [(p, "") for p in document], names, []
    else:
        raise TimetableError("not a WebUntis getTimetable result")

    periods: list[tuple[Any, str]] = []
    for response, label in responses:
        if not isinstance(response, dict):
            raise TimetableError(f"{label or 'the file'}: a JSON-RPC response must be an object")
        if response.get("error") is not None:
            error = response["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise TimetableError(f"{label}the file holds a JSON-RPC error, not a timetable: "
                                 f"{str(message)[:160]}")
        result = response.get("result")
        if not isinstance(result, list):
            raise TimetableError(f"{label}the JSON-RPC response has no result list")
        periods.extend((period, label) for period in result)
    return periods, names, requests


def _declared_range(requests: list[Any], zone: tzinfo) -> tuple[datetime, datetime] | None:
    """The local days startDate..endDate the getTimetable requests asked for, in UTC.

    The dates are in `params` (the short form) or in `params.options` (the long form that
    python-webuntis and most clients send, with `element` and the fields wanted).
    """
    days: list[date] = []
    for request in requests:
        params = request.get("params") if isinstance(request, dict) else None
        if not isinstance(params, dict):
            return None
        if "startDate" not in params and isinstance(params.get("options"), dict):
            params = params["options"]
        try:
            days.append(_date(params.get("startDate"), "request startDate"))
            days.append(_date(params.get("endDate"), "request endDate"))
        except TimetableError:
            return None
    if not days:
        return None
    return (local_to_utc(min(days), time(), zone),
            local_to_utc(max(days) + timedelta(days=1), time(), zone))


def _date(value: Any, place: str) -> date:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TimetableError(f"{place}: date must be a YYYYMMDD number, found {value!r:.40}")
    try:
        return date(value // 10000, value // 100 % 100, value % 100)
    except ValueError:
        raise TimetableError(f"{place}: {value} is not a valid YYYYMMDD date") from None


def _time(value: Any, key: str, place: str) -> time:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TimetableError(f"{place}: {key} must be an HHMM number, found {value!r:.40}")
    hours, minutes = divmod(value, 100)
    if not (0 <= hours <= 23 and 0 <= minutes <= 59):
        raise TimetableError(f"{place}: {key} {value} is not a valid HHMM time")
    return time(hours, minutes)


def _lesson(period: dict[str, Any], place: str, names: dict[str, dict[str, str]], zone: tzinfo,
            unnamed: dict[str, set[str]]) -> ParsedLesson:
    if "date" not in period:
        raise TimetableError(f"{place}: date is missing")
    day = _date(period["date"], place)
    for key in ("startTime", "endTime"):
        if key not in period:
            raise TimetableError(f"{place}: {key} is missing")
    start = local_to_utc(day, _time(period["startTime"], "startTime", place), zone)
    end = local_to_utc(day, _time(period["endTime"], "endTime", place), zone)
    check_times(start, end, place)
    resolved: dict[str, tuple[str, ...]] = {}
    for key in _ELEMENTS:
        elements = period.get(key, [])
        if not isinstance(elements, list):
            raise TimetableError(f"{place}: {key} must be a list")
        found: list[str] = []
        for element in elements:
            if not isinstance(element, dict):
                raise TimetableError(f"{place}: {key} must hold objects")
            name = element.get("name")
            if not isinstance(name, str) or not name.strip():
                name = names[key].get(str(element.get("id")))
            if name is None:
                unnamed.setdefault(key, set()).add(str(element.get("id"))[:20])
                continue
            found.append(name)
        resolved[key] = tuple(found)
    rooms = clean_names(list(resolved["ro"]), "room", MAX_ROOM, place)
    groups = clean_names(list(resolved["kl"]), "class", MAX_GROUP, place)
    teachers = clean_names(list(resolved["te"]), "teacher", MAX_TEACHER, place)
    period_id = period.get("id")
    if isinstance(period_id, (int, str)) and not isinstance(period_id, bool) and period_id != "":
        source_id = str(period_id)
    else:
        source_id = "h:" + stable_hash(str(period["date"]), str(period["startTime"]),
                                       ",".join(sorted(rooms)), ",".join(sorted(groups)))
    return ParsedLesson(
        source_id=check_source_id(source_id, place), start=start, end=end, rooms=rooms,
        groups=groups, teachers=teachers, subject=clean_subject(", ".join(resolved["su"]), place),
        cancelled=period.get("code") == "cancelled", place=place)
