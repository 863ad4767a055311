"""Timetable sources: each owns the lessons it brought and replaces them only inside its window.

`apply_to_source` is the one writer both a file import and (later) a scheduled sync use: it takes a
source and the lessons parsed from it, works out the window the source speaks for, and makes that
source's lessons in the window match (server/timetable/apply.py). Other sources' lessons are never
read or written, so two iCal feeds of one school no longer remove each other's lessons.

The window, first rule that applies:
1. the window the caller asks for (`--from/--to`, or the range a sync requested);
2. the range the file itself declares (an iCalendar import's expansion window, the
   `startDate`/`endDate` of a WebUntis request);
3. the whole weeks (Monday 00:00 to Monday 00:00, school time) that the file's lessons fall in.
A lesson deleted from the file is then removed even when it was the first or last one.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import UNSOURCED_LESSONS, School, TimetableSource, utcnow
from .apply import apply_timetable, describe_window
from .common import ImportReport, ParsedTimetable, TimetableError, local_to_utc, plural

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")


def check_source_name(name: str) -> str:
    """A source name as stored (`lessons.source`): 1-32 of a-z, 0-9, `.`, `_`, `-`."""
    cleaned = name.strip().lower()
    if not _NAME.match(cleaned):
        raise TimetableError(f"source name {name[:40]!r} must be 1-32 characters of a-z, 0-9, "
                             f"'.', '_' or '-', starting with a letter or digit")
    if cleaned in UNSOURCED_LESSONS:
        raise TimetableError(f"source name {cleaned!r} is reserved for lessons made by lesfocus "
                             f"itself")
    return cleaned


def file_source(session: Session, school: School, name: str, fmt: str | None
                ) -> TimetableSource:
    """The school's file source `name`, created when new; refuses a source of another kind."""
    name = check_source_name(name)
    source = session.scalar(select(TimetableSource).where(
        TimetableSource.school_id == school.id, TimetableSource.name == name))
    if source is None:
        source = TimetableSource(school_id=school.id, name=name, kind="file", format=fmt,
                                 options={}, days_back=7, days_ahead=56, created_at=utcnow())
        session.add(source)
        session.flush()
    elif source.kind != "file":
        raise TimetableError(f"source {name!r} is a {source.kind} source, synced from its "
                             f"address; import files into a file source (another --source)")
    return source


def day_window(first: date, last: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """School-local days first..last (both included) as a UTC window."""
    if last < first:
        raise TimetableError(f"the window ends ({last.isoformat()}) before it starts "
                             f"({first.isoformat()})")
    return local_to_utc(first, time(), zone), local_to_utc(last + timedelta(days=1), time(), zone)


def weeks_of(parsed: ParsedTimetable, zone: tzinfo) -> tuple[datetime, datetime] | None:
    """The whole school-local weeks (Monday to Monday) holding the parsed lessons' starts."""
    if not parsed.lessons:
        return None
    first = min(lesson.start for lesson in parsed.lessons).astimezone(zone).date()
    last = max(lesson.start for lesson in parsed.lessons).astimezone(zone).date()
    monday = first - timedelta(days=first.weekday())
    next_monday = last + timedelta(days=7 - last.weekday())
    return local_to_utc(monday, time(), zone), local_to_utc(next_monday, time(), zone)


def window_for(parsed: ParsedTimetable, zone: tzinfo,
               requested: tuple[datetime, datetime] | None) -> tuple[datetime, datetime] | None:
    """The window an import replaces (module docstring); None when nothing can be said."""
    if requested is not None:
        return requested[0].astimezone(timezone.utc), requested[1].astimezone(timezone.utc)
    if parsed.window is not None:
        return parsed.window
    return weeks_of(parsed, zone)


def apply_to_source(session: Session, school: School, source: TimetableSource,
                    parsed: ParsedTimetable, zone: tzinfo, *,
                    requested: tuple[datetime, datetime] | None = None,
                    now: datetime | None = None) -> ImportReport:
    """Make `source`'s lessons inside its window match `parsed`, in the caller's session.

    Lessons outside the window are not imported (a note counts them). A file with lessons of
    which none falls inside the window is refused: replacing the window with nothing would remove
    every lesson of the source there, which is never what a wrong date range meant.
    """
    from .. import changes
    window = window_for(parsed, zone, requested)
    notes = list(parsed.notes)
    lessons = parsed.lessons
    outside = parsed.outside
    if window is not None:
        inside = [lesson for lesson in lessons if window[0] <= lesson.start < window[1]]
        outside += len(lessons) - len(inside)
        lessons = inside
    if outside and not lessons:
        raise TimetableError(f"all {plural(outside, 'event')} of the file lie outside the window "
                             f"{describe_window(window)}; nothing was imported or removed (for a "
                             f"file, give --from/--to to import another range)")
    if outside:
        notes.append(f"left out {plural(outside, 'event')} outside the window "
                     f"{describe_window(window)}")
    scoped = ParsedTimetable(parsed.source, lessons, window, notes)
    # The one hook for bulk writes: without it the change feed would put them down to every
    # school and every room; with it, the commit wakes the school's gateways, and their policies
    # read again only the lessons of the rooms the import touched.
    with changes.bulk_writes_for(session, school.id, lesson_rooms_declared=True):
        report = apply_timetable(session, school, scoped, source_name=source.name)
        changes.declare_lesson_rooms(session, school.id, report.rooms_touched)
    report.window = window
    report.outside = outside
    at = now or utcnow()
    source.format = parsed.source
    source.last_attempt_at = source.last_success_at = at
    source.last_error = None
    source.last_report = {"counts": report.counts(), "notes": report.notes[:50],
                          "window": describe_window(window)}
    return report


def secret_context(source: TimetableSource) -> str:
    """The sealing context of a source's secret: it opens only for this source and field."""
    field = "token" if source.kind == "zermelo" else "password"
    return f"timetable-source:{source.id}:{field}"


def store_secret(source: TimetableSource, secret: str) -> None:
    """Keep `secret` (a Zermelo token, a WebUntis password) sealed on the (flushed) source."""
    from ..sealed import seal
    source.credentials = seal(secret, secret_context(source)).encode("ascii")


def read_secret(source: TimetableSource) -> str | None:
    """The source's secret in the clear, for one sync; None when it has none."""
    from ..sealed import SealedError, unseal
    if source.credentials is None:
        return None
    try:
        return unseal(bytes(source.credentials).decode("ascii"), secret_context(source))
    except (SealedError, UnicodeDecodeError) as err:
        raise TimetableError(f"the stored secret of source {source.name!r} cannot be opened "
                             f"({err}); store it again with `lesfocus timetable source secret`") from None


def read_secret_text(text: str, option: str) -> str:
    """A secret as read from a file or stdin: one line, trailing newline dropped, not empty."""
    secret = text.strip("\r\n")
    if not secret.strip():
        raise TimetableError(f"{option}: the secret is empty")
    if "\n" in secret or "\r" in secret:
        raise TimetableError(f"{option}: the secret must be one line")
    if len(secret) > 1000:
        raise TimetableError(f"{option}: the secret is longer than 1000 characters")
    return secret


def failing_since(source: TimetableSource) -> datetime | None:
    """When the source's current run of failures began (None: its last attempt worked)."""
    if not source.last_error:
        return None
    return source.last_success_at or source.created_at


def find_source(session: Session, school: School, name: str) -> TimetableSource | None:
    """The school's source called `name`, or None."""
    return session.scalar(select(TimetableSource).where(
        TimetableSource.school_id == school.id, TimetableSource.name == name.strip().lower()))


def shown_address(source: TimetableSource) -> str | None:
    """The address as the CLI, dashboard and audit log may show it: a file's name, or a URL's
    scheme and host only (feed links carry their token in the path or query)."""
    if source.address is None or source.kind == "file":
        return source.address
    scheme, _, rest = source.address.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/..."


__all__ = ["apply_to_source", "check_source_name", "day_window", "failing_since", "file_source",
           "find_source", "read_secret", "read_secret_text", "secret_context", "shown_address",
           "store_secret", "weeks_of", "window_for"]
