"""Timetable import (SPEC §4 `lesfocus timetable import`): one parser per format, one writer.

A file is parsed and checked completely before anything is written; the writes then happen in the
caller's session, which commits (or rolls back on TimetableError). A file goes into a timetable
source of kind `file` (server/timetable/sources.py), which owns the lessons it brought. The change
feed (`server/changes.py`) wakes waiting agents after that commit; the writes are bulk
statements, so `apply_to_source` declares whose they are (`changes.bulk_writes_for`).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from ..extensions import db
from ..models import Person, School
from .apply import describe_window
from .common import MAX_FILE_BYTES, ImportReport, ParsedTimetable, TimetableError, decode_utf8, \
    school_zone
from .csv import parse_csv
from .sources import apply_to_source, file_source
from .ical import looks_like_ical, parse_ical
from .untis import looks_like_untis, parse_untis
from .zermelo import appointments_of, parse_zermelo

FORMATS = ("ical", "zermelo", "untis", "csv")
_SUFFIXES = {".ics": "ical", ".ical": "ical", ".ifb": "ical", ".icalendar": "ical",
             ".csv": "csv", ".tsv": "csv"}

__all__ = ["FORMATS", "ImportReport", "TimetableError", "detect_format", "import_timetable",
           "import_timetable_bytes", "parse_timetable"]


def import_timetable(school: School, path: Path, fmt: str | None, *, actor: Person | str,
                     window: tuple[datetime, datetime] | None = None,
                     now: datetime | None = None, source_name: str | None = None) -> ImportReport:
    """Import the timetable file at `path` into the caller's session (the caller commits)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TimetableError(f"the file is {size} bytes, more than the {MAX_FILE_BYTES} "
                                 f"allowed")
        data = path.read_bytes()
    except OSError as err:
        raise TimetableError(f"cannot read {path.name}: {err.strerror or err}") from None
    return import_timetable_bytes(school, data, path.name, fmt, actor=actor, window=window,
                                  now=now, source_name=source_name)


def import_timetable_bytes(school: School, data: bytes, filename: str, fmt: str | None, *,
                           actor: Person | str,
                           window: tuple[datetime, datetime] | None = None,
                           now: datetime | None = None,
                           source_name: str | None = None) -> ImportReport:
    """Import an uploaded timetable into a file source and record one audit event.

    `window` (from `--from/--to`) is the range the import replaces, and for iCalendar also the
    range expanded; without it the file's own range counts (server/timetable/sources.py).
    `source_name` defaults to the file's format, so files of one format replace each other.
    """
    from .. import audit
    parsed = parse_timetable(data, filename, fmt, school.timezone, window=window, now=now)
    source = file_source(db.session, school,
                         parsed.source if source_name is None else source_name, parsed.source)
    source.address = filename[:200]
    report = apply_to_source(db.session, school, source, parsed, school_zone(school.timezone),
                             requested=window, now=now)
    audit.record("timetable.import", school_id=school.id, actor=actor, object_type="timetable",
                 object_id=source.name, file=filename[:200], format=parsed.source,
                 source=source.name, window=describe_window(report.window), **report.counts())
    return report


def parse_timetable(data: bytes, filename: str, fmt: str | None, timezone_name: str, *,
                    window: tuple[datetime, datetime] | None = None,
                    now: datetime | None = None) -> ParsedTimetable:
    """Parse and check a whole file without touching the database."""
    if len(data) > MAX_FILE_BYTES:
        raise TimetableError(f"the file is {len(data)} bytes, more than the {MAX_FILE_BYTES} "
                             f"allowed")
    if fmt is not None and fmt not in FORMATS:
        raise TimetableError(f"unknown format {fmt!r:.40} (known: {', '.join(FORMATS)})")
    zone = school_zone(timezone_name)
    if fmt is None:
        fmt = detect_format(data, filename)
    text = decode_utf8(data)
    if fmt == "ical":
        return parse_ical(text, zone, window=window, now=now)
    if fmt == "csv":
        return parse_csv(text, zone)
    document = _load_json(text)
    if fmt == "zermelo":
        return parse_zermelo(document, zone)
    return parse_untis(document, zone)


def detect_format(data: bytes, filename: str) -> str:
    """Guess the format from the file's contents, then its name; TimetableError when unsure."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if looks_like_ical(head):
        return "ical"
    if head[:1] in (b"{", b"["):
        document = _load_json(decode_utf8(data))
        if appointments_of(document) is not None:
            return "zermelo"
        if looks_like_untis(document):
            return "untis"
        raise TimetableError("a JSON file that is neither a Zermelo appointments response nor a "
                             "WebUntis getTimetable result")
    by_name = _SUFFIXES.get(Path(filename).suffix.lower())
    if by_name is not None:
        return by_name
    first_line = head.split(b"\n", 1)[0].lower()
    if b"date" in first_line or b"datum" in first_line:
        return "csv"
    raise TimetableError(f"unknown format: {filename[:80]!r} is not iCalendar, Zermelo or WebUntis "
                         f"JSON, or CSV with a header; give --format")


def _load_json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TimetableError(f"line {err.lineno}: not valid JSON: {err.msg} (column {err.colno})") \
            from None
    except RecursionError:
        raise TimetableError("the JSON is nested too deeply to be a timetable") from None
