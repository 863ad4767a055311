"""The importers' refusals and notes in the reader's language (issue 14, item 5).

The importers speak English (the CLI, the API and the logs read them, and import jobs store
them). For the dashboard, `translate` finds which of the msgids below a stored message is and
gives its translation with the same values; the places and counts inside ("line 12",
"3 events") are translated too. A message that matches none is shown as it is.

Every `TimetableError(...)` and note of `server/timetable/` has its msgid here, in the same words
with `%(name)s` where the f-string has a value; tests/server/dashboard/test_dutch.py builds
each of them from the source and fails when one is left untranslated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from ..fields import N_

MESSAGES = (
    # __init__.py
    N_("unknown format: %(file)s is not iCalendar, Zermelo or WebUntis JSON, or CSV with a "
       "header; give --format"),
    N_("the file is %(size)s bytes, more than the %(limit)s allowed"),
    N_("unknown format %(format)s (known: %(known)s)"),
    N_("a JSON file that is neither a Zermelo appointments response nor a WebUntis "
       "getTimetable result"),
    N_("cannot read %(file)s: %(reason)s"),
    N_("%(place)s: not valid JSON: %(reason)s (column %(column)s)"),
    N_("the JSON is nested too deeply to be a timetable"),
    # apply.py
    N_("created %(count)s %(kind)ss: %(names)s, ..."),
    N_("created %(count)s %(kind)ss: %(names)s"),
    N_("created %(count)s %(kind)s: %(names)s"),
    # common.py
    N_("%(place)s: the file contains a NUL character (binary data?)"),
    N_("%(place)s: %(what)s must be a list of names"),
    N_("%(place)s: subject must be text, found %(value)s"),
    N_("%(place)s: the lesson ends (%(end)s) at or before it starts (%(start)s)"),
    N_("%(place)s: the date %(date)s is outside 2000-2100"),
    N_("ignored %(count)s"),
    N_("%(count)s lessons in all replaced an earlier record with the same id"),
    N_("the school's timezone %(zone)s is unknown"),
    N_("%(place)s: the file is not UTF-8 text (byte %(byte)s)"),
    N_("%(place)s: %(what)s must be a list of names, found %(value)s"),
    N_("%(place)s: %(what)s name %(name)s... is longer than %(limit)s characters"),
    N_("%(value)s is not a date (YYYY-MM-DD or DD-MM-YYYY)"),
    N_("%(value)s is not a valid date"),
    N_("%(place)s: the same lesson as %(earlier)s (id %(id)s) with different details; give "
       "each row its own id or remove one"),
    N_("%(place)s replaces %(earlier)s (same id %(id)s)"),
    # csv.py
    N_("the CSV file is empty (a header line is required)"),
    N_("%(place)s: the header line is too long for a CSV header"),
    N_("the CSV file has a header but no lessons"),
    N_("%(place)s: the header lacks the column(s) %(missing)s (required: %(required)s)"),
    N_("%(place)s: the %(key)s field is too long (%(length)s characters)"),
    N_("%(place)s: cancelled %(value)s is not yes/no, true/false or 1/0"),
    N_("%(place)s: %(key)s %(value)s is on another day than the date %(date)s"),
    N_("%(place)s: %(key)s %(value)s is not a time HH:MM"),
    N_("%(place)s: %(key)s %(value)s is not a valid time"),
    N_("%(place)s: not valid CSV: %(reason)s"),
    N_("%(place)s: the header names the %(key)s column twice"),
    # csv.py _day: "is" and the reason of parse_day's ValueError (common.py)
    N_("%(place)s: %(key)s %(value)s is not a date (YYYY-MM-DD or DD-MM-YYYY)"),
    N_("%(place)s: %(key)s %(value)s is not a valid date"),
    N_("%(place)s: %(count)s fields, but the header names %(width)s"),
    N_("%(place)s: more than %(limit)s lessons in one file"),
    N_("ignored %(count)s: %(names)s"),
    # ical.py
    N_("joined %(count)s calendars found one after another in the file"),
    N_("line 1: not an iCalendar file (it must begin with BEGIN:VCALENDAR)"),
    N_("the calendar holds no events (no VEVENT)"),
    N_("%(place)s: %(value)s is not an iCalendar property line; ignored"),
    N_("ignored %(count)s lines in all that are not property lines"),
    N_("ignored %(count)s that lessons do not need"),
    N_("not a valid iCalendar file: the outer component is not VCALENDAR"),
    N_("the file joins calendars with different X-WR-TIMEZONE values (%(zones)s); import them "
       "one zone at a time"),
    N_("%(place)s: DTSTART %(date)s is outside 1900-2100"),
    N_("%(place)s: RRULE FREQ=%(freq)s does not describe lessons"),
    N_("%(place)s: RRULE has no valid FREQ"),
    N_("%(place)s: RRULE INTERVAL must be a positive number, not %(value)s"),
    N_("%(place)s: RRULE UNTIL is not a date or date-time"),
    N_("%(place)s: the RRULE could repeat the event %(count)s times, more than the %(limit)s a "
       "lesson series may have"),
    N_("more than %(limit)s events cannot be expanded; is this a timetable?"),
    N_("left out %(count)s of lesson series moved to an all-day event"),
    N_("not a valid iCalendar file: %(reason)s"),
    N_("not a valid iCalendar file (a VTIMEZONE with a repeated property?): %(reason)s"),
    N_("%(place)s: the recurrence rules reach too far back (more than %(limit)s repetitions "
       "before the window ends)"),
    N_("skipped %(count)s in all"),
    N_("skipped %(what)s"),
    N_("%(count)s in all imported without a room"),
    N_("%(place)s: the event has %(count)s %(name)s lines (at most one is allowed)"),
    N_("%(place)s: longer than 1 MiB (%(length)s characters)"),
    N_("%(place)s: DTEND is a date while DTSTART is a date-time"),
    N_("%(place)s: DTEND (%(end)s) is not after DTSTART (%(start)s)"),
    N_("%(place)s: the event has neither DTEND nor DURATION"),
    N_("%(place)s: RRULE INTERVAL or COUNT is not a number"),
    N_("the feed takes more than %(limit)s s to expand (stopped at %(place)s); are its RRULEs "
       "real lesson series?"),
    N_("%(place)s: more than %(limit)s occurrences in the window"),
    N_("the feed has more than %(limit)s lessons in the window"),
    N_("%(place)s: the event has no UID"),
    N_("%(place)s: the event has no DTSTART"),
    N_("%(place)s: DURATION must be positive"),
    N_("%(place)s: %(name)s is broken: %(reason)s"),
    N_("%(place)s: %(name)s is not a date or date-time"),
    N_("cannot expand the calendar: %(reason)s"),
    N_("%(place)s: cannot expand the recurrence: %(reason)s"),
    N_("%(place)s: unknown TZID %(zone)s, taken as school time"),
    # sources.py
    N_("source name %(name)s must be 1-32 characters of a-z, 0-9, '.', '_' or '-', starting "
       "with a letter or digit"),
    N_("source name %(name)s is reserved for lessons made by lesfocus itself"),
    N_("the window ends (%(end)s) before it starts (%(start)s)"),
    N_("all %(count)s of the file lie outside the window %(window)s; nothing was imported or "
       "removed (for a file, give --from/--to to import another range)"),
    N_("left out %(count)s outside the window %(window)s"),
    N_("source %(name)s is a %(kind)s source, synced from its address; import files into a "
       "file source (another --source)"),
    N_("the stored secret of source %(name)s cannot be opened (%(reason)s); store it again "
       "with `lesfocus timetable source secret`"),
    N_("%(option)s: the secret is empty"),
    N_("%(option)s: the secret must be one line"),
    N_("%(option)s: the secret is longer than 1000 characters"),
    # sync.py
    N_("the address %(url)s is not an http(s) URL"),
    N_("source %(name)s: syncing %(kind)s sources is not built yet; import their export with "
       "`lesfocus timetable import`"),
    N_("source %(name)s has no address"),
    N_("source %(name)s is a %(kind)s source: it is imported, not synced"),
    N_("source %(name)s has no stored %(what)s"),
    # http.py (the Zermelo and WebUntis clients)
    N_("%(what)s redirects more than %(count)s times"),
    N_("the answer of %(what)s is larger than the %(limit)s bytes allowed"),
    N_("%(what)s did not answer within %(seconds)s s"),
    N_("the TLS certificate of %(what)s is not valid: %(reason)s"),
    N_("cannot reach %(what)s: %(reason)s"),
    N_("the answer of %(what)s is broken: %(kind)s: %(detail)s"),
    # webuntis_client.py
    N_("%(what)s answered authenticate without a sessionId"),
    N_("%(what)s took too long: the sync stopped before %(step)s"),
    N_("%(what)s answered HTTP %(status)s to %(method)s"),
    N_("%(what)s answered %(method)s with something that is not a JSON-RPC response"),
    N_("%(what)s answered getRooms without a list of rooms"),
    N_("%(what)s lists no active room for this user; nothing was changed"),
    # zermelo_client.py
    N_("%(what)s did not accept the token (HTTP 401%(message)s): it is wrong, expired or "
       "revoked; make a new one in the portal and store it with `lesfocus timetable source "
       "secret NAME --token-file F`"),
    N_("%(what)s refused the token (HTTP 403%(message)s): its user may not read the school's "
       "appointments; give the user the rights docs/timetables.md lists, or a token with the "
       "Schedule scope"),
    N_("%(what)s answered HTTP %(status)s for %(week)s%(message)s"),
    N_("%(what)s answered %(week)s with something that is not its JSON envelope "
       "({\"response\": {\"data\": [...]}})"),
    N_("%(what)s answered %(week)s with status %(status)s%(message)s"),
    N_("%(what)s answered %(week)s without a data list"),
    N_("%(what)s sent %(count)s of the %(total)s appointments of %(week)s; nothing was changed"),
    N_("the feed answered HTTP %(code)s %(reason)s"),
    N_("cannot reach the feed: %(reason)s"),
    N_("the feed did not answer within %(seconds)s s"),
    N_("the feed's answer is broken: %(reason)s"),
    N_("the feed is larger than the %(limit)s bytes allowed"),
    N_("the feed refused access (HTTP %(code)s): check the link or its token"),
    N_("the feed redirects more than %(limit)s times"),
    N_("the feed's TLS certificate is not valid: %(reason)s"),
    # untis.py
    N_("the file holds more than %(limit)s periods"),
    N_("the periods name their rooms by id only (ids %(ids)s) and the file has no getRooms "
       "answer to name them; save getRooms with getTimetable"),
    N_("ignored %(count)s that are not lessons (office hours, standby, break supervision)"),
    N_("left out %(count)s of %(key)s without a name (ids %(ids)s); add %(call)s to the file"),
    N_("%(place)s: date must be a YYYYMMDD number, found %(value)s"),
    N_("%(place)s: %(key)s must be an HHMM number, found %(value)s"),
    N_("%(place)s: %(key)s %(value)s is not a valid HHMM time"),
    N_("%(place)s: date is missing"),
    N_("%(place)s: a period must be a JSON object"),
    N_("%(place)s: a JSON-RPC response must be an object"),
    N_("%(place)sthe file holds a JSON-RPC error, not a timetable: %(reason)s"),
    N_("%(place)sthe JSON-RPC response has no result list"),
    N_("%(place)s: %(value)s is not a valid YYYYMMDD date"),
    N_("%(place)s: %(key)s is missing"),
    N_("%(place)s: %(key)s must be a list"),
    N_("%(place)s: %(key)s must hold objects"),
    N_("getTimetable call %(number)s: expected {\"request\": ..., \"response\": ...}"),
    N_("%(place)s: expected a response with a result list"),
    N_("not a WebUntis getTimetable result"),
    # zermelo.py
    N_("not a Zermelo appointments response (expected {\"response\": {\"data\": [...]}})"),
    N_("the file holds more than %(limit)s appointments"),
    N_("ignored %(count)s (hidden: true)"),
    N_("ignored %(count)s (valid: false)"),
    N_("ignored %(count)s of type %(kind)s (not a lesson)"),
    N_("the file holds %(count)s branches of the school (%(names)s): room codes carry their "
       "branch, as in 'branch/B204'"),
    N_("the file holds no appointments"),
    N_("%(place)s: cancelled must be true or false"),
    N_("%(place)s: %(key)s must be Unix seconds (an integer), found %(value)s"),
    N_("liveschedule week %(number)s: week %(value)s is not YYYYWW"),
    N_("%(place)s: an appointment must be a JSON object"),
    N_("%(place)s: valid must be true or false"),
    N_("%(place)s: the appointment has neither appointmentInstance nor id"),
    N_("%(place)s: %(key)s %(value)s is not a usable time"),
    N_("liveschedule week %(number)s: %(value)s is not a week of the year"),
)

# The places messages start with, and the counted things inside them.
PLACES = (
    N_("line %(number)s"), N_("record %(number)s"), N_("event %(number)s"),
    N_("event at line %(number)s"), N_("event UID %(uid)s (line %(number)s)"),
    N_("event UID %(uid)s"), N_("%(label)srecord %(number)s"),
)
NOUNS = {
    "event": (N_("event"), N_("events")), "column": (N_("column"), N_("columns")),
    "all-day event": (N_("all-day event"), N_("all-day events")),
    "repeated lesson": (N_("repeated lesson"), N_("repeated lessons")),
    "broken property": (N_("broken property"), N_("broken properties")),
    "instance": (N_("instance"), N_("instances")), "period": (N_("period"), N_("periods")),
    "element": (N_("element"), N_("elements")),
    "superseded appointment version": (N_("superseded appointment version"),
                                       N_("superseded appointment versions")),
    "hidden appointment": (N_("hidden appointment"), N_("hidden appointments")),
    "appointment": (N_("appointment"), N_("appointments")),
}
_PLURAL = re.compile(r"(\d+) (.+)")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _pattern(msgid: str) -> re.Pattern[str]:
    pieces = _PLACEHOLDER.split(msgid)
    regex = ""
    seen: dict[str, int] = {}
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            regex += re.escape(piece)
        else:
            seen[piece] = seen.get(piece, 0) + 1
            regex += f"(?P<{piece}>.+?)" if seen[piece] == 1 else f"(?P={piece})"
    return re.compile(regex, re.DOTALL)


@lru_cache(maxsize=8)
def _patterns(messages: tuple[str, ...] | None = None) -> tuple[tuple[re.Pattern[str], str], ...]:
    # Most literal text first: "line 1: not an iCalendar file" before "%(place)s: ...".
    ordered = sorted(messages if messages is not None else MESSAGES + PLACES,
                     key=lambda m: -len(_PLACEHOLDER.sub("", m)))
    return tuple((_pattern(msgid), msgid) for msgid in ordered)


def _value(text: str, gettext: Callable[..., str], depth: int) -> str:
    counted = _PLURAL.fullmatch(text)
    if counted:
        number, noun = counted.groups()
        for singular, forms in NOUNS.items():
            if noun in (singular, forms[1], singular + "s"):
                return f"{number} {gettext(forms[0] if number == '1' else forms[1])}"
    return translate(text, gettext, depth + 1) if depth < 3 else text


def translate(text: str, gettext: Callable[..., str], depth: int = 0,
              messages: tuple[str, ...] | None = None) -> str:
    """`text` (an importer's message, or one of `messages`) in the language `gettext` speaks;
    as it is when unknown."""
    if not text:
        return text
    for pattern, msgid in _patterns(messages):
        match = pattern.fullmatch(text)
        if match:
            values = {key: _value(value, gettext, depth) for key, value in
                      match.groupdict().items()}
            return gettext(msgid, **values)
    return text
