"""iCalendar feeds (RFC 5545): VEVENTs with RRULE/RDATE/EXDATE, RECURRENCE-ID overrides, TZID.

Parsed with `icalendar` and expanded with `recurring-ical-events` over a window (by default from a
week ago to eight weeks ahead). Known behaviour of those libraries that this module works around:
cancelled overrides are still returned by the expansion (we read STATUS ourselves), all-day events
come back as dates (ignored and counted), floating times stay naive (taken as school time), and
UTC-anchored series follow X-WR-TIMEZONE (recurring-ical-events applies `x_wr_timezone`).

Who and where, per event (the first that gives a value wins):
rooms    DESCRIPTION line `Lokaal:`/`Room:`, ATTENDEE;CUTYPE=ROOM CN, LOCATION (split on , and ;)
groups   DESCRIPTION line `Klas:`/`Groep:`/`Group:`, ATTENDEE;CUTYPE=GROUP CN, SUMMARY part 2
teachers DESCRIPTION line `Docent:`/`Teacher:`, ATTENDEE;ROLE=CHAIR CN, SUMMARY part 3
subject  DESCRIPTION line `Vak:`/`Subject:`, SUMMARY part 1
where SUMMARY parts are separated by " - " (`netl - h4a - vdb`), a trailing "(...)" remark dropped.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any

import icalendar
import recurring_ical_events

from .common import (MAX_GROUP, MAX_OCCURRENCES, MAX_ROOM, MAX_TEACHER, ParsedLesson,
                     ParsedTimetable, TimetableError, check_source_id, clean_names, clean_subject,
                     plural, split_names, unique_lessons)

SOURCE = "ical"
# Default expansion window around "now": recent history for the dashboard, the coming weeks for
# the policy. A feed's lessons outside it are not imported (and not removed) on this run.
WINDOW_PAST = timedelta(days=7)
WINDOW_FUTURE = timedelta(weeks=8)
# One series producing more than this inside the window is not a lesson (a school year of a
# daily lesson is ~200); refusing it bounds hostile RRULEs such as BYHOUR/BYMINUTE lists.
MAX_PER_EVENT = 20_000
# Total rule iterations from DTSTART to the end of the window over all series: bounds the work
# dateutil does before reaching the window (many daily series starting in the year 1900...).
MAX_RULE_STEPS = 1_000_000
# RFC 5545 folds lines at 75 octets; a megabyte on one line is not a timetable.
MAX_LINE = 1024 * 1024
# dateutil searches up to the year 9999 for a rule whose BY-parts never match (BYMONTH=2;
# BYMONTHDAY=30), a few seconds per series; the whole expansion stops after this long.
MAX_EXPAND_SECONDS = 30.0
# Events that the expansion library refuses are left out one UID at a time, at most this many.
MAX_BLAMED = 50
_STEP = {"DAILY": timedelta(days=1), "WEEKLY": timedelta(weeks=1),
         "MONTHLY": timedelta(days=28), "YEARLY": timedelta(days=365)}

# Properties whose breakage makes an event unusable (others, such as a broken DTSTAMP, are noted).
_ESSENTIAL = {"UID", "DTSTART", "DTEND", "DURATION", "RRULE", "RDATE", "EXDATE", "RECURRENCE-ID",
              "STATUS"}
_TIME_PROPS = ("DTSTART", "DTEND", "RECURRENCE-ID", "EXDATE", "RDATE")
_DESCRIPTION_KEYS = {
    "klas": "groups", "klassen": "groups", "groep": "groups", "groepen": "groups",
    "group": "groups", "groups": "groups", "class": "groups", "classes": "groups",
    "docent": "teachers", "docenten": "teachers", "teacher": "teachers", "teachers": "teachers",
    "leraar": "teachers",
    "lokaal": "rooms", "lokalen": "rooms", "room": "rooms", "rooms": "rooms",
    "vak": "subject", "subject": "subject",
}
_DESCRIPTION_LINE = re.compile(r"^\s*([A-Za-z]+)\s*:\s*(.*?)\s*$")
# RFC 5545 section 3.1: a content line begins with a name (IANA or X-) followed by ';' or ':'.
_PROPERTY_LINE = re.compile(r"^[A-Za-z0-9-]+[;:]")
_SUMMARY_SPLIT = re.compile(r"\s+-\s+")
_TRAILING_REMARK = re.compile(r"\s*\([^()]*\)\s*$")


def default_window(now: datetime) -> tuple[datetime, datetime]:
    """The expansion window used when the caller gives none."""
    return now - WINDOW_PAST, now + WINDOW_FUTURE


def parse_ical(text: str, zone: tzinfo, *, window: tuple[datetime, datetime] | None = None,
               now: datetime | None = None) -> ParsedTimetable:
    """Parse and expand a feed into lesson occurrences inside the window."""
    if window is None:
        window = default_window(now or datetime.now(timezone.utc))
    window_start, window_end = (w.astimezone(timezone.utc) for w in window)
    head = text.lstrip()[:15].upper()
    if not head.startswith("BEGIN:VCALENDAR"):
        raise TimetableError("line 1: not an iCalendar file (it must begin with BEGIN:VCALENDAR)")
    uid_lines, event_lines, bad_lines = _index_lines(text)
    try:
        calendars = icalendar.Calendar.from_ical(text, multiple=True)
    except (ValueError, KeyError, IndexError, TypeError, RecursionError) as err:
        raise TimetableError(f"not a valid iCalendar file: {_short(err)}") from None
    except AttributeError as err:  # icalendar 7.3 on a VTIMEZONE with two TZID lines
        raise TimetableError(f"not a valid iCalendar file (a VTIMEZONE with a repeated "
                             f"property?): {_short(err)}") from None
    notes: list[str] = []
    calendar = _merge(calendars, notes)
    skips = _Skips()
    all_day = 0
    all_day_uids: set[str] = set()
    all_day_overrides: list[tuple[str, Any]] = []
    broken_other = 0
    steps = 0
    events = list(calendar.walk("VEVENT"))
    if not events:
        raise TimetableError("the calendar holds no events (no VEVENT)")
    for number, event in enumerate(events):
        try:
            _check_singletons(event, ("UID",), _place("", uid_lines, event_lines, number))
            uid = str(event.get("UID", "")).strip()
            place = _place(uid, uid_lines, event_lines, number)
            if not uid:
                raise TimetableError(f"{place}: the event has no UID")
            for name, reason in getattr(event, "errors", ()):
                if name and name.upper() in _ESSENTIAL:
                    raise TimetableError(f"{place}: {name} is broken: {_short(reason)}")
                broken_other += 1  # also lines with no property name at all (bad_lines)
            _check_singletons(event, _SINGLE, place)
            if "DTSTART" not in event:
                raise TimetableError(f"{place}: the event has no DTSTART")
            for name in ("DTSTART", "RECURRENCE-ID"):
                # A value such as "T080000" parses as a time of day (or a PERIOD): no instant.
                if name in event and not isinstance(getattr(event[name], "dt", None), date):
                    raise TimetableError(f"{place}: {name} is not a date or date-time")
            _localize_floating(event, zone, notes, place)
            if not isinstance(event["DTSTART"].dt, datetime):
                if "RECURRENCE-ID" not in event:
                    all_day += 1
                    all_day_uids.add(uid)
                    skips.drop(event)
                else:
                    # An all-day override of a timed series stays: it replaces that instance,
                    # which is then no lesson (it must not come back at its old hour).
                    all_day_overrides.append((uid, event))
                continue
            steps += _check_event(event, window_start, window_end, place)
        except TimetableError as err:
            skips.skip(event, str(err))
            continue
        if steps > MAX_RULE_STEPS:
            raise TimetableError(f"{place}: the recurrence rules reach too far back (more than "
                                 f"{MAX_RULE_STEPS} repetitions before the window ends)")
    for uid, override in all_day_overrides:
        if uid in all_day_uids:  # an override of an all-day series is all-day too
            skips.drop(override)
    skips.apply(calendar)
    if all_day:
        # The library would return them as dates; a day-long block is not a lesson.
        notes.append(f"ignored {plural(all_day, 'all-day event')}")
    for number, line in bad_lines[:5]:
        notes.append(f"line {number}: {line[:40]!r} is not an iCalendar property line; ignored")
    if len(bad_lines) > 5:
        notes.append(f"ignored {len(bad_lines)} lines in all that are not property lines")
    broken_other -= min(broken_other, len(bad_lines))
    if broken_other:
        notes.append(f"ignored {plural(broken_other, 'broken property', 'broken properties')} "
                     f"that lessons do not need")

    lessons, outside = _expand(calendar, zone, window_start, window_end, uid_lines, event_lines,
                               skips)
    lessons, repeated = unique_lessons(lessons, conflicts_are_errors=False)
    notes.extend(repeated)
    notes.extend(skips.notes())
    if not lessons and skips.count and not outside:
        raise TimetableError(f"no event of the feed can be a lesson: {skips.first}"
                             + (f" (and {skips.count - 1} more)" if skips.count > 1 else ""))
    return ParsedTimetable(SOURCE, lessons, (window_start, window_end), notes, outside=outside)


class _Skips:
    """Events that cannot be lessons: left out with a note naming them, the rest imports."""

    SHOWN = 20

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.count = 0
        self._drop: set[int] = set()
        # Events imported with a part left out (a LOCATION that is no room), once per event.
        self.remarks: list[str] = []
        self.remarked = 0
        self._remarked: set[int] = set()
        self.extra: list[str] = []

    @property
    def first(self) -> str:
        return self.messages[0] if self.messages else ""

    def skip(self, component: Any, message: str) -> None:
        """Leave `component` out and say why."""
        if id(component) in self._drop:
            return
        self.drop(component)
        self.count += 1
        if len(self.messages) < self.SHOWN:
            self.messages.append(message)

    def drop(self, component: Any) -> None:
        """Leave `component` out without a note of its own (counted elsewhere)."""
        self._drop.add(id(component))

    def note(self, component: Any, message: str) -> None:
        """Say once that `component` was imported without something."""
        if id(component) in self._remarked:
            return
        self._remarked.add(id(component))
        self.remarked += 1
        if len(self.remarks) < self.SHOWN:
            self.remarks.append(message)

    def skipped(self, component: Any) -> bool:
        return id(component) in self._drop

    def apply(self, calendar: Any) -> None:
        """Take the left-out events out of the calendar before it is expanded."""
        if self._drop:
            calendar.subcomponents = [c for c in calendar.subcomponents
                                      if id(c) not in self._drop]

    def notes(self) -> list[str]:
        shown = [f"skipped {message}" for message in self.messages]
        if self.count > len(self.messages):
            shown.append(f"skipped {plural(self.count, 'event')} in all")
        shown += self.remarks
        if self.remarked > len(self.remarks):
            shown.append(f"{plural(self.remarked, 'event')} in all imported without a room")
        return shown + self.extra


# Properties an event has at most once (RFC 5545 section 3.6.1); two of them are two answers.
_SINGLE = ("DTSTART", "DTEND", "DURATION", "RECURRENCE-ID", "STATUS")


def _check_singletons(event: Any, names: tuple[str, ...], place: str) -> None:
    for name in names:
        value = event.get(name)
        if isinstance(value, list):
            raise TimetableError(f"{place}: the event has {len(value)} {name} lines (at most one "
                                 f"is allowed)")


def _merge(calendars: list[Any], notes: list[str]) -> Any:
    """One calendar from a file that holds one or more VCALENDARs (feeds put one after another)."""
    if not calendars or not all(isinstance(c, icalendar.Calendar) for c in calendars):
        raise TimetableError("not a valid iCalendar file: the outer component is not VCALENDAR")
    if len(calendars) == 1:
        return calendars[0]
    zones = {str(c["X-WR-TIMEZONE"]).strip() for c in calendars if "X-WR-TIMEZONE" in c}
    if len(zones) > 1:
        raise TimetableError(f"the file joins calendars with different X-WR-TIMEZONE values "
                             f"({', '.join(sorted(zones))[:120]}); import them one zone at a time")
    merged = icalendar.Calendar()
    if zones:
        merged.add("X-WR-TIMEZONE", zones.pop())
    seen_zones: set[str] = set()
    for calendar in calendars:
        for component in calendar.subcomponents:
            if component.name == "VTIMEZONE":
                tzid = str(component.get("TZID", ""))
                if tzid in seen_zones:
                    continue
                seen_zones.add(tzid)
            merged.add_component(component)
    notes.append(f"joined {len(calendars)} calendars found one after another in the file")
    return merged


def _is_timed(component: Any) -> bool:
    start = component.get("DTSTART")
    return start is not None and isinstance(start.dt, datetime)


def _index_lines(text: str) -> tuple[dict[str, int], list[int], list[tuple[int, str]]]:
    """Line numbers of each UID's first appearance and of each BEGIN:VEVENT, and the lines that
    are no property line at all (icalendar reports those without a name), for messages."""
    uid_lines: dict[str, int] = {}
    event_lines: list[int] = []
    bad_lines: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if len(line) > MAX_LINE:
            raise TimetableError(f"line {number}: longer than 1 MiB ({len(line)} characters)")
        upper = line[:12].upper()
        if upper.startswith("BEGIN:VEVENT"):
            event_lines.append(number)
        elif upper.startswith("UID"):
            _, _, value = line.partition(":")
            uid_lines.setdefault(value.strip(), number)
        elif line and line[0] not in " \t" and not _PROPERTY_LINE.match(line):
            bad_lines.append((number, line))
    return uid_lines, event_lines, bad_lines


def _place(uid: str, uid_lines: dict[str, int], event_lines: list[int], number: int) -> str:
    if uid:
        line = uid_lines.get(uid)
        shown = uid if len(uid) <= 80 else uid[:77] + "..."
        return f"event UID {shown}" + (f" (line {line})" if line else "")
    if number < len(event_lines):
        return f"event at line {event_lines[number]}"
    return f"event {number + 1}"


def _short(err: object) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _localize_floating(event: Any, zone: tzinfo, notes: list[str], place: str) -> None:
    """Give floating times (and times with a TZID nobody defines) the school's timezone."""
    for name in _TIME_PROPS:
        prop = event.get(name)
        if prop is None:
            continue
        values = prop if isinstance(prop, list) else [prop]
        for value in values:
            for item in (value.dts if hasattr(value, "dts") else [value]):
                dt = item.dt
                if isinstance(dt, tuple):  # RDATE period: (start, end or duration)
                    start, end = dt
                    if isinstance(start, datetime) and start.tzinfo is None:
                        end = end.replace(tzinfo=zone) if isinstance(end, datetime) else end
                        item.dt = (start.replace(tzinfo=zone), end)
                    continue
                if isinstance(dt, datetime) and dt.tzinfo is None:
                    tzid = item.params.get("TZID")
                    if tzid and len(notes) < 50:
                        notes.append(f"{place}: unknown TZID {str(tzid)[:40]!r}, "
                                     f"taken as school time")
                    item.dt = dt.replace(tzinfo=zone)


def _check_event(event: Any, window_start: datetime, window_end: datetime, place: str) -> int:
    """Refuse impossible times and unbounded rules; cap open rules at the window's end.

    Returns an estimate of the rule steps dateutil takes to reach the end of the window.
    """
    start: datetime = event["DTSTART"].dt
    if "DTEND" in event:
        end = event["DTEND"].dt
        if not isinstance(end, datetime):
            raise TimetableError(f"{place}: DTEND is a date while DTSTART is a date-time")
        if end <= start:
            raise TimetableError(f"{place}: DTEND ({end.isoformat()}) is not after DTSTART "
                                 f"({start.isoformat()})")
    elif "DURATION" in event:
        duration = event["DURATION"].dt
        if not isinstance(duration, timedelta) or duration <= timedelta(0):
            raise TimetableError(f"{place}: DURATION must be positive")
    else:
        raise TimetableError(f"{place}: the event has neither DTEND nor DURATION")
    if start.year < 1900 or start.year > 2100:
        raise TimetableError(f"{place}: DTSTART {start.date().isoformat()} is outside 1900-2100")
    rules = event.get("RRULE")
    if rules is None:
        return 0
    steps = 0
    for rule in rules if isinstance(rules, list) else [rules]:
        steps += _check_rule(rule, start, window_start, window_end, place)
    return steps


def _check_rule(rule: Any, start: datetime, window_start: datetime, window_end: datetime,
                place: str) -> int:
    freq = (rule.get("FREQ") or [""])[0]
    if freq in ("SECONDLY", "MINUTELY", "HOURLY"):
        raise TimetableError(f"{place}: RRULE FREQ={freq} does not describe lessons")
    if freq not in _STEP:
        raise TimetableError(f"{place}: RRULE has no valid FREQ")
    try:
        interval = int((rule.get("INTERVAL") or [1])[0])
        count = int(rule["COUNT"][0]) if "COUNT" in rule else None
    except (TypeError, ValueError):
        raise TimetableError(f"{place}: RRULE INTERVAL or COUNT is not a number") from None
    if interval < 1:
        # dateutil never leaves a rule with INTERVAL=0 (RFC 5545: a positive integer).
        raise TimetableError(f"{place}: RRULE INTERVAL must be a positive number, not {interval}")
    until = (rule.get("UNTIL") or [None])[0]
    if until is not None and not isinstance(until, date):
        raise TimetableError(f"{place}: RRULE UNTIL is not a date or date-time")
    if until is not None and not isinstance(until, datetime):
        until = datetime.combine(until, datetime.min.time(), tzinfo=timezone.utc) \
            + timedelta(days=1)
    elif until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=timezone.utc)
    if count is None and (until is None or until > window_end):
        # Nothing after the window is expanded anyway; an UNTIL there keeps dateutil from
        # searching to the year 9999 for a rule whose BY-parts never match.
        rule["UNTIL"] = [window_end.astimezone(timezone.utc)]
        until = window_end
    last = min(window_end, until) if until is not None else window_end
    first = max(start, window_start)
    per_step = 1
    for part in ("BYHOUR", "BYMINUTE", "BYSECOND"):
        if part in rule:
            per_step *= max(1, len(rule[part]))
    # At most one occurrence per day for each time of day the BY-parts allow.
    bound = max(0, (last - first).days + 1) * per_step
    if count is not None:
        bound = min(bound, count)
    if bound > MAX_PER_EVENT:
        raise TimetableError(f"{place}: the RRULE could repeat the event {bound} times, more than "
                             f"the {MAX_PER_EVENT} a lesson series may have")
    return max(0, int((last - start) / (_STEP[freq] * interval)))


def _expand(calendar: Any, zone: tzinfo, window_start: datetime, window_end: datetime,
            uid_lines: dict[str, int], event_lines: list[int], skips: _Skips
            ) -> tuple[list[ParsedLesson], int]:
    """The occurrences inside the window, and the number of series with none there."""
    query = None
    for _ in range(MAX_BLAMED):
        try:
            query = recurring_ical_events.of(calendar)
            break
        except Exception as err:  # the library raises many kinds; find the event to blame
            blamed = _blame(calendar, err, uid_lines, event_lines)
            if blamed is None:
                raise TimetableError(f"cannot expand the calendar: {_short(err)}") from None
            for component, message in blamed:
                skips.skip(component, message)
            skips.apply(calendar)
    if query is None:
        raise TimetableError(f"more than {MAX_BLAMED} events cannot be expanded; is this a "
                             f"timetable?")
    lessons: list[ParsedLesson] = []
    outside = 0
    all_day_instances = 0
    details: dict[int, tuple[Any, ...] | str] = {}
    deadline = time.monotonic() + MAX_EXPAND_SECONDS
    for series in query.series:
        place = _place(str(series.uid), uid_lines, event_lines, -1)
        if time.monotonic() > deadline:
            raise TimetableError(f"the feed takes more than {MAX_EXPAND_SECONDS:.0f} s to expand "
                                 f"(stopped at {place}); are its RRULEs real lesson series?")
        produced = 0
        try:
            occurrences = list(series.between(window_start, window_end))
        except Exception as err:  # noqa: BLE001 - same reason as above
            skips.count += 1
            if len(skips.messages) < skips.SHOWN:
                skips.messages.append(f"{place}: cannot expand the recurrence: {_short(err)}")
            continue
        for occurrence in occurrences:
            start, end = occurrence.start, occurrence.end
            if not isinstance(start, datetime) or not isinstance(end, datetime):
                all_day_instances += 1  # an all-day override of a timed series: not a lesson
                continue
            # The occurrence's own component: the series' master or its RECURRENCE-ID override.
            # A private attribute: as_component() would copy the event for every occurrence.
            component = occurrence._adapter._component  # noqa: SLF001
            info = details.get(id(component))
            if info is None:
                try:
                    info = _describe(component, zone, uid_lines, event_lines)
                except TimetableError as err:
                    info = str(err)
                details[id(component)] = info
            if isinstance(info, str):
                if not skips.skipped(component):
                    skips.skip(component, info)
                continue
            uid, recurring, instant, shift, rooms, groups, teachers, subject, cancelled, \
                place, room_note = info
            if room_note is not None:
                skips.note(component, room_note)
            if start.tzinfo is None:
                start, end = start.replace(tzinfo=zone), end.replace(tzinfo=zone)
            start = start.astimezone(timezone.utc)
            end = end.astimezone(timezone.utc)
            if end <= start:
                continue  # a zero-length instance (an override that ends as it starts)
            if not recurring:
                source_id = uid
            elif instant is not None and shift is not None and start - shift != instant:
                # A RANGE=THISANDFUTURE override moves every later instance by the same shift:
                # each keeps the id of its own original start (RFC 5545 section 3.2.13).
                source_id = f"{uid}/{start - shift:%Y%m%dT%H%M%SZ}"
            elif instant is not None:  # an override: keyed by the instance it replaces
                source_id = f"{uid}/{instant:%Y%m%dT%H%M%SZ}"
            else:
                source_id = f"{uid}/{start:%Y%m%dT%H%M%SZ}"
            lessons.append(ParsedLesson(check_source_id(source_id, place), start, end, rooms,
                                        groups, teachers, subject, cancelled, place))
            produced += 1
        if not occurrences:
            outside += 1
        if produced > MAX_PER_EVENT:
            raise TimetableError(f"{place}: more than {MAX_PER_EVENT} occurrences in the window")
        if len(lessons) > MAX_OCCURRENCES:
            raise TimetableError(f"the feed has more than {MAX_OCCURRENCES} lessons in the window")
    if all_day_instances:
        skips.extra.append(f"left out {plural(all_day_instances, 'instance')} of lesson series "
                           f"moved to an all-day event")
    return lessons, outside


def _instant(component: Any, zone: tzinfo) -> tuple[datetime | None, timedelta | None]:
    """An override's RECURRENCE-ID in UTC (the original start of the instance it replaces), and
    for RANGE=THISANDFUTURE the shift it gives the instances after it."""
    recurrence_id = component.get("RECURRENCE-ID")
    if recurrence_id is None:
        return None, None
    value = recurrence_id.dt
    if not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    value = value.astimezone(timezone.utc)
    shift = None
    if str(recurrence_id.params.get("RANGE", "")).upper() == "THISANDFUTURE":
        start = component["DTSTART"].dt
        if isinstance(start, datetime):
            start = start.replace(tzinfo=zone) if start.tzinfo is None else start
            shift = start.astimezone(timezone.utc) - value
    return value, shift


def _describe(component: Any, zone: tzinfo, uid_lines: dict[str, int], event_lines: list[int]
              ) -> tuple[Any, ...]:
    """What an event says about the lesson: uid, recurring?, RECURRENCE-ID instant, rooms,
    groups, teachers, subject, cancelled, place."""
    uid = str(component.get("UID", "")).strip()
    place = _place(uid, uid_lines, event_lines, -1)
    recurring = any(name in component for name in ("RRULE", "RDATE", "RECURRENCE-ID"))
    found: dict[str, Any] = {}
    description = _text(component, "DESCRIPTION")
    for line in description.splitlines():
        match = _DESCRIPTION_LINE.match(line)
        if match and match.group(1).casefold() in _DESCRIPTION_KEYS:
            key = _DESCRIPTION_KEYS[match.group(1).casefold()]
            found.setdefault(key, match.group(2))
    attendees = component.get("ATTENDEE")
    by_kind: dict[str, list[str]] = {"rooms": [], "groups": [], "teachers": []}
    if not isinstance(attendees, list):
        attendees = [attendees] if attendees else []
    for attendee in attendees:
        name = str(attendee.params.get("CN", "")).strip()
        cutype = str(attendee.params.get("CUTYPE", "")).upper()
        role = str(attendee.params.get("ROLE", "")).upper()
        if not name:
            continue
        # Students may be listed as attendees; only rooms, groups and the chair are read.
        if cutype == "ROOM":
            by_kind["rooms"].append(name)
        elif cutype == "GROUP":
            by_kind["groups"].append(name)
        elif role == "CHAIR":
            by_kind["teachers"].append(name)
    for kind, names in by_kind.items():
        if names and kind not in found:
            found[kind] = ",".join(names)
    summary = _TRAILING_REMARK.sub("", " ".join(_text(component, "SUMMARY").split()))
    parts = _SUMMARY_SPLIT.split(summary) if summary else []
    for kind, index in (("subject", 0), ("groups", 1), ("teachers", 2)):
        if kind not in found and len(parts) > index:
            found[kind] = parts[index]
    room_note = None
    if "rooms" in found:
        rooms = clean_names(split_names(found["rooms"]), "room", MAX_ROOM, place)
    else:
        rooms, room_note = _rooms_of_location(_text(component, "LOCATION"), place)
    groups = clean_names(split_names(found.get("groups", "")), "group", MAX_GROUP, place)
    teachers = clean_names(split_names(found.get("teachers", "")), "teacher", MAX_TEACHER, place)
    subject = clean_subject(found.get("subject", ""), place)
    cancelled = str(component.get("STATUS", "")).strip().upper() == "CANCELLED"
    instant, shift = _instant(component, zone)
    return (uid, recurring, instant, shift, rooms, groups, teachers, subject, cancelled, place,
            room_note)


def _text(component: Any, name: str) -> str:
    """A text property's value; of a repeated one (not allowed, but seen) the first."""
    value = component.get(name, "")
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value)


# A LOCATION that names a place outside the school rather than a room: a link (Teams, Zoom,
# Maps), or a postal address (a Dutch or German/Belgian postcode, or a street and number).
_LINK = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://|\bwww\.|^mailto:|^tel:)")
_POSTCODE = re.compile(r"\b(\d{4}\s?[A-Z]{2}|\d{5})\b")
_STREET = re.compile(r"(?i)\b[\w'-]*(straat|laan|weg|plein|gracht|kade|singel|dijk|hof|"
                     r"steeg|allee|strasse|straße|str\.|street|road|avenue|rue)\s+\d+[a-z]?\b")


def _rooms_of_location(value: str, place: str) -> tuple[tuple[str, ...], str | None]:
    """Rooms named by LOCATION; none, with a note, when it is a link, an address or too long."""
    value = " ".join(value.split())
    if not value:
        return (), None
    shown = value if len(value) <= 60 else value[:57] + "..."
    if _LINK.search(value):
        return (), f"{place}: LOCATION {shown!r} is a link, not a room; no room"
    if _POSTCODE.search(value) or _STREET.search(value):
        return (), f"{place}: LOCATION {shown!r} is an address, not a room; no room"
    names = split_names(value)
    if any(len(name) > MAX_ROOM for name in names):
        return (), (f"{place}: LOCATION {shown!r} is longer than a room code ({MAX_ROOM} "
                    f"characters); no room")
    return clean_names(names, "room", MAX_ROOM, place), None


def _blame(calendar: Any, err: Exception, uid_lines: dict[str, int], event_lines: list[int]
           ) -> list[tuple[Any, str]] | None:
    """The components of the first UID that fails on its own, with the message; None if none."""
    by_uid: dict[str, list[Any]] = {}
    for component in calendar.walk("VEVENT"):
        by_uid.setdefault(str(component.get("UID", "")).strip(), []).append(component)
    for uid, components in by_uid.items():
        single = icalendar.Calendar()
        for component in components:
            single.add_component(component)
        try:
            recurring_ical_events.of(single)
        except Exception as own:  # noqa: BLE001
            place = _place(uid, uid_lines, event_lines, -1)
            return [(component, f"{place}: {_short(own)}") for component in components]
    return None


def looks_like_ical(head: bytes) -> bool:
    """True when the file begins like an iCalendar file."""
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:15].upper() == b"BEGIN:VCALENDAR"


__all__ = ["SOURCE", "WINDOW_PAST", "WINDOW_FUTURE", "default_window", "parse_ical",
           "looks_like_ical"]
